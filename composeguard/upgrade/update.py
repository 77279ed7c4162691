"""``composeguard update``: the nightly job. One project, or every project on the host."""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import click

from composeguard.errors import ExitCode, GuardError
from composeguard.report import Reporter

log = logging.getLogger("composeguard.update")

# Worst first: what `update --all` reports when projects end differently.
SEVERITY = [
    ExitCode.ROLLBACK_FAILED,
    ExitCode.ROLLED_BACK,
    ExitCode.ERROR,
    ExitCode.LOCKED,
    ExitCode.USAGE,
    ExitCode.OK,
]


@dataclass
class ProjectResult:
    project: str
    exit_code: int
    message: str = ""
    # The transaction this run made ("" when it made none: nothing to update, or refused) and
    # how it ended: committed, rolled-back, rollback-failed, aborted; "up-to-date"; "error".
    txn: str = ""
    outcome: str = ""
    # What the policy held back (policy.py): digests waiting for their min_age, and those
    # only told of (update: notify); "vetoed" when a before command said no.
    waiting: list[dict[str, Any]] = field(default_factory=list)
    available: list[dict[str, Any]] = field(default_factory=list)


def _journal_files(project: str) -> set[str]:
    """The project's journal files, read without creating its state folder."""
    from composeguard.state import project_dir

    if not project:
        return set()
    try:
        return {p.name for p in (project_dir(project, create=False) / "txns").glob("*.json")}
    except GuardError:
        return set()


def _with_transaction(r: ProjectResult, known: set[str]) -> ProjectResult:
    """Fill in the transaction this run added to the project's journals, if any."""
    from composeguard.state import project_dir
    from composeguard.upgrade.journal import Journal

    new = sorted(_journal_files(r.project) - known)
    if new:
        j = Journal.read(project_dir(r.project, create=False) / "txns" / new[-1])
        r.txn, r.outcome = j.id, j.outcome or "unfinished"
    else:
        r.outcome = "up-to-date" if r.exit_code == 0 else "error"
    return r


def worst(codes: list[int]) -> int:
    for c in SEVERITY:
        if c in codes:
            return int(c)
    return max(codes) if codes else 0


def update_one(
    global_args: list[str],
    services: list[str],
    allow_unprotected: bool,
    rep: Reporter,
    name: str = "",
    deployed: bool = False,
    trial: bool = False,
    now: bool = False,
) -> ProjectResult:
    from composeguard.upgrade.policy import Vetoed
    from composeguard.upgrade.preflight import ExecInstead, UpRequest, guarded_up

    req = UpRequest(
        global_args=global_args,
        up_args=["--detach", *services],
        services=list(services),
        pull=True,
        allow_unprotected=allow_unprotected,
        command="update",
        deployed=deployed,
        trial=trial,
        now=now,
    )
    known = _journal_files(name)
    try:
        r = ProjectResult(name, guarded_up(req, rep))
    except ExecInstead:  # pragma: no cover - update never hands over to a plain up
        r = ProjectResult(name, 0)
    except Vetoed as e:  # skipped tonight, nothing changed: not an error of the nightly job
        r = ProjectResult(name, 0, str(e), outcome="vetoed")
    except GuardError as e:
        r = ProjectResult(name, int(e.exit_code), str(e))
    if r.outcome != "vetoed":
        r = _with_transaction(r, known)
    r.waiting, r.available = req.told.get("waiting", []), req.told.get("available", [])
    return r


def update_command(
    global_args: list[str],
    services: list[str],
    all_projects: bool,
    verbose: bool,
    as_json: bool,
    allow_unprotected: bool,
    name_filter: str | None = None,
    trial: bool = False,
    now: bool = False,
) -> int:
    rep = Reporter(quiet=as_json, verbose=verbose)
    if not all_projects:
        r = update_one(global_args, services, allow_unprotected, rep, trial=trial, now=now)
        if r.message and not as_json:
            click.echo(f"composeguard: {r.message}", err=True)
        if as_json:
            click.echo(json.dumps([asdict(r)], indent=2))
        return r.exit_code
    from composeguard.compose.upargs import dry_run_options

    dry = dry_run_options(global_args)  # passed on to each project
    if services or len(dry) != len(global_args):
        raise GuardError(
            "update --all takes no services and no compose options but --dry-run", exit_code=ExitCode.USAGE
        )
    from composeguard.compose.started import host_projects

    results: list[ProjectResult] = []
    for sp in host_projects():
        name = sp.name
        if name_filter and not fnmatch.fnmatchcase(name, name_filter):
            continue
        if sp.problem:  # not knowable how it was started: say so, change nothing, go on
            r = ProjectResult(
                name, int(ExitCode.USAGE), f"not updated: {sp.problem}; nothing was changed", outcome="error"
            )
        else:
            r = update_one(
                [*dry, *sp.global_args], sp.services, allow_unprotected, rep, name, deployed=True, trial=trial
            )
        results.append(r)
        if r.message and not as_json:
            click.echo(f"composeguard: {name}: {r.message}", err=True)
    if as_json:
        doc: list[dict[str, Any]] = [asdict(r) for r in results]
        click.echo(json.dumps(doc, indent=2))
    return worst([r.exit_code for r in results])
