"""The command line's two halves and the hand-over to compose: what the exec-fast entry point
(``entry.py``), the guarded commands' runner (``cli/runner.py``) and the click commands
(``cli/app.py``) share. Which commands composeguard guards, where compose's global options end
and the command begins, and replacing this process with ``docker compose``. A leaf: the
standard library and ``dockercli`` only, so the passthrough path stays cheap.
"""

from __future__ import annotations

import os
import sys

from composeguard.dockercli import GLOBAL_OPTIONS_WITH_VALUE, NoRealCompose, compose_argv

# The commands composeguard handles itself; every other command passes through.
GUARDED_COMMANDS = frozenset(
    {"up", "update", "plan", "rollback", "history", "pins", "unpin", "recover", "doctor", "provision"}
    | {"version"}
)


def split_global_options(args: list[str]) -> tuple[list[str], str | None, list[str]]:
    """Split ``args`` into (compose global options, command, command arguments).

    Mirrors compose's own parsing of the global flags closely enough to find the command:
    options with a value consume the next word unless written ``--opt=value`` or ``-fVALUE``.
    """
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            break
        if not a.startswith("-") or a == "-":
            return args[:i], a, args[i + 1 :]
        if a in GLOBAL_OPTIONS_WITH_VALUE:
            i += 2
            continue
        i += 1
    return args[: min(i, len(args))], None, args[min(i, len(args)) :]


def exec_compose(args: list[str]) -> None:
    """Replace this process with ``docker compose ARGS``; never returns."""
    try:
        argv = [*compose_argv(), *args]
    except NoRealCompose as e:
        if sys.stderr is not None:
            sys.stderr.write(f"composeguard: {e}\n")
        sys.exit(127)
    docker = argv[0]
    if os.environ.get("COMPOSEGUARD_DEBUG") and sys.stderr is not None:
        sys.stderr.write("composeguard: exec " + " ".join(argv) + "\n")
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:  # None when the fd was closed before we started (`>&-`)
            stream.flush()
    try:
        os.execvp(docker, argv)
    except OSError as e:
        if sys.stderr is not None:
            sys.stderr.write(f"composeguard: cannot run {docker}: {e.strerror}\n")
        sys.exit(127 if isinstance(e, FileNotFoundError) else 126)
