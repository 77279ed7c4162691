"""Snapshotting a unit's datasets as one moment: shared by the transaction and the trial.

The services in ``j.frozen`` (data in more than one atomic snapshot group) are paused with
``docker compose pause`` for the instant of the snapshots and unpaused whatever happens; the
journal is written once per backend (the snapshot names follow from the transaction ID, so a
snapshot made just before a kill is found by ``recover``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.report import Reporter
from composeguard.storage.base import Dataset, Snapshot, SnapshotTags, by_backend
from composeguard.upgrade.journal import Journal


def tags_for(project: Project, j: Journal, txn: str, unit: list[str]) -> SnapshotTags:
    """What each snapshot records of the upgrade it was made for."""
    return SnapshotTags(
        txn=txn,
        project=project.name,
        services=tuple(unit),
        old_digests={s: c.old_digest or c.old_image_id for s, c in j.changes.items()},
        new_digests={s: c.new_digest or (c.new_image_id or "") for s, c in j.changes.items()},
    )


def snapshot_as_one_moment(
    project: Project,
    j: Journal,
    datasets: list[Dataset],
    tags: SnapshotTags,
    on_each: Callable[[Snapshot], None],
    pin_files: list[str],
    rep: Reporter,
    backends: Any,
    what: str = "the snapshots",
) -> None:
    if j.frozen:
        j.save()
        rep.step(f"pausing {', '.join(j.frozen)} for {what} (data in several subvolumes)")
        docker.compose(project, ["pause", *j.frozen], extra_files=pin_files, capture=True)
    try:
        for kind, group in by_backend(datasets).items():
            backends(kind).snapshot(group, tags, on_each=on_each)
            j.save()
    finally:
        if j.frozen:
            docker.compose(project, ["unpause", *j.frozen], extra_files=pin_files, check=False, capture=True)
