# `docker compose …` through composeguard, for bash and zsh: source it from ~/.bashrc or
# ~/.zshrc. Every other docker command (and `docker-compose`, see composeguard.sh) is left
# alone; completion of `docker compose` keeps working (it is bound to the name `docker`).
# Global docker options before `compose` (`docker --context x compose …`) are not guarded:
# they go to docker unchanged.
docker() {
    if [ "${1:-}" = compose ]; then
        shift
        command composeguard "$@"
    else
        command docker "$@"
    fi
}
