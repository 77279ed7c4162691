"""The guard's own commands (click). Arguments in, exit codes out; the logic lives elsewhere.

``entry.py`` sends only guarded commands here; compose's global options (``-f``, ``-p`` …)
arrive in ``ctx.obj`` and are handed to compose unchanged.
"""

from __future__ import annotations

import logging
import os

import click

from composeguard import __version__
from composeguard.passthrough import exec_compose

log = logging.getLogger("composeguard")

HELP = """\
A drop-in wrapper for `docker compose` that snapshots the ZFS datasets or Btrfs
subvolumes behind your services before an upgrade, probes the new version, and
rolls data and images back when it fails.

Usage: composeguard [COMPOSE OPTIONS] COMMAND [ARGS]...

Every other compose command (ps, logs, exec, down, pull, config, ...) and every
compose option (-f, -p, --project-directory, --env-file, --profile, ...) passes
through to `docker compose` unchanged. Alias it: alias docker-compose=composeguard
"""


class Group(click.Group):
    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        formatter.write(HELP)
        self.format_commands(ctx, formatter)
        formatter.write_paragraph()
        formatter.write_text(
            "Exit codes: 0 ok or nothing to do, 2 usage/configuration (nothing changed), "
            "3 upgrade failed and was rolled back, 4 rollback failed (look at it), "
            "5 another run holds the project's lock, 1 other errors; doctor: 6 warnings, 7 errors. "
            "Settings: x-composeguard in the compose file, COMPOSEGUARD_* variables. "
            "--debug shows tracebacks."
        )


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.pass_context
def main(ctx: click.Context) -> None:
    ctx.ensure_object(dict)


def _globals(ctx: click.Context) -> list[str]:
    return list(ctx.obj.get("globals", []))


def _reporter(quiet: bool = False):
    from composeguard.report import Reporter

    return Reporter(quiet=quiet)


def _project_name(ctx: click.Context) -> str:
    """The project name without running compose when -p names it (so history and pins work
    even when the compose file is broken or gone)."""
    from composeguard.compose.invocation import Invocation

    name = Invocation.parse(_globals(ctx)).project_name or os.environ.get("COMPOSE_PROJECT_NAME")
    return name if name else _project(ctx).name


def _project(ctx: click.Context, services: list[str] | None = None):
    from composeguard.compose.project import resolve

    return resolve(_globals(ctx), services=services)


# The one --json flag of plan, history, pins and update.
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")


UP_HELP = """Guarded `docker compose up`: takes every `docker compose up` option.

If no service would run a different image than it runs now, this is exactly
`docker compose up`. Otherwise composeguard snapshots the data of the services
that change (and of what they depend on), starts the new images, probes them,
and rolls back on failure (exit 3).

Own option: --allow-unprotected (or COMPOSEGUARD_ALLOW_UNPROTECTED=1) upgrades
even when a data volume is not on ZFS or Btrfs.
"""


@main.command(
    help=UP_HELP,
    context_settings={
        "ignore_unknown_options": True,
        "allow_extra_args": True,
        "help_option_names": [],
    },
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def up(ctx: click.Context, args: tuple[str, ...]) -> None:
    if "-h" in args or "--help" in args:
        click.echo(UP_HELP)
        click.echo("The options of `docker compose up` follow.\n")
        exec_compose([*_globals(ctx), "up", "--help"])
    from composeguard.compose.upargs import parse_up_args
    from composeguard.upgrade.preflight import UpRequest, guarded_up

    user_args = [a for a in args if a not in ("--allow-unprotected", "--trial")]
    services, opts = parse_up_args(user_args)
    req = UpRequest(
        global_args=_globals(ctx),
        up_args=user_args,
        services=services,
        pull=opts.get("--pull") == "always",
        allow_unprotected="--allow-unprotected" in args
        or os.environ.get("COMPOSEGUARD_ALLOW_UNPROTECTED") == "1",
        no_deps=bool(opts.get("--no-deps")),
        trial="--trial" in args,
        config=ctx.obj.get("config"),
    )
    ctx.exit(guarded_up(req, _reporter()))


@main.command(
    help="For cron: pull, then a guarded up of what changed. Quiet when nothing "
    "changes; a digest that failed before is not tried again."
)
@click.argument("services", nargs=-1)
@click.option(
    "--all",
    "all_projects",
    is_flag=True,
    help="Every compose project on this host (docker compose ls), each under its own lock.",
)
@click.option(
    "--filter",
    "name_filter",
    metavar="GLOB",
    help="With --all: only projects whose name matches GLOB (e.g. 'media-*').",
)
@click.option("-v", "--verbose", is_flag=True, help="Say so when there is nothing to update.")
@json_option
@click.option("--allow-unprotected", is_flag=True, help="Upgrade even with unprotected volumes.")
@click.option(
    "--trial",
    is_flag=True,
    help="Try the new version on clones of the data first, beside the live one (refused when it cannot be).",
)
@click.option(
    "--now",
    is_flag=True,
    help="Install what the named SERVICES' policy holds back (min_age, update: notify).",
)
@click.pass_context
def update(
    ctx: click.Context,
    services: tuple[str, ...],
    all_projects: bool,
    name_filter: str | None,
    verbose: bool,
    as_json: bool,
    allow_unprotected: bool,
    trial: bool,
    now: bool,
) -> None:
    from composeguard.upgrade.update import update_command

    if now and (all_projects or not services):
        raise click.UsageError("update --now names the services to install now (and takes no --all)")
    code = update_command(
        _globals(ctx),
        list(services),
        all_projects,
        verbose,
        as_json,
        allow_unprotected,
        name_filter,
        trial,
        now=now,
    )
    ctx.exit(code)


@main.command(help="Show what `up`/`update` would do: changes, rollback unit, datasets. Changes nothing.")
@click.argument("services", nargs=-1)
@json_option
@click.pass_context
def plan(ctx: click.Context, services: tuple[str, ...], as_json: bool) -> None:
    from composeguard.cli.commands import plan_command

    plan_command(_project(ctx, list(services)), list(services), as_json)


def _state_report(name: str, help_text: str) -> None:
    """Register ``NAME [--json]``: a read-only report of the project's recorded state, printed
    by ``commands.NAME_command(project_name, as_json)``."""

    @main.command(name=name, help=help_text)
    @json_option
    @click.pass_context
    def report(ctx: click.Context, as_json: bool) -> None:
        from composeguard.cli import commands

        getattr(commands, f"{name}_command")(_project_name(ctx), as_json)


_state_report("history", "Past transactions: outcome, services, digests, snapshots, failed state.")


@main.command(help="Digests held back after failed upgrades, with reasons and dates.")
@json_option
@click.option(
    "--history",
    "with_history",
    is_flag=True,
    help="Also the pins released since (by unpin or a good digest).",
)
@click.pass_context
def pins(ctx: click.Context, as_json: bool, with_history: bool) -> None:
    from composeguard.cli.commands import pins_command

    pins_command(_project_name(ctx), as_json, with_history)


@main.command(help="Put back the data and images of the last (or the given) transaction.")
@click.argument("txn", required=False)
@click.pass_context
def rollback(ctx: click.Context, txn: str | None) -> None:
    from composeguard.cli.commands import rollback_command

    ctx.exit(rollback_command(_project(ctx), txn, _reporter()))


@main.command(help="Release the pin of SERVICE: the next up/update runs its compose file's image.")
@click.argument("service")
@click.pass_context
def unpin(ctx: click.Context, service: str) -> None:
    from composeguard.cli.commands import unpin_command

    unpin_command(_project_name(ctx), service)


@main.command(help="Finish a transaction that was interrupted (crash, kill, reboot).")
@click.option(
    "--all",
    "all_projects",
    is_flag=True,
    help="Every project with an interrupted transaction (the boot-time unit runs this).",
)
@click.pass_context
def recover(ctx: click.Context, all_projects: bool) -> None:
    from composeguard.cli import commands

    if all_projects:
        if _globals(ctx):
            raise click.UsageError("recover --all takes no compose options")
        ctx.exit(commands.recover_all_command(_reporter()))
    ctx.exit(commands.recover_command(_project(ctx), _reporter()))


@main.command(
    help="Check the project's layout and say what to fix: storage (protected, shared, record "
    "size), networks, GPUs, CPU pinning, composeguard's state. Changes nothing. Exit 0: nothing "
    "wrong; 6: warnings; 7: errors."
)
@click.argument("services", nargs=-1)
@json_option
@click.option("-v", "--verbose", is_flag=True, help="Show the checks that passed too.")
@click.pass_context
def doctor(ctx: click.Context, services: tuple[str, ...], as_json: bool, verbose: bool) -> None:
    from composeguard.doctor.command import doctor_command

    ctx.exit(doctor_command(_project(ctx, list(services)), list(services), as_json, verbose))


@main.command(
    help="Give each data folder of SERVICE a ZFS dataset or Btrfs subvolume of its own at the "
    "same path (ZFS: the record size its workload wants), moving the data in. Without --apply: "
    "show what it would do."
)
@click.argument("services", nargs=-1, required=True)
@click.option("--apply", "apply_", is_flag=True, help="Do it: stop, move, copy, verify, start.")
@click.option("--keep-old", is_flag=True, help="Keep the original folder beside the new dataset.")
@click.pass_context
def provision(ctx: click.Context, services: tuple[str, ...], apply_: bool, keep_old: bool) -> None:
    from composeguard.cli.commands import provision_command

    ctx.exit(provision_command(_project(ctx, list(services)), list(services), apply_, keep_old, _reporter()))


@main.command(help="Show the versions of composeguard and docker compose.")
def version() -> None:
    from composeguard import execute

    click.echo(f"composeguard {__version__}")
    proc = execute.run(execute.compose_command("version"), check=False)
    click.echo((proc.stdout or proc.stderr or "docker compose: not found").strip())
