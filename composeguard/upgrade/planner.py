"""Work out what an upgrade would do: which services change, the rollback unit, the storage.

Shared by ``plan`` (changes nothing) and the guarded ``up``/``update`` (which then act on it).
The storage half (the datasets, the unit, who else uses them) is plan_storage.py.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from composeguard.compose import docker, images, reads
from composeguard.compose.project import Project
from composeguard.errors import ConfigError, last_line
from composeguard.pins.pinfile import PinFile
from composeguard.storage.base import Dataset
from composeguard.storage.resolve import NotProtected, ServiceStorage, StorageMapper
from composeguard.storage.usage import DatasetUse
from composeguard.upgrade.policy import what_changed
from composeguard.upgrade.unit import dependencies_of


@dataclass
class Running:
    service: str
    container_ids: list[str]
    image_id: str
    repo_digest: str | None  # repo@sha256:… of the running image in the service's repository
    image: images.ImageInfo | None = field(default=None, repr=False)  # as read then (its labels)


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


ImagesInUse = dict[str, "images.ImageInfo | None"]


def images_in_use(project: Project) -> ImagesInUse | None:
    """The images the project's containers run, by ID, from one listing and one inspect per
    image (no container inspect): what must be read before a pull moves a tag. None when only
    the CLI answers (its listing has no image IDs)."""
    listed = reads.api_listing(f"com.docker.compose.project={project.name}")
    if listed is None:
        return None
    return {i: images.image_info(i) for i in sorted({str(c.get("ImageID") or "") for c in listed} - {""})}


def record_running(
    project: Project, scope: list[str], read_before: ImagesInUse | None = None
) -> dict[str, Running]:
    """What runs now: image ID and repo digest per service. Read before any pull, or only the
    containers while the pull runs when their images were read before it (``read_before``,
    images_in_use): the repo digests come from those reads, not from what the pull changed."""
    running: dict[str, Running] = {}
    seen: ImagesInUse = dict(read_before or {})  # twenty services often share one image
    for c in docker.project_containers(project.name):
        if c.service not in scope:
            continue
        r = running.get(c.service)
        if r is None:
            if c.image_id not in seen:
                seen[c.image_id] = images.image_info(c.image_id)
            info = seen[c.image_id]
            digest = info.digest_for(c.image_ref) if info else None
            running[c.service] = Running(c.service, [c.id], c.image_id, digest, info)
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
    seen: dict[str, images.ImageInfo | None] = {}
    new_info: dict[str, images.ImageInfo | None] = {}

    def image(ref: str) -> images.ImageInfo | None:
        if ref not in seen:
            seen[ref] = images.image_info(ref)
        return seen[ref]

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
    # what changed: the old images' labels, as read with what runs (else all in one inspect)
    old = {r.image_id: r.image for r in running.values() if r.image}
    old |= images.images_by_id([c.old_image_id for c in changes.values() if c.old_image_id not in old])
    for svc, c in changes.items():
        c.labels = what_changed(old.get(c.old_image_id), new_info[svc])
    return changes


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
            out[svc] = images.repository(img) + "@" + img.split("@", 1)[1]
    return out
