"""The rollback unit: which services go back together when an upgrade fails.

The services whose image changes, plus what they depend on (transitively: a Nextcloud
upgrade migrates the schema inside the *postgres* volume), plus every service that shares a
dataset with any of those (its data goes back too, so it must be stopped and restarted).
Pure functions: no Docker, no storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def rollback_unit(
    changed: Iterable[str],
    depends_on: Mapping[str, Iterable[str]],
    datasets: Mapping[str, Iterable[str]],
) -> list[str]:
    """Smallest set containing ``changed`` that is closed under ``depends_on`` and under
    "shares a dataset with". Returned in a stable order (sorted)."""
    unit = set(changed)
    by_dataset: dict[str, set[str]] = {}
    for svc, ds in datasets.items():
        for d in ds:
            by_dataset.setdefault(d, set()).add(svc)
    todo = list(unit)
    while todo:
        svc = todo.pop()
        neighbours = set(depends_on.get(svc, ()))
        for d in datasets.get(svc, ()):
            neighbours |= by_dataset.get(d, set())
        for n in neighbours - unit:
            if n in depends_on or n in datasets:
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
