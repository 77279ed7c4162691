from composeguard.entry import main

main()
