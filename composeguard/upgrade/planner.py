"""Work out what an upgrade would do: which services change, the rollback unit, the storage.

Shared by ``plan`` (changes nothing) and the guarded ``up``/``update`` (which then act on it).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.errors import ConfigError, last_line
from composeguard.pins.pinfile import PinFile
from composeguard.storage.base import Dataset
from composeguard.storage.resolve import NotProtected, ServiceStorage, StorageMapper
from composeguard.storage.usage import DatasetUse, analyse, is_inside
from composeguard.upgrade.policy import what_changed
from composeguard.upgrade.restorecheck import copy_size
from composeguard.upgrade.unit import dependencies_of, neighbours, rollback_unit


@dataclass
class Running:
    service: str
    container_ids: list[str]
    image_id: str
    repo_digest: str | None  # repo@sha256:… of the running image in the service's repository


@dataclass
class Change:
    service: str
    old_image_id: str
    old_digest: str | None
    new_ref: str  # the reference compose will start
    new_image_id: str | None
    new_digest: str | None
    new_created: str = ""  # when the new image was built (its config), for min_age
    labels: dict[str, Any] = field(default_factory=dict)  # what changed (policy.what_changed)


@dataclass
class Plan:
    project: Project
    scope: list[str]
    running: dict[str, Running]
    changes: dict[str, Change]
    unit: list[str] = field(default_factory=list)
    storage: dict[str, ServiceStorage] = field(default_factory=dict)
    usage: dict[str, DatasetUse] = field(default_factory=dict)  # dataset name -> how it is restored
    below: list[Dataset] = field(default_factory=list)  # ZFS child datasets inside the unit's data
    mapper: StorageMapper | None = None  # the run's storage backends (one read of the mount table)
    # Running services around the unit that use it (unit.neighbours): service -> why. Stopped
    # before the snapshot, started again once the upgrade is committed or rolled back.
    neighbours: dict[str, str] = field(default_factory=dict)
    # Containers of other projects (or none) that can reach a unit member over a network:
    # compose cannot stop them, so what they write meanwhile would be rolled back.
    outside: list[str] = field(default_factory=list)
    running_now: set[str] = field(default_factory=set)  # services with a running container
    around: set[str] = field(default_factory=set)  # every neighbour, running or not

    def held(self) -> list[str]:
        """Stopped before the snapshot and kept stopped until the verdict: the neighbours, and
        the unit members that only share data with it (not a dependency of a changed service:
        nothing the new version needs), whose writes meanwhile the rollback would undo."""
        deps = dependencies_of(self.changes, {s: v.depends_on for s, v in self.project.services.items()})
        sharers = [s for s in self.unit if s not in self.changes and s not in deps and s in self.running_now]
        return sorted({*self.neighbours, *sharers})

    def datasets(self) -> list[Dataset]:
        seen: dict[str, Dataset] = {}
        for s in self.unit:
            for d in self.storage[s].datasets:
                seen.setdefault(d.name, d)
        for d in self.below:
            seen.setdefault(d.name, d)
        return list(seen.values())

    def frozen(self, quiesced: list[str]) -> list[str]:
        """Running unit members (not ``quiesced`` already) whose data lies in more than one
        atomic snapshot group: several Btrfs subvolumes (PGDATA and pg_wal on two), or
        datasets of several ZFS pools. Their snapshots are taken one after the other, so the
        service is paused for that instant (``docker compose pause``): together they are one
        moment, as after a power cut, which a database recovers from."""
        out = []
        for s in self.unit:
            if s in quiesced or s not in self.running_now:
                continue
            groups = {d.pool if d.backend == "zfs" else d.name for d in self.storage[s].datasets}
            if len(groups) > 1:
                out.append(s)
        return out

    def refusals(self, allow_all: bool) -> list[tuple[str, NotProtected]]:
        """Unprotected data volumes of unit services that are not allowed."""
        out = []
        for s in self.unit:
            eff = self.project.settings.for_service(self.project.services[s].settings)
            if allow_all or eff.unprotected == "allow":
                continue
            out += [(s, u) for u in self.storage[s].unprotected]
        return out

    def conflicts(self) -> list[str]:
        out = [c for u in self.usage.values() for c in u.conflicts]
        mounting = self.mounting_restores()
        if mounting:
            from composeguard.storage.mountns import namespace_problem

            problem = namespace_problem(f"a rollback of {mounting[0]} (a whole ZFS dataset)")
            if problem:
                out.append(problem)
        return out

    def mounting_restores(self) -> list[str]:
        """The datasets a rollback would restore whole by unmounting and mounting (ZFS)."""
        return [
            d.name
            for d in self.datasets()
            if d.backend == "zfs" and not (d.name in self.usage and self.usage[d.name].restore == "paths")
        ]

    def to_json(self) -> dict[str, Any]:
        return {
            "project": self.project.name,
            "changes": [asdict(c) for c in self.changes.values()],
            "unit": self.unit,
            "neighbours": [{"service": s, "why": why} for s, why in sorted(self.neighbours.items())],
            "held": self.held(),
            "outside": self.outside,
            "datasets": [
                {**d.to_json(), **(self.usage[d.name].to_json() if d.name in self.usage else {})}
                for d in self.datasets()
            ],
            "services": {
                s: {
                    "protected": [
                        {
                            "target": p.target,
                            "path": p.path,
                            "dataset": p.dataset.name,
                            "backend": p.dataset.backend,
                        }
                        for p in self.storage[s].protected
                    ],
                    "unprotected": [asdict(u) for u in self.storage[s].unprotected],
                }
                for s in self.unit
            },
        }


def scope_of(project: Project, requested: list[str], no_deps: bool = False) -> list[str]:
    for s in requested:
        project.service(s)  # raises a clear error for an unknown service
    if not requested:
        return sorted(project.services)
    out, todo = set(requested), list(requested)
    while todo and not no_deps:
        for d in project.services[todo.pop()].depends_on:
            if d not in out and d in project.services:
                out.add(d)
                todo.append(d)
    return sorted(out)


def record_running(project: Project, scope: list[str]) -> dict[str, Running]:
    """What runs now, read before any pull: image ID and repo digest per service."""
    running: dict[str, Running] = {}
    images: dict[str, docker.ImageInfo | None] = {}  # twenty services often share one image
    for c in docker.project_containers(project.name):
        if c.service not in scope:
            continue
        r = running.get(c.service)
        if r is None:
            if c.image_id not in images:
                images[c.image_id] = docker.image_info(c.image_id)
            info = images[c.image_id]
            digest = info.digest_for(c.image_ref) if info else None
            running[c.service] = Running(c.service, [c.id], c.image_id, digest)
        else:
            r.container_ids.append(c.id)
    return running


def wanted_ref(project: Project, pins: PinFile, service: str) -> str | None:
    return pins.image_for(service) or project.services[service].image


def detect_changes(
    project: Project,
    pins: PinFile,
    running: dict[str, Running],
    remote: dict[str, str] | None = None,
) -> dict[str, Change]:
    """Services whose container would run another image. ``remote`` maps service -> the
    registry's current repo digest (for ``plan``); otherwise local images are compared."""
    changes: dict[str, Change] = {}
    images: dict[str, docker.ImageInfo | None] = {}
    new_info: dict[str, docker.ImageInfo | None] = {}

    def image(ref: str) -> docker.ImageInfo | None:
        if ref not in images:
            images[ref] = docker.image_info(ref)
        return images[ref]

    for svc, r in running.items():
        ref = wanted_ref(project, pins, svc)
        if not ref:
            continue  # build-only service: compose decides when to rebuild
        if remote and svc in remote and not pins.image_for(svc):
            new_digest = remote[svc]
            if r.repo_digest and new_digest.split("@")[-1] == r.repo_digest.split("@")[-1]:
                continue
            info = image(new_digest)
            changes[svc] = Change(svc, r.image_id, r.repo_digest, ref, info.id if info else None, new_digest)
        else:
            info = image(ref)
            if info is None or info.id == r.image_id:
                continue
            changes[svc] = Change(svc, r.image_id, r.repo_digest, ref, info.id, info.digest_for(ref))
        changes[svc].new_created = info.created if info else ""
        new_info[svc] = info
    # what changed: the old images' labels, all of them in one inspect
    old = docker.images_by_id([c.old_image_id for c in changes.values()])
    for svc, c in changes.items():
        c.labels = what_changed(old.get(c.old_image_id), new_info[svc])
    return changes


def map_storage(plan: Plan) -> None:
    project = plan.project
    mapper = plan.mapper = StorageMapper(project)
    mounts: dict[str, list[tuple[str, str, str, str]]] = {}
    for c in docker.project_containers(project.name):
        mounts.setdefault(c.service, []).extend(c.mounts)
        if c.status in docker.UP_STATES:
            plan.running_now.add(c.service)
    # Every service's storage, not only the scope's: a dependency that opted out of updates or
    # was left out by `up --no-deps` is still in the rollback unit when a changing service
    # depends on it (a Nextcloud migration rewrites the opted-out postgres's data).
    storage = {s: mapper.for_service(project.services[s], mounts.get(s, ())) for s in project.services}
    deps = {s: [d for d in project.services[s].depends_on if d in storage] for s in storage}
    paths = {s: [os.path.realpath(p.path) for p in st.protected] for s, st in storage.items()}
    plan.storage = storage
    plan.unit = rollback_unit(plan.changes, deps, paths) if plan.changes else []
    if plan.unit:
        reads = {s: mapper.read_paths(project.services[s]) for s in storage}
        around = neighbours(plan.unit, deps, reads, paths)
        plan.neighbours = {s: why for s, why in around.items() if s in plan.running_now}
        plan.around = set(around)  # stopped or not, their mounts are no one else's
        for d in plan.datasets():
            # only the children mounted inside the unit's own paths in d: not Docker's layer
            # datasets under a data-root dataset that holds a named volume
            inside = [os.path.realpath(p.path) for s in plan.unit for p in plan.storage[s].protected
                      if p.dataset.name == d.name]
            plan.below += [c for c in mapper.backend(d.backend).descendants(d, inside) if c not in plan.below]
        uses = docker.all_container_uses()
        plan.usage = classify_datasets(plan, mapper, uses)
        plan.outside = outside_writers(plan, uses)


# Networks every container is on without asking: reaching a service over them is not "using" it.
DEFAULT_NETWORKS = {"bridge", "host", "none"}


def outside_writers(plan: Plan, uses: list[docker.ContainerUse]) -> list[str]:
    """Containers compose cannot stop with the unit (another project's, or none) that share a
    network with a unit member: what they write to it during the upgrade would be rolled
    back with its data. One line per container, for ``plan`` and the upgrade's warnings."""
    project = plan.project.name
    members = set(plan.unit) | set(plan.neighbours)
    nets: dict[str, str] = {}  # network -> a unit member on it
    for c in sorted(uses, key=lambda c: c.service):
        if c.project == project and c.service in members:
            for n in c.networks:
                if n not in DEFAULT_NETWORKS:
                    nets.setdefault(n, c.service)
    out = []
    for c in uses:
        if c.project == project or not c.running:
            continue
        shared = sorted(n for n in c.networks if n in nets)
        if shared:
            out.append(
                f"{c.describe()} shares the network {shared[0]} with {nets[shared[0]]}: writes from it "
                f"during an upgrade would be rolled back"
            )
    return out


def classify_datasets(
    plan: Plan,
    mapper: StorageMapper,
    uses: list[docker.ContainerUse] | None = None,
    root_dir: str | None = None,
) -> dict[str, DatasetUse]:
    """Exclusive or shared, for every dataset of the unit (``storage/usage.py``): one
    ``docker ps -a`` + one batched inspect for every container on the host (``uses``, when the
    caller has them already), one listing of the directories on the way to the unit's paths,
    one read of mountinfo."""
    unit = set(plan.unit) | plan.around
    others = [
        c
        for c in (docker.all_container_uses() if uses is None else uses)
        if not (c.project == plan.project.name and c.service in unit)
    ]
    datasets = plan.datasets()
    if root_dir is None and datasets:
        root_dir = docker.data_root()
    mounts = mapper.mounts
    own_mounts = [d.files_at for d in datasets]
    all_unit_paths = [os.path.realpath(p.path) for s in plan.unit for p in plan.storage[s].protected]
    out: dict[str, DatasetUse] = {}
    for d in datasets:
        backend = mapper.backend(d.backend)
        unit_paths = [
            os.path.realpath(p.path)
            for s in plan.unit
            for p in plan.storage[s].protected
            if p.dataset.name == d.name
        ]
        if any(is_inside(d.files_at, u) for u in all_unit_paths):
            unit_paths.append(d.files_at)  # a child dataset inside a unit volume: all of it is the unit's
        use = analyse(
            d,
            d.files_at,
            unit_paths,
            others,
            root_dir,
            mounts,
            dataset_mounts=own_mounts,
            nested=backend.nested(d),
        )
        use.whole_refused = backend.whole_refused(d)
        if use.restore == "paths":
            use.method, use.proof = backend.prove_copy(d, use.unit_paths, backend.copy_method(d))
            if use.method == "copy":
                use.size = copy_size(use.unit_paths)
        out[d.name] = use
    return out


def registry_digests(project: Project) -> dict[str, str]:
    """service -> repo@sha256:… the registry serves now (``config --resolve-image-digests``)."""
    import yaml

    from composeguard import execute

    proc = execute.run(
        execute.compose_command(*project.invocation.args, "config", "--resolve-image-digests"),
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise ConfigError(f"cannot ask the registry for digests: {last_line(proc.stderr, '?')}")
    model = yaml.safe_load(proc.stdout) or {}
    out = {}
    for svc, raw in (model.get("services") or {}).items():
        img = (raw or {}).get("image") or ""
        if "@" in img:
            out[svc] = docker.repository(img) + "@" + img.split("@", 1)[1]
    return out
