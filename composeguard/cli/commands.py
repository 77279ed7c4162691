"""The commands besides up/update: plan, history, pins, unpin, rollback, recover, provision."""

from __future__ import annotations

import json
import os

import click

from composeguard.compose.project import Project
from composeguard.errors import ConfigError, GuardError, RolledBack
from composeguard.lock import project_lock
from composeguard.pins.pinfile import PinFile
from composeguard.report import Reporter, short
from composeguard.upgrade.journal import COMMITTED, Journal


def plan_command(project: Project, services: list[str], as_json: bool) -> None:
    from composeguard.upgrade.plan_storage import map_storage
    from composeguard.upgrade.planner import Plan, detect_changes, record_running, registry_digests, scope_of

    pins = PinFile(project.name)
    scope = scope_of(project, services)
    running = record_running(project, scope)
    source = "registry"
    try:
        remote = registry_digests(project)
    except ConfigError as e:
        remote, source = None, f"local images ({e})"
    plan = Plan(project, scope, running, detect_changes(project, pins, running, remote))
    map_storage(plan)
    from composeguard.upgrade.trial import check_trial

    trial = check_trial(plan)
    from composeguard.upgrade.policy import describe, hold_back

    # what `update` would hold back (`up` by hand installs it all)
    held = hold_back(project, plan.changes, record=os.geteuid() == 0)
    if as_json:
        doc = plan.to_json()
        doc["trial"] = trial.to_json()
        doc["waiting"] = [w.to_json() for w in held.waiting]
        doc["available"] = sorted(held.available)  # update: notify
        doc["compared_with"] = source
        doc["not_running"] = [s for s in scope if s not in running]
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"project {project.name} (compared with {source})")
    if not plan.changes:
        click.echo("nothing to upgrade: every running service is on its newest image")
        return
    for c in plan.changes.values():
        said = describe(c.labels)
        click.echo(
            f"  change  {c.service}: {short(c.old_digest or c.old_image_id)} -> "
            f"{short(c.new_digest or c.new_image_id)} ({c.new_ref}{'; ' + said if said else ''})"
        )
    for w in held.waiting:
        click.echo(
            f"  waiting {w.service}: {short(w.digest)} first seen {w.first_seen}, installable by "
            f"`update` from {w.installable_from} (min_age)"
        )
    for svc in sorted(held.available):
        click.echo(f"  notify  {svc}: `update` tells of it and installs nothing (update: notify)")
    click.echo(f"  rollback unit: {', '.join(plan.unit)}")
    for svc, why in sorted(plan.neighbours.items()):
        click.echo(f"  stopped with it  {svc}: {why}; started again after the upgrade or its rollback")
    for d in plan.datasets():
        use = plan.usage.get(d.name)
        if use is None or use.restore == "whole":
            click.echo(f"  would snapshot {d.backend} {d.name}: exclusive to the unit, restored whole")
            continue
        how = use.method + (f", {use.size / 2**20:.1f} MiB" if use.method == "copy" else "")
        click.echo(
            f"  would snapshot {d.backend} {d.name}: shared, a rollback restores only "
            f"{', '.join(use.unit_paths)} (by {how})"
        )
        for why in use.others:
            click.echo(f"      also in it: {why}")
        if use.whole_refused:
            click.echo(f"      not restorable whole: {use.whole_refused}")
        if use.proof:
            click.echo(f"      restore method: {use.proof}")
    if trial.runs:
        click.echo(
            f"  trial: the new version runs first as {project.name}-trial on clones of "
            f"{len(plan.datasets())} dataset(s), beside the live one, and is probed; nothing "
            f"is stopped unless it passes"
        )
        for net in trial.left_out:
            click.echo(f"      the trial does not join the external network {net}")
    elif trial.wanted:
        for line in trial.refusals:
            click.echo(f"  {line}; the upgrade runs without one")
    for w in plan.outside:
        click.echo(f"  warning: {w}")
    for c in plan.conflicts():
        click.echo(f"  CANNOT guard: {c}")
    for s in plan.unit:
        for u in plan.storage[s].unprotected:
            click.echo(f"  NOT protected  {s}:{u.target}: {u.reason}")


def history_command(project: str, as_json: bool) -> None:
    from composeguard.upgrade.policy import describe

    journals = Journal.all(project)
    if as_json:
        click.echo(json.dumps([j.to_json() for j in journals], indent=2))
        return
    if not journals:
        click.echo(f"no transactions for project {project}")
        return
    for j in journals:
        outcome = j.outcome or f"UNFINISHED at {j.phase}"
        click.echo(f"{j.id}  {j.command:<7} {outcome}")
        for c in j.changes.values():
            said = describe(c.labels)
            click.echo(
                f"    {c.service}: {short(c.old_digest or c.old_image_id)} -> "
                f"{short(c.new_digest or c.new_image_id)}{f' ({said})' if said else ''}"
            )
        if j.reason:
            click.echo(f"    reason: {j.reason}")
        if j.rollback_error:
            click.echo(f"    the rollback failed {j.rollback_error}: run `composeguard recover`")
        tried = j.trial.get("verdict") == "failed"  # nothing was stopped or restored
        if j.trial:
            verdict = j.trial.get("verdict") or "unfinished"
            what = {"failed": "failed: the live version was never stopped", "none": "could not run"}
            click.echo(f"    trial {j.trial['name']}: {what.get(verdict, verdict)}")
        for s in j.snapshots:
            state = "released" if j.snapshots_released else "kept"
            r = j.restores.get(s.dataset.name)
            kind = "" if r is None else f"; shared: directory-level restore of {', '.join(r['paths'])}"
            if r is None and j.outcome in ("rolled-back", "rollback-failed"):
                kind = "; the trial's, not restored" if tried else "; restored whole"
            click.echo(f"    snapshot ({state}{kind}): {s.name}")
        for f in j.failed_states:
            of = " (the trial's clone)" if tried else ""
            click.echo(f"    failed state{of}{' (released)' if j.snapshots_released else ''}: {f}")


def pins_command(project: str, as_json: bool, with_history: bool = False) -> None:
    from dataclasses import asdict

    pins = PinFile(project)
    released = pins.history() if with_history else []
    if as_json:
        doc: dict = {s: asdict(p) for s, p in pins.pins.items()}
        if with_history:
            doc = {"pins": doc, "released": [asdict(r) for r in released]}
        click.echo(json.dumps(doc, indent=2))
        return
    if not pins.pins:
        click.echo(f"no pins for project {project}")
    for s, p in sorted(pins.pins.items()):
        click.echo(f"{s}: runs {p.image} (pinned {p.since} by {p.txn})")
        for b in p.bad:
            click.echo(f"    bad {b.digest} on {b.date}: {b.reason}")
    if pins.pins:
        click.echo(f"pin file: {pins.path}")
    if with_history:
        click.echo("released pins:" if released else "no released pins")
        for r in released:
            click.echo(f"{r.service}: ran {r.image} from {r.since} ({r.txn}); released {r.released}: {r.why}")
            for b in r.bad:
                click.echo(f"    bad {b.digest} on {b.date}: {b.reason}")


def unpin_command(project: str, service: str) -> None:
    with project_lock(project):
        pins = PinFile(project)
        if not pins.unpin(service, "unpinned by hand"):
            raise ConfigError(f"service {service} of project {project} is not pinned")
        pins.save()
    click.echo(f"unpinned {service}: the next up/update runs the image of the compose file")


def rollback_command(project: Project, txn: str | None, rep: Reporter) -> int:
    from composeguard.storage.resolve import backends_for
    from composeguard.upgrade.rollback import check_restore_mounts, refuse_if_unfinished, roll_back

    with project_lock(project.name):
        refuse_if_unfinished(project.name)
        journals = [
            j for j in Journal.all(project.name) if j.outcome == COMMITTED and j.command != "provision"
        ]
        if txn:
            journals = [j for j in journals if j.id == txn]
            if not journals:
                raise ConfigError(
                    f"no committed transaction {txn} in project {project.name} (see `composeguard history`)"
                )
        if not journals:
            raise ConfigError(f"project {project.name} has no committed transaction to roll back")
        j = journals[-1]
        if j.snapshots_released:
            raise GuardError(f"the snapshots of {j.id} were released by the retention rule")
        from composeguard.upgrade.restorecheck import neighbours_now, recheck_restores

        j.held = sorted({*j.held, *neighbours_now(project, j)})
        try:  # who uses each dataset now, not on the day of the upgrade: before anything stops
            for line in recheck_restores(j, backends_for(project)):
                rep.step(line)
        except GuardError as e:
            raise ConfigError(f"{e}. Nothing was changed") from e
        check_restore_mounts(j)
        j.outcome = None
        j.judged_bad = True  # a person's verdict: update does not try these digests again
        try:
            roll_back(project, j, "manual rollback", rep)
        except RolledBack as e:
            click.echo(f"composeguard: {e}", err=True)
        finally:
            _notify(project, j)
    return 0


def _notify(project: Project, j: Journal) -> None:
    """The hook, Apprise and the metrics hear of a transaction that ``rollback`` or
    ``recover`` ended, as of one an upgrade ended."""
    if j.outcome:
        from composeguard.upgrade.notify import notify

        notify(project.settings, j)


def recover_command(project: Project, rep: Reporter) -> int:
    """Bring an interrupted transaction to one of the two allowed ends."""
    from composeguard.upgrade.recover import finish_interrupted

    with project_lock(project.name):
        j = Journal.unfinished(project.name)
        if j is None:
            click.echo(f"nothing to recover for project {project.name}")
            return 0
        if j.command == "provision":
            from composeguard.provision.apply import recover_provision

            return recover_provision(j, rep)
        try:
            return finish_interrupted(project, j, rep)
        finally:
            _notify(project, j)


def recover_all_command(rep: Reporter) -> int:
    """``recover --all`` (the boot-time unit): finish every project's interrupted transaction,
    each under its own lock, with the compose files and options its journal recorded (the
    unit runs in /, not in the project's folder). A project that cannot be recovered gets one
    line and the worst exit code; the others are recovered all the same."""
    from composeguard.compose.project import resolve
    from composeguard.upgrade.journal import projects_with_journals
    from composeguard.upgrade.update import worst

    codes: list[int] = []
    for name in projects_with_journals():
        try:
            j = Journal.unfinished(name)
            if j is None:
                continue
            if j.command == "provision":
                from composeguard.provision.apply import recover_provision

                with project_lock(name):
                    j = Journal.unfinished(name)
                    code = recover_provision(j, rep) if j else 0
            else:
                if not j.compose_args:
                    raise ConfigError(
                        f"transaction {j.id} did not record its compose files; "
                        f"run `composeguard recover` in the project's folder"
                    )
                cwd = j.cwd if j.cwd and os.path.isdir(j.cwd) else None
                code = recover_command(resolve(j.compose_args, cwd=cwd), rep)
        except GuardError as e:
            click.echo(f"composeguard: {name}: {e}", err=True)
            code = int(e.exit_code)
        codes.append(code)
    if not codes:
        click.echo("nothing to recover")
    return worst(codes)


def provision_command(
    project: Project, services: list[str], apply_: bool, keep_old: bool, rep: Reporter
) -> int:
    from composeguard.provision.apply import apply
    from composeguard.provision.plan import describe, plan_provision
    from composeguard.upgrade.rollback import refuse_if_unfinished

    with project_lock(project.name):
        refuse_if_unfinished(project.name)
        plan = plan_provision(project, services)
        if not apply_:
            for line in describe(plan):
                click.echo(line)
            if plan.refusals:
                raise ConfigError(f"cannot provision: {plan.refusals[0]}")
            if plan.moves:
                click.echo("run it again with --apply to do it")
            return 0
        if plan.refusals:
            raise ConfigError(f"cannot provision: {plan.refusals[0]}; nothing was changed")
        for w in plan.warnings:
            rep.warn(w)
        return apply(project, plan, rep, keep_old)
