"""What every module needs to know about the docker CLI: which binary, how to run compose, and
which compose global options take a value. A leaf (standard library only): the exec-fast entry
point imports it too.
"""

from __future__ import annotations

import os

# Compose's global options that take a value (``-f X``, ``--file X`` or ``--file=X``).
GLOBAL_OPTIONS_WITH_VALUE = frozenset(
    {
        "-f",
        "--file",
        "-p",
        "--project-name",
        "--project-directory",
        "--env-file",
        "--profile",
        "--ansi",
        "--progress",
        "--parallel",
        "--workdir",
    }
)
SHORT_WITH_VALUE = ("-f", "-p")

# The line that marks contrib/docker-cli-plugin/docker-compose, composeguard's plugin shim.
SHIM_MARKER = b"composeguard-docker-cli-plugin-shim"
# Where the docker CLI looks for plugins after the config's cliPluginsExtraDirs and
# ``$DOCKER_CONFIG/cli-plugins`` (docker/cli, cli-plugins/manager, Linux).
SYSTEM_PLUGIN_DIRS = (
    "/usr/local/lib/docker/cli-plugins",
    "/usr/local/libexec/docker/cli-plugins",
    "/usr/lib/docker/cli-plugins",
    "/usr/libexec/docker/cli-plugins",
)
# Set by the docker CLI when it runs a plugin; a compose plugin run without it takes itself
# for the standalone ``docker-compose`` and reads ``compose ps`` as a command named compose.
PLUGIN_ENV = "DOCKER_CLI_PLUGIN_ORIGINAL_CLI_COMMAND"


class NoRealCompose(Exception):
    """The shim is what docker runs for ``compose``, and no other compose plugin exists."""


def docker_binary() -> str:
    return os.environ.get("COMPOSEGUARD_DOCKER", "docker")


def plugin_dirs() -> list[str]:
    """The folders the docker CLI searches for ``docker-compose``, in its order."""
    config = os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker")
    extra: list[str] = []
    try:
        with open(os.path.join(config, "config.json"), "rb") as f:
            raw = f.read()
        if b"cliPluginsExtraDirs" in raw:
            import json

            extra = [str(d) for d in json.loads(raw).get("cliPluginsExtraDirs") or []]
    except (OSError, ValueError, AttributeError):
        pass
    return [*extra, os.path.join(config, "cli-plugins"), *SYSTEM_PLUGIN_DIRS]


def is_shim(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return SHIM_MARKER in f.read(512)
    except OSError:
        return False


def compose_argv(direct: bool = False) -> list[str]:
    """How to run compose: ``docker compose``, unless the docker CLI would run composeguard's
    own plugin shim for it (which runs composeguard, which would run the shim...): then the
    real compose plugin further down docker's search path, run the way docker runs a plugin.

    ``direct``: the compose plugin itself (the one ``docker compose`` would run), run the way
    docker runs it, whenever it is found: for composeguard's own compose commands, where the
    docker CLI in front of the plugin only costs 50 to 100 ms per command (measured on the
    lab; a guarded upgrade runs four). The passthrough keeps ``docker compose``: the user's
    command is then exactly theirs, down to the docker CLI's signal handling."""
    docker = docker_binary()
    if "COMPOSEGUARD_DOCKER" in os.environ:  # a stand-in docker of a test: it is compose too
        return [docker, "compose"]
    found = [p for p in (os.path.join(d, "docker-compose") for d in plugin_dirs()) if os.path.isfile(p)]
    if not found or (not direct and not is_shim(found[0])):
        return [docker, "compose"]
    real = next((p for p in found if not is_shim(p)), None)
    if real is None:
        raise NoRealCompose(
            f"{found[0]} is composeguard's docker compose shim, and no other compose plugin is "
            f"installed in {', '.join(plugin_dirs())}"
        )
    if PLUGIN_ENV not in os.environ:
        from shutil import which

        os.environ[PLUGIN_ENV] = which(docker) or docker
    return [real, "compose"]
