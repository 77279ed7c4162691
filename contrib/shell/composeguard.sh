# Source this from ~/.bashrc or ~/.zshrc.
# Everything but upgrades goes straight to `docker compose`; upgrades are guarded.
alias docker-compose=composeguard
# Shell completion for composeguard's own commands (click):
if [ -n "${BASH_VERSION:-}" ]; then
    eval "$(_COMPOSEGUARD_COMPLETE=bash_source composeguard)"
elif [ -n "${ZSH_VERSION:-}" ]; then
    eval "$(_COMPOSEGUARD_COMPLETE=zsh_source composeguard)"
fi
