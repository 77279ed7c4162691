"""The retention of old snapshots: keep those of the last ``retention`` committed transactions
and the pre-upgrade snapshots and failed states of the last ``keep_rollbacks`` rolled-back (or
aborted) ones; release older ones, and the old images held for them (imagehold.py)."""

from __future__ import annotations

from composeguard.compose.project import Project
from composeguard.errors import StorageError
from composeguard.report import Reporter
from composeguard.storage.resolve import Backends, backends_for
from composeguard.upgrade.journal import ABORTED, COMMITTED, ROLLED_BACK, Journal


def apply_retention(project: Project, rep: Reporter, backends: Backends | None = None) -> None:
    """Keep the snapshots of the last ``retention`` committed transactions, and the
    pre-upgrade snapshots and failed states of the last ``keep_rollbacks`` rolled-back (or
    aborted) ones; release older ones. Only what composeguard's own journals record is ever
    destroyed, and a failure to release is a warning (the pool keeps it; the next run retries)."""
    settings = project.settings
    journals = [j for j in Journal.all(project.name) if j.command != "provision" and not j.snapshots_released]
    committed = [j for j in journals if j.outcome == COMMITTED and j.snapshots]
    failed = [j for j in journals if j.outcome in (ROLLED_BACK, ABORTED) and (j.snapshots or j.failed_states)]
    backend = backends or backends_for(project)
    for j in committed[: -settings.retention]:
        if _release(j, backend, rep, [s.name for s in j.snapshots]):
            release_held_images(j, rep)
    for j in failed[: -settings.keep_rollbacks]:
        # the failed states first: on ZFS a failed dataset kept whole is a clone of the
        # pre-upgrade snapshot, which cannot be destroyed while the clone exists
        _release(j, backend, rep, [*kept_failed_states(j), *(s.name for s in j.snapshots)], failed=True)


def kept_failed_states(j: Journal) -> list[str]:
    """The names of what ``j`` kept of the failed version: a directory-level restore's failed
    snapshot (``restores[...]["failed"]``; ``failed_states`` has where it is read), a whole
    restore's failed dataset or subvolume."""
    by_path = [r["failed"] for r in j.restores.values() if r.get("failed")]
    seen = {*by_path, *(r.get("failed_root") for r in j.restores.values())}
    return [*by_path, *(f for f in j.failed_states if f not in seen)]


def _release(j: Journal, backend: Backends, rep: Reporter, names: list[str], failed: bool = False) -> bool:
    """Destroy what ``j`` kept (snapshots, failed states); True when all of it is gone."""
    for name in names:
        try:  # a Btrfs snapshot or subvolume is a path; a ZFS name never starts with "/"
            backend("btrfs" if name.startswith("/") else "zfs").destroy(name)
        except (StorageError, OSError) as err:
            rep.warn(f"retention could not release {name} of {j.id}: {err}")
            return False
    j.snapshots_released = True
    j.save()
    what = "pre-upgrade snapshots and failed state" if failed else "snapshots"
    rep.step(f"retention: released the {what} of {j.id}")
    return True


def release_held_images(j: Journal, rep: Reporter) -> None:
    from composeguard.upgrade.imagehold import release_images

    problem = release_images(j.project, j.id)
    if problem:
        rep.warn(f"could not release the old images held for {j.id}: {problem}")
