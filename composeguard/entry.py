"""The process entry point: decide in microseconds whether composeguard guards a command.

Everything composeguard does not guard is handed to ``docker compose`` by replacing this
process (``execvp``), so stdin/stdout/stderr, the TTY, signals and the exit code are compose's
own. Only the standard library's ``os`` and ``sys`` are imported on that path; click, yaml and
the rest of composeguard are loaded only for the guard's own commands. The split of the command
line and the exec itself are ``passthrough.py``, shared with ``cli/runner.py`` and ``cli/app.py``.
"""

from __future__ import annotations

import sys

from composeguard.passthrough import GUARDED_COMMANDS, exec_compose, split_global_options
from composeguard.pins.pinned import CREATES_CONTAINERS, host_has_pins


def wants_help(global_options: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in global_options)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    global_options, command, _rest = split_global_options(args)
    if command in GUARDED_COMMANDS or (command is None and (wants_help(global_options) or not args)):
        from composeguard.cli.runner import run

        run(args)
        return
    if command in CREATES_CONTAINERS and host_has_pins():
        from composeguard.cli.runner import run

        run(args)
        return
    exec_compose(args)
