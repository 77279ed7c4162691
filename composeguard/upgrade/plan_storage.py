"""The storage half of a plan: each service's datasets, the rollback unit and its neighbours,
whether each dataset is the unit's alone or shared (``storage/usage.py``), and the containers
outside the unit that write into it over a network. Fills in a ``planner.Plan``."""

from __future__ import annotations

import os

from composeguard.compose import docker
from composeguard.storage.resolve import StorageMapper
from composeguard.storage.usage import DatasetUse, analyse, is_inside
from composeguard.upgrade.planner import Plan
from composeguard.upgrade.restorecheck import copy_size
from composeguard.upgrade.unit import neighbours, rollback_unit


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
