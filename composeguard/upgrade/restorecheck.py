"""Who uses each dataset NOW: asked again by every rollback at the moment it acts.

An upgrade classifies its datasets at plan time (``storage/usage.py``): exclusive ones are
restored whole. A ``composeguard rollback TXN`` a week later, or a ``recover`` after a reboot,
must not trust that: another project may have put its data in a folder of the subvolume since,
or a container may have started that mounts it. So before anything is stopped the journal's
datasets are classified again against every container on the host: one that became shared is
restored at the unit's paths only (its method proven again, its copy checked for room), and
one where another container now uses the unit's own data cannot be restored at all: refused.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from composeguard.compose import docker
from composeguard.errors import GuardError
from composeguard.report import mib
from composeguard.storage.base import Backend, Dataset
from composeguard.storage.mounts import read_mounts
from composeguard.storage.treecopy import tree_usage
from composeguard.storage.usage import DatasetUse, analyse, is_inside
from composeguard.upgrade.journal import Journal

log = logging.getLogger("composeguard.restorecheck")

RESTORE_STEPS = ("restoring", "restored", "pinned", "reprobing")


def paths_record(use: DatasetUse, datasets: list[Dataset]) -> dict[str, Any]:
    """The journal's entry for a directory-level restore of ``use`` (storage/pathrestore.py)."""
    d = use.dataset
    return {
        "restore": "paths",
        "root": use.root,
        "paths": use.unit_paths,
        "method": use.method,
        "size": use.size,
        "used_by": use.others,
        "proven": use.proof,
        "child_mounts": [x.mountpoint for x in datasets if x.name.startswith(d.name + "/")],
    }


def copy_size(paths: list[str]) -> int:
    """Bytes a byte copy of ``paths`` (from the snapshot) would write."""
    return sum(
        tree_usage(p)[1] if os.path.isdir(p) else os.lstat(p).st_blocks * 512
        for p in paths
        if os.path.lexists(p)
    )


def recheck_restores(j: Journal, backends: Callable[[str], Backend], around: Iterable[str] = ()) -> list[str]:
    """Classify ``j``'s datasets again against the containers there are now and update
    ``j.restores`` (a dataset restored whole that is now shared: by paths). Raises GuardError
    when a restore is no longer possible without touching someone else's data. ``around``:
    services of the project stopped with the unit (their mounts are no one else's). Returns
    one line per dataset whose restore changed, for the progress output. A restore that
    started already (``recover`` after a kill in the middle of it) is finished as recorded."""
    if any(s.get("phase") in RESTORE_STEPS for s in j.steps):
        return []
    members = set(j.unit) | set(around) | set(j.held)
    others = [c for c in docker.all_container_uses() if not (c.project == j.project and c.service in members)]
    data_root = docker.data_root()
    mounts = read_mounts()
    own = [d.files_at for d in j.datasets]
    changed: list[str] = []
    for snap in j.snapshots:
        d = snap.dataset
        backend: Backend = backends(d.backend)
        record = j.restores.get(d.name)
        paths = list(record["paths"]) if record else list(j.unit_paths.get(d.name) or [d.files_at])
        if any(is_inside(d.files_at, u) for x in j.datasets for u in j.unit_paths.get(x.name, [])):
            paths.append(d.files_at)  # a child dataset inside a unit volume: all of it is the unit's
        nested = backend.nested(d)
        use = analyse(d, d.files_at, paths, others, data_root, mounts, dataset_mounts=own, nested=nested)
        if use.conflicts:
            raise GuardError(f"the rollback of {j.id} cannot restore {d.name} any more: {use.conflicts[0]}")
        use.whole_refused = "" if record is not None else backend.whole_refused(d)
        if record is not None or use.restore == "whole":
            continue
        use.method, use.proof = backend.prove_copy(d, use.unit_paths, backend.copy_method(d))
        if use.method == "copy":
            use.size = copy_size(use.unit_paths)
            free = backend.free_bytes(d)
            if free < use.size * 1.1:
                raise GuardError(
                    f"{d.name} cannot be restored whole now, so the rollback of {j.id} would copy "
                    f"{mib(use.size)} back from the snapshot, but only {mib(free)} is free"
                )
        j.restores[d.name] = paths_record(use, j.datasets)
        why = use.others[0] if use.others else use.whole_refused
        only = ", ".join(use.unit_paths)
        changed.append(f"{d.name} cannot be restored whole now ({why}): restoring only {only}")
        log.info("%s: %s", j.id, changed[-1])
    return changed


def neighbours_now(project: Any, j: Journal) -> list[str]:
    """The running services of ``project`` that use ``j``'s unit today (unit.neighbours): a
    ``rollback TXN`` long after the upgrade stops them with the unit, whatever the journal held."""
    from composeguard.storage.resolve import StorageMapper
    from composeguard.upgrade.unit import neighbours

    running = {c.service for c in docker.project_containers(project.name) if c.status in docker.UP_STATES}
    mapper = StorageMapper(project)
    deps = {s: [d for d in v.depends_on if d in project.services] for s, v in project.services.items()}
    reads = {s: mapper.read_paths(v) for s, v in project.services.items() if s not in j.unit}
    unit_paths = [p for ps in j.unit_paths.values() for p in ps]
    around = neighbours(j.unit, deps, reads, {s: unit_paths for s in j.unit})
    return sorted(s for s in around if s in running)
