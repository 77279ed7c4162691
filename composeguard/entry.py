"""The process entry point: decide in microseconds whether composeguard guards a command.

Everything composeguard does not guard is handed to ``docker compose`` by replacing this
process (``execvp``), so stdin/stdout/stderr, the TTY, signals and the exit code are compose's
own. Only the standard library's ``os`` and ``sys`` are imported on that path; click, yaml and
the rest of composeguard are loaded only for the guard's own commands.
"""

from __future__ import annotations

import os
import sys

from composeguard.dockercli import GLOBAL_OPTIONS_WITH_VALUE, NoRealCompose, compose_argv
from composeguard.pinned import CREATES_CONTAINERS, host_has_pins

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


def wants_help(global_options: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in global_options)


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


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    global_options, command, _rest = split_global_options(args)
    if command in GUARDED_COMMANDS or (command is None and (wants_help(global_options) or not args)):
        from composeguard.runner import run

        run(args)
        return
    if command in CREATES_CONTAINERS and host_has_pins():
        from composeguard.runner import run

        run(args)
        return
    exec_compose(args)
