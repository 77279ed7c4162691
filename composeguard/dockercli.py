"""What every module needs to know about the docker CLI: which binary, and which compose global
options take a value. A leaf (standard library only): the exec-fast entry point imports it too.
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


def docker_binary() -> str:
    return os.environ.get("COMPOSEGUARD_DOCKER", "docker")
