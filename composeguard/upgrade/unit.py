"""The rollback unit: which services go back together when an upgrade fails.

The services whose image changes, plus what they depend on (transitively: a Nextcloud
upgrade migrates the schema inside the *postgres* volume), plus every service that uses the
same data as any of those: a host path equal to, inside or around one of theirs (that data goes
back too, so the service must be stopped and restarted). Two services that merely keep their
data in different directories of one dataset are NOT tied together: a shared dataset is
restored directory by directory (see ``storage/usage.py``), so the other service keeps running.

Around the unit are its *neighbours*: services that use a unit member without their own data
going back: they depend on one (``depends_on``, transitively, any condition: a ``worker``
writing into the ``db`` an upgrade migrates) or read its data (``- ./html:/srv:ro``, nginx in
front of Nextcloud). Their data is not restored (it cannot change: they are stopped before
the snapshot and stay stopped until the upgrade is committed or rolled back), but every write
they made to a restored service meanwhile would be lost, so they are quiesced with the unit.
Pure functions: no Docker, no storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from composeguard.storage.mounts import paths_overlap


def rollback_unit(
    changed: Iterable[str],
    depends_on: Mapping[str, Iterable[str]],
    data_paths: Mapping[str, Iterable[str]],
) -> list[str]:
    """Smallest set containing ``changed`` that is closed under ``depends_on`` and under
    "uses overlapping data" (``data_paths``: service -> host paths of its data volumes).
    Returned in a stable order (sorted)."""
    unit = set(changed)
    paths = {svc: list(ps) for svc, ps in data_paths.items()}
    todo = list(unit)
    while todo:
        svc = todo.pop()
        neighbours = set(depends_on.get(svc, ()))
        for other, theirs in paths.items():
            if other not in unit and any(paths_overlap(a, b) for a in paths.get(svc, ()) for b in theirs):
                neighbours.add(other)
        for n in neighbours - unit:
            if n in depends_on or n in paths:
                unit.add(n)
                todo.append(n)
    return sorted(unit)


def dependencies_of(services: Iterable[str], depends_on: Mapping[str, Iterable[str]]) -> set[str]:
    """Everything ``services`` depend on, transitively (not the services themselves unless a
    cycle leads back to them)."""
    out: set[str] = set()
    todo = list(services)
    while todo:
        for d in depends_on.get(todo.pop(), ()):
            if d not in out:
                out.add(d)
                todo.append(d)
    return out


def neighbours(
    unit: Iterable[str],
    depends_on: Mapping[str, Iterable[str]],
    read_paths: Mapping[str, Iterable[str]],
    data_paths: Mapping[str, Iterable[str]],
) -> dict[str, str]:
    """The services outside ``unit`` that use it: service -> why. A service that depends on
    a unit member or on a neighbour (transitively), or that reads (``read_paths``: its
    read-only volumes' host paths) data of a unit member (``data_paths``)."""
    members = set(unit)
    unit_paths = [p for s in members for p in data_paths.get(s, ())]
    out: dict[str, str] = {}
    for svc, reads in read_paths.items():
        if svc in members:
            continue
        hit = next((r for r in reads for u in unit_paths if paths_overlap(r, u)), None)
        if hit is not None:
            owner = next(s for s in sorted(members) for u in data_paths.get(s, ()) if paths_overlap(hit, u))
            out[svc] = f"reads {hit} (read-only), data of {owner}"
    changed = True
    while changed:  # depends_on, any depth: a->b->db puts both a and b around a unit with db
        changed = False
        for svc, deps in sorted(depends_on.items()):
            if svc in members or svc in out:
                continue
            used = next((d for d in deps if d in members or d in out), None)
            if used is not None:
                whose = "in the rollback unit" if used in members else "stopped with it"
                out[svc] = f"depends on {used} ({whose})"
                changed = True
    return out


def start_order(services: Iterable[str], depends_on: Mapping[str, Iterable[str]]) -> list[str]:
    """Dependencies first (a topological order; cycles are left to compose to report)."""
    wanted = set(services)
    out: list[str] = []
    seen: set[str] = set()

    def visit(s: str, stack: tuple[str, ...] = ()) -> None:
        if s in seen or s in stack:
            return
        for d in depends_on.get(s, ()):
            if d in wanted:
                visit(d, (*stack, s))
        seen.add(s)
        out.append(s)

    for s in sorted(wanted):
        visit(s)
    return out
