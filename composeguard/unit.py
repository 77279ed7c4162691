"""The rollback unit: which services go back together when an upgrade fails.

The services whose image changes, plus what they depend on (transitively: a Nextcloud
upgrade migrates the schema inside the *postgres* volume), plus every service that uses the
same data as any of those: a host path equal to, inside or around one of theirs (that data goes
back too, so the service must be stopped and restarted). Two services that merely keep their
data in different directories of one dataset are NOT tied together: a shared dataset is
restored directory by directory (see ``storage/usage.py``), so the other service keeps running.
Pure functions: no Docker, no storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def paths_overlap(a: str, b: str) -> bool:
    """Whether one of two absolute real paths is the other or lies inside it."""
    a, b = a.rstrip("/") or "/", b.rstrip("/") or "/"
    if a == b or a == "/" or b == "/":
        return True
    return a.startswith(b + "/") or b.startswith(a + "/")


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
