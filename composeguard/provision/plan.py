"""What ``provision`` would do: which folders become datasets, with which properties, which
containers must stop, and why it may not be done at all. Changes nothing."""


from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.report import mib, size_text
from composeguard.storage import newdataset
from composeguard.storage.base import Dataset
from composeguard.storage.resolve import StorageMapper
from composeguard.storage.treecopy import tree_usage
from composeguard.storage.usage import is_inside

ASIDE_INFIX = ".composeguard-provision-"


@dataclass
class Move:
    """One folder becoming a dataset of its own."""

    services: list[str]  # the named services whose volume it is
    path: str  # the folder (resolved)
    parent: Dataset  # the dataset that holds it now
    name: str  # the new dataset (ZFS name; Btrfs: the path)
    properties: dict[str, str]  # set at creation (ZFS)
    workload: str  # what the record size was chosen for
    method: str  # how the data is copied in: reflink | clone | copy
    size: int  # bytes a copy writes (0 with reflink)
    aside: str = ""  # where the original waits until the copy is verified
    done: list[str] = field(default_factory=list)  # aside, created, copied, verified

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["parent"] = self.parent.to_json()
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Move:
        return cls(**{**d, "parent": Dataset.from_json(d["parent"])})


@dataclass
class ProvisionPlan:
    moves: list[Move] = field(default_factory=list)
    containers: list[docker.ContainerUse] = field(default_factory=list)  # the ones to stop
    skipped: list[str] = field(default_factory=list)  # volumes left as they are, and why
    refusals: list[str] = field(default_factory=list)  # why it cannot be done at all
    warnings: list[str] = field(default_factory=list)


def plan_provision(project: Project, services: list[str]) -> ProvisionPlan:
    """What ``provision`` would do for the data volumes of ``services``; changes nothing."""
    from composeguard.doctor.workload import recommend

    for s in services:
        project.service(s)  # a clear error for an unknown service
    plan = ProvisionPlan()
    mapper = StorageMapper(project)
    running: dict[str, list[tuple[str, str, str, str]]] = {}
    for c in docker.project_containers(project.name):
        running.setdefault(c.service, []).extend(c.mounts)
    by_path: dict[str, Move] = {}
    for s in services:
        svc = project.services[s]
        storage = mapper.for_service(svc, running.get(s, ()))
        plan.skipped += [f"{s}:{u.target}: {u.reason}" for u in storage.unprotected]
        for p in storage.protected:
            path = os.path.realpath(p.path)
            if path in by_path:
                by_path[path].services.append(s)
                continue
            if not os.path.isdir(path):
                plan.skipped.append(f"{s}:{p.target}: {path} is a single file; give its folder a dataset")
                continue
            if newdataset.is_root(p.dataset.backend, path):
                plan.skipped.append(f"{s}:{p.target}: {path} is already a dataset of its own")
                continue
            rec = recommend(svc.image, p.target)
            backend = mapper.backend(p.dataset.backend)
            name, _ = newdataset.new_name(p.dataset, path)
            props = {"recordsize": size_text(rec.recordsize)} if p.dataset.backend == "zfs" else {}
            method = backend.copy_method(p.dataset)
            size = 0 if method == "reflink" else tree_usage(path)[1]
            by_path[path] = Move([s], path, p.dataset, name, props, rec.workload, method, size)
    plan.moves = list(by_path.values())
    _check(plan, mapper)
    return plan


def _check(plan: ProvisionPlan, mapper: StorageMapper) -> None:
    """Refusals (nothing may be done) and warnings, and the containers to stop."""
    paths = [m.path for m in plan.moves]
    data_root = docker.data_root() if paths else ""
    for m in plan.moves:
        if any(o != m.path and is_inside(m.path, o) for o in paths):
            plan.refusals.append(f"{m.path} is inside another folder to provision; provision one at a time")
        if data_root and is_inside(m.path, data_root):
            plan.refusals.append(
                f"{m.path} is a named volume in Docker's data-root {data_root}; bind-mount a folder instead"
            )
        below = [x.mountpoint for x in mapper.mounts if x.mountpoint.startswith(m.path.rstrip("/") + "/")]
        if below:
            plan.refusals.append(f"{below[0]} is mounted below {m.path}; unmount it first")
        nested = [n for n in mapper.backend(m.parent.backend).nested(m.parent) if is_inside(n, m.path)]
        if nested:
            plan.refusals.append(f"the subvolume {nested[0]} is inside {m.path}; a copy cannot keep it")
        leaving = hardlinks_leaving(m.path)
        if leaving:
            plan.refusals.append(
                f"{leaving} in {m.path} is hardlinked to a file outside it; a dataset boundary would "
                f"split the link (copy the file or remove the other link first)"
            )
        free = mapper.backend(m.parent.backend).free_bytes(m.parent)
        if m.size and m.size + (64 << 20) > free:
            plan.refusals.append(
                f"{m.path}: the copy needs {mib(m.size)}, {m.parent.name} has {mib(free)} free"
            )
        if m.parent.backend == "zfs":
            from composeguard.storage.mountns import namespace_problem

            problem = namespace_problem(f"provisioning {m.path} (a new ZFS dataset)")
            if problem:
                plan.refusals.append(problem)
            plan.warnings.append(
                f"{m.name} is a child of {m.parent.name}: snapshots of {m.parent.name} without -r "
                f"(and replication without -R) no longer include its data"
            )
        else:
            plan.warnings.append(
                f"{m.path} becomes a subvolume: snapshots of {m.parent.name} no longer include its data"
            )
    plan.containers = [
        c
        for c in docker.all_container_uses()
        if c.running and any(is_inside(src, p) or is_inside(p, src) for _, src in c.sources for p in paths)
    ]


def hardlinks_leaving(path: str) -> str:
    """A file below ``path`` with a hardlink outside it ("" when there is none): counted by
    the links seen inside against the inode's link count. Symlinks are not followed."""
    seen: dict[tuple[int, int], tuple[int, str]] = {}
    for top, _dirs, files in os.walk(path):
        for f in files:
            full = os.path.join(top, f)
            st = os.lstat(full)
            if st.st_nlink > 1 and not os.path.islink(full):
                n, first = seen.get((st.st_dev, st.st_ino), (0, full))
                seen[(st.st_dev, st.st_ino)] = (n + 1, first)
    for n, first in seen.values():
        if n < os.lstat(first).st_nlink:
            return first
    return ""


def describe(plan: ProvisionPlan) -> list[str]:
    out = []
    for m in plan.moves:
        props = ", ".join(f"{k}={v}" for k, v in m.properties.items()) or "properties of the parent"
        how = m.method + (f", {mib(m.size)}" if m.size else "")
        out.append(
            f"would make {m.parent.backend} {m.name} at {m.path} ({props}; {m.workload}) for "
            f"{', '.join(m.services)}, moving the data in by {how}"
        )
    for c in plan.containers:
        out.append(f"would stop and restart {c.describe()}")
    out += [f"left as it is: {s}" for s in plan.skipped]
    out += [f"warning: {w}" for w in plan.warnings]
    out += [f"CANNOT: {r}" for r in plan.refusals]
    return out
