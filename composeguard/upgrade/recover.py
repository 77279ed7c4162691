"""Finishing a transaction that was killed (``recover``), from its journal alone: before its
snapshots were complete it is undone (abort), after that it is rolled back (rollback.py); a
trial killed after its verdict is finished (trial_teardown.py); a commit killed before the
services held around the unit ran again starts them."""

from __future__ import annotations

from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.errors import GuardError, RollbackFailed, RolledBack, last_line
from composeguard.pins.pinfile import PinFile
from composeguard.report import Reporter
from composeguard.storage.resolve import Backends, backends_for
from composeguard.upgrade.journal import COMMITTED, ROLLBACK_FAILED, Journal
from composeguard.upgrade.rollback import abort, check_restore_mounts, roll_back
from composeguard.upgrade.trial_teardown import TRIAL_PHASES, finish_failed_trial


def _before_snapshots() -> tuple[str, ...]:
    """The phases in which nothing of the live version has changed: the trial's too."""
    return ("started", "recorded", "quiescing", "aborting", *TRIAL_PHASES)


def _adopt_unrecorded_snapshots(project: Project, j: Journal, rep: Reporter, backends: Backends) -> None:
    """A kill between making a snapshot and journaling it (or, on ZFS, after the one atomic
    snapshot of several datasets) leaves snapshots the journal does not list: take them into
    the journal, so that the abort destroys them or the rollback can use them."""
    recorded = {s.dataset.name for s in j.snapshots}
    for d in j.datasets:
        if d.name in recorded:
            continue
        snap = backends(d.backend).find_snapshot(d, j.project, j.id)
        if snap is not None:
            rep.step(f"found the unrecorded snapshot {snap.name}")
            j.snapshots.append(snap)
            j.save()


def finish_interrupted(project: Project, j: Journal, rep: Reporter) -> int:
    """Finish a transaction that was killed: before its snapshots were complete it is undone
    (nothing had changed); after that it is rolled back to the old version on the old data."""
    if j.outcome == COMMITTED:  # killed right after the commit: only the held are left to do
        return _start_held_again(project, j, rep)
    if j.outcome == ROLLBACK_FAILED:  # resume it: every step of roll_back can run again
        rep.step(f"resuming the rollback of {j.id}, which failed {j.rollback_error}")
        j.outcome, j.finished = None, None
        # a journal written before `failed_at` existed: the step before the outcome says it
        before = j.steps[-2].get("phase") if len(j.steps) > 1 else ""
        if (j.failed_at or before) == "aborting":
            j.phase = "aborting"  # an abort that could not start the old version: abort again
    else:
        rep.step(f"recovering {j.id}, interrupted at '{j.phase}'")
    backends = backends_for(project)
    _adopt_unrecorded_snapshots(project, j, rep, backends)
    pin_files = PinFile(project.name).applied_file(set(project.services))
    if j.trial.get("verdict") == "failed" and j.trial.get("state") != "removed" and not j.snapshots_released:
        # killed after the trial's verdict: finish it (pin, keep its clones); the live
        # version was never stopped
        if j.phase in (*_before_snapshots(), "pinned"):
            try:
                finish_failed_trial(project, j, rep, backends)
            except RolledBack as e:
                rep.step(f"recovered: {e}")
            return 0
    if j.phase in _before_snapshots():
        try:
            abort(project, j, pin_files, GuardError("interrupted before the snapshots"), rep, backends)
        except RollbackFailed:
            raise  # the old version could not be started again: exit 4, recover once more
        except GuardError as e:
            rep.step(f"recovered: {e}")
        return 0
    check_restore_mounts(j)
    try:
        roll_back(project, j, j.reason or f"interrupted at '{j.phase}'", rep, backends)
    except RolledBack as e:
        rep.step(f"recovered: {e}")
    return 0


def _start_held_again(project: Project, j: Journal, rep: Reporter) -> int:
    """A committed upgrade whose held services were not started again: start them, as the
    very containers that were stopped (their own config changes apply at the next ``up``)."""
    rep.step(f"{j.id} was committed; starting {', '.join(j.held)} again")
    pin_files = PinFile(project.name).applied_file(set(project.services))
    proc = docker.compose(project, ["start", *j.held], extra_files=pin_files, check=False, capture=True)
    if proc.returncode != 0:
        raise GuardError(f"could not start {', '.join(j.held)} again: {last_line(proc.stderr, '?')}")
    j.held_pending = False
    j.save()
    return 0
