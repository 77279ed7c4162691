"""How one of composeguard's own commands runs: logging, SIGTERM as Ctrl-C, and every way it
can end turned into one ``composeguard:`` line and an exit code from the README's table
(``--debug`` adds the traceback). ``entry.py`` calls :func:`run`; the commands are ``app.py``."""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
from typing import Any

import click

from composeguard.cli.app import main
from composeguard.errors import ExitCode, GuardError
from composeguard.passthrough import GUARDED_COMMANDS, exec_compose, split_global_options
from composeguard.pins.pinned import CREATES_CONTAINERS


def _setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    handler.setFormatter(logging.Formatter(
        # the milliseconds since composeguard started: where an upgrade's time goes
        "composeguard: %(relativeCreated)6.0fms %(levelname)s %(name)s: %(message)s"
    ))
    root = logging.getLogger("composeguard")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run(args: list[str]) -> None:
    """Run a guarded command; ``args`` are the raw arguments after ``composeguard``."""
    debug = "--debug" in args or os.environ.get("COMPOSEGUARD_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    _setup_logging(debug)
    global_options, command, rest = split_global_options(args)
    signal.signal(signal.SIGTERM, _on_sigterm)
    obj: dict[str, Any] = {"globals": global_options}
    try:
        if command == "up" and not {"-h", "--help"} & set(rest):
            # every guarded `up` starts by asking compose for the project: it answers while
            # the rest of composeguard is imported
            from composeguard.compose.project import start_config

            obj["config"] = start_config(global_options)
        from composeguard.upgrade.preflight import ExecInstead
    except GuardError as e:
        click.echo(f"composeguard: {e}", err=True)
        sys.exit(int(e.exit_code))

    try:
        if command in CREATES_CONTAINERS:
            from composeguard.pins.pinned import pinned_command

            raise ExecInstead(pinned_command(global_options, command, rest))
        argv = [command, *rest] if command in GUARDED_COMMANDS else ["--help"]
        code = main.main(argv, prog_name="composeguard", obj=obj, standalone_mode=False)
    except ExecInstead as e:
        exec_compose(e.args_)
        return
    except GuardError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"composeguard: {e}", err=True)
        sys.exit(int(e.exit_code))
    except click.ClickException as e:
        e.show()
        sys.exit(ExitCode.USAGE)
    except click.exceptions.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("composeguard: interrupted", err=True)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - one line for the user, the traceback with --debug
        if debug:
            raise
        click.echo(
            f"composeguard: internal error: {type(e).__name__}: {e} (run with --debug for details)",
            err=True,
        )
        sys.exit(ExitCode.ERROR)
    sys.exit(code if isinstance(code, int) else 0)
