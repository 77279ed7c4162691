"""The way back: the rollback of a failed upgrade, and the undo (abort) of a quiesce or
snapshot that failed. Finishing a transaction that was killed is recover.py; the retention of
old snapshots, retention.py.

All of it works from the journal alone (``recover`` and ``rollback`` run it without a live
upgrade), and each step checks where it stands first, so it can run again after a kill.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import NoReturn

from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.compose.upargs import rollback_up_options
from composeguard.errors import GuardError, RollbackFailed, RolledBack, StorageError, last_line
from composeguard.faults import pause_point
from composeguard.pins.pinfile import PinFile
from composeguard.report import Reporter, mib, short
from composeguard.state import write_with_spare
from composeguard.storage.base import Dataset, Snapshot
from composeguard.storage.pathrestore import cleanup, restore_paths
from composeguard.storage.resolve import Backends, backends_for
from composeguard.upgrade.journal import ABORTED, ROLLBACK_FAILED, ROLLED_BACK, Journal
from composeguard.upgrade.probe import probe_services
from composeguard.upgrade.retention import apply_retention, release_held_images
from composeguard.upgrade.trial_teardown import remove_trial

log = logging.getLogger("composeguard.rollback")

# tmpfs: where the pin overlay (and an abort's old-version file) goes when the state dir is full
SPARE_DIR = "/run/composeguard"


def destroy_snapshots(backends: Backends, snapshots: list[Snapshot]) -> list[tuple[Snapshot, Exception]]:
    """Destroy the journal's snapshots; those that could not be destroyed, with why."""
    left = []
    for snap in snapshots:
        try:
            backends(snap.dataset.backend).destroy(snap.name)
        except (StorageError, OSError) as err:
            left.append((snap, err))
    return left


def describe_restore(d: Dataset, use: dict) -> str:
    """'btrfs:/srv/pool/appdata (shared: restores a, b by reflink)' for the progress lines."""
    if not use or use.get("restore") != "paths":
        return f"{d.backend}:{d.name}"
    method = use.get("method", "")
    how = f"by {method}" + (f" of {mib(use.get('size', 0))}" if method == "copy" else "")
    paths = ", ".join(os.path.relpath(p, use.get("root") or d.name) for p in use.get("paths", []))
    return f"{d.backend}:{d.name} (shared: restores {paths} {how})"


def refuse_if_unfinished(project: str) -> None:
    j = Journal.unfinished(project)
    if j is not None and j.outcome == ROLLBACK_FAILED:
        raise GuardError(
            f"the rollback of transaction {j.id} of project {project} failed ({j.rollback_error}); "
            f"fix the cause, then run `composeguard recover` (nothing was changed now)"
        )
    if j is not None and j.held_pending:
        raise GuardError(
            f"project {project}: {j.left_undone()}; run `composeguard recover` (nothing was changed now)"
        )
    if j is not None:
        raise GuardError(
            f"transaction {j.id} ({j.command}) of project {project} was interrupted at step '{j.phase}'; "
            f"run `composeguard recover` first (nothing was changed now)"
        )


def abort(
    project: Project,
    j: Journal,
    pin_files: list[str],
    e: BaseException,
    rep: Reporter,
    backends: Backends | None = None,
) -> NoReturn:
    """Undo a failed quiesce/snapshot: bring back what we stopped FIRST (the services must not
    stay down because a snapshot cannot be destroyed), then drop our partial snapshots. The
    changed services whose containers the quiesce replaced (``j.replaced``: the new version's,
    created, never started) get their old version back on the old images; the rest is
    started as the very containers that were stopped."""
    reason = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
    # Restart first, write afterwards: the failure may be the journal itself (a full disk).
    if j.paused or j.frozen:
        paused = [*j.paused, *j.frozen]
        docker.compose(project, ["unpause", *paused], extra_files=pin_files, check=False, capture=True)
    first = [s for s in j.stopped if s not in j.replaced and s not in j.held]
    if first:  # the dependencies, before the old version that may wait on them
        docker.compose(project, ["start", *first], extra_files=pin_files, check=False, capture=True)
    not_back = _old_version_back(project, j, pin_files) if j.replaced else ""
    held = [s for s in j.stopped if s in j.held and s not in j.replaced]
    if held and not not_back:
        docker.compose(project, ["start", *held], extra_files=pin_files, check=False, capture=True)
    j.best_effort = True
    j.step("aborting", reason=reason)
    backends = backends or backends_for(project)
    if j.trial:
        remove_trial(j, rep, backends)
    left = destroy_snapshots(backends, list(j.snapshots))
    for s, err in left:
        rep.warn(f"could not destroy the partial snapshot {s.name}: {err}")
    j.snapshots = [s for s, _ in left]
    if left:
        reason += f"; partial snapshot(s) left for you to delete: {', '.join(s.name for s, _ in left)}"
    if not_back:
        j.rollback_error, j.failed_at = f"at step 'aborting': {not_back}", "aborting"
        j.finish(ROLLBACK_FAILED, reason)
        raise RollbackFailed(
            f"{reason}; the old version of {', '.join(j.replaced)} could not be started again "
            f"({not_back}): it is down, on its untouched data (no snapshot was needed); fix the "
            f"cause, then run `composeguard recover`"
        ) from e
    j.finish(ABORTED, reason)
    if isinstance(e, KeyboardInterrupt):
        raise e
    unsaved = f" (the journal could not be written: {j.unsaved})" if j.unsaved else ""
    what = "the old version runs again" if j.replaced else "the stopped services were started again"
    raise GuardError(f"{reason}; {what}, nothing was changed{unsaved}") from e


def _old_version_back(project: Project, j: Journal, pin_files: list[str]) -> str:
    """``up`` the replaced services on their old images (a compose file of their old
    references after the pins; the new version's containers, never started, are replaced in
    turn); '' when that worked, else why not (compose's last line)."""
    import yaml

    doc = {"services": {s: {"image": j.changes[s].old_ref} for s in j.replaced if s in j.changes}}
    text = "# composeguard: the old version, brought back by an aborted upgrade\n" + yaml.safe_dump(doc)
    spare = Path(SPARE_DIR) / "projects" / project.name / f"old-version-{j.id}.yaml"
    path = write_with_spare(j.files_dir / "old-version.yaml", text, spare)
    args = ["up", "--detach", "--no-deps", "--pull", "missing", "--no-build",
            *rollback_up_options(j.up_args, j.replaced, recreate=True), *j.replaced]
    proc = docker.compose(project, args, extra_files=[*pin_files, str(path)], check=False, capture=True)
    failed = f"docker compose up exited with {proc.returncode}"
    return "" if proc.returncode == 0 else last_line(proc.stderr, failed)


def roll_back(
    project: Project, j: Journal, reason: str, rep: Reporter, backends: Backends | None = None
) -> NoReturn:
    """Put the unit back on its pre-upgrade data and old digests. Raises RolledBack (exit 3)
    or RollbackFailed (exit 4)."""
    j.reason = reason
    j.best_effort = True  # a journal that cannot be written must not stop the rollback
    j.step("rolling-back", reason=reason)
    rep.step(f"rolling back: {reason}")
    backend = backends or backends_for(project)
    pins = PinFile(project.name)
    try:
        if not docker.wait_for_daemon(120):
            raise GuardError("dockerd does not answer")
        from composeguard.upgrade.restorecheck import recheck_restores

        for line in recheck_restores(j, backend):  # who uses each dataset now (before the stop)
            rep.step(line)
        for c in docker.project_containers(project.name):
            if c.service in j.changes:
                docker.save_logs(c.id, str(j.files_dir / f"{c.service}.{c.name}.log"))
        j.step("stopping-unit")
        # the unit, and what is held around it (a `rollback TXN` days later finds them running:
        # their writes into a restored service must not be lost)
        docker.compose(project, ["stop", *j.unit, *j.held], extra_files=_overlay(pins, project), capture=True)
        j.step("restoring")
        pause_point("restoring")
        failed_states = []
        for n, snap in enumerate(j.snapshots):
            record = j.restores.get(snap.dataset.name)
            if record is not None:
                rep.step(f"restoring {describe_restore(snap.dataset, record)}")
                failed_states += restore_paths(
                    backend(snap.dataset.backend), snap, record, j.project, j.id, j.save
                )
            else:
                failed_states.append(backend(snap.dataset.backend).restore(snap, j.id))
            if n == 0 and len(j.snapshots) > 1:
                pause_point("restored-one")
        j.failed_states = failed_states
        j.step("restored")
        rep.step(
            f"restored {len(j.snapshots)} dataset(s); failed state kept at "
            + (", ".join(failed_states) or "(no datasets)")
        )
        for s, c in j.changes.items():  # quarantine the new digest only on a verdict
            pins.pin(s, c.old_ref, j.id, (c.new_digest or c.new_image_id) if j.judged_bad else None, reason)
        try:
            pins.save()
        except (OSError, GuardError) as e:  # a full disk: the old version must run all the same
            j.unsaved = j.unsaved or f"{pins.path}: {getattr(e, 'strerror', None) or e}"
        j.step("pinned")
        pause_point("pinned")
        pin_files = _overlay(pins, project)
        rep.step(
            f"pinned {', '.join(f'{s}={short(c.old_ref)}' for s, c in j.changes.items())}; "
            f"starting the old version"
        )
        # The rest of the unit (dependencies, services sharing the data) runs again as the
        # very containers that were stopped, whatever their tags point to now: a rollback
        # recreates nothing it did not plan for. Then the changed services, on the old digests.
        since = time.monotonic()
        others = [s for s in j.unit if s not in j.changes]
        if others:
            docker.compose(
                project,
                ["up", "--detach", "--no-recreate", "--no-deps", "--pull", "missing", "--no-build",
                 *rollback_up_options(j.up_args, others, recreate=False), *others],
                extra_files=pin_files,
            )
        docker.compose(
            project,
            ["up", "--detach", "--force-recreate", "--no-deps", "--pull", "missing", "--no-build",
             *rollback_up_options(j.up_args, sorted(j.changes), recreate=True), *sorted(j.changes)],
            extra_files=pin_files,
        )
        if j.held:  # the very containers that were stopped, on the restored data
            docker.compose(
                project,
                ["up", "--detach", "--no-recreate", "--no-deps", "--pull", "missing", "--no-build",
                 *rollback_up_options(j.up_args, j.held, recreate=False), *j.held],
                extra_files=pin_files,
            )
        j.step("reprobing")
        results = probe_services(project, list(j.changes), rep, since=since)
        bad = [r for r in results if not r.ok]
        if bad:
            raise GuardError(
                "the old version is not healthy either: " + "; ".join(f"{r.service}: {r.detail}" for r in bad)
            )
    except BaseException as e:  # noqa: BLE001
        phase = j.failed_at = j.phase
        j.rollback_error = f"at step '{phase}': {'interrupted' if isinstance(e, KeyboardInterrupt) else e}"
        j.finish(ROLLBACK_FAILED, reason)
        snaps = ", ".join(s.name for s in j.snapshots) or "none"
        raise RollbackFailed(
            f"the rollback of {j.id} failed at step '{phase}': {e}. The pre-upgrade snapshots "
            f"are kept ({snaps}); fix the cause, then run `composeguard recover`"
        ) from e
    for name, record in j.restores.items():
        try:  # the moved-aside failed directories (their contents are in the failed snapshot)
            cleanup(record, j.id)
        except (OSError, StorageError) as e:
            rep.warn(f"could not delete the moved-aside failed directories in {name}: {e}")
    j.rollback_error = j.failed_at = ""
    j.finish(ROLLED_BACK, reason)
    release_held_images(j, rep)  # a committed one rolled back by hand: its old images run again
    if j.unsaved:
        raise RollbackFailed(
            f"the rollback of {j.id} finished ({', '.join(j.changes)} back on the old digest on the "
            f"pre-upgrade data; failed state kept at {', '.join(j.failed_states) or '(no datasets)'}), "
            f"but its journal and pins could not be written ({j.unsaved}): until there is room, "
            f"the next update may retry the bad digest. Free space, then run `composeguard recover`"
        )
    apply_retention(project, rep, backend)
    raise RolledBack(
        f"the upgrade failed ({reason}) and was rolled back: {', '.join(j.changes)} back on the old "
        f"digest on the pre-upgrade data; failed state kept at "
        f"{', '.join(j.failed_states) or '(no datasets)'}; see `composeguard history`"
    )


def _overlay(pins: PinFile, project: Project) -> list[str]:
    return pins.applied_file(set(project.services), spare_dir=Path(SPARE_DIR))


def check_restore_mounts(j: Journal) -> None:
    """Before a rollback from the journal (``rollback``, ``recover``) changes anything: a whole
    ZFS restore mounts, so it must run in dockerd's mount namespace (storage/mountns.py)."""
    whole = [
        s.dataset.name for s in j.snapshots if s.dataset.backend == "zfs" and s.dataset.name not in j.restores
    ]
    if whole:
        from composeguard.storage.mountns import check_dockerd_namespace

        check_dockerd_namespace(f"the rollback of {j.id} ({whole[0]}, a whole ZFS dataset)")
