# `docker compose …` through composeguard, for fish: copy to ~/.config/fish/functions/docker.fish.
# Every other docker command is left alone; completion of docker is kept (--wraps).
function docker --wraps docker --description 'docker, with `docker compose` guarded by composeguard'
    if test (count $argv) -ge 1; and test "$argv[1]" = compose
        command composeguard $argv[2..-1]
    else
        command docker $argv
    end
end
