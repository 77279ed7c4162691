from __future__ import annotations

import json

import pytest

# Under pytest-xdist (lab/test.sh runs the host lab tests three at a time) each worker keeps its
# own kill-table rows; they travel to the controller in workeroutput and are printed there.
_FROM_WORKERS: list[tuple[str, str, str, str, str]] = []


def pytest_sessionfinish(session: pytest.Session) -> None:
    from tests.lab import test_kill_recovery as k

    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["kill_results"] = json.dumps(k.KILL_RESULTS)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001 - xdist's WorkerController
    rows = getattr(node, "workeroutput", {}).get("kill_results")
    if rows:
        _FROM_WORKERS.extend(tuple(r) for r in json.loads(rows))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    from tests.lab import test_kill_recovery as k

    order = {p: i for i, p in enumerate((*k.POINTS, *k.DIR_POINTS))}
    rows = sorted(k.KILL_RESULTS + _FROM_WORKERS, key=lambda r: (r[0], order.get(r[1], len(order)), r[2]))
    if rows:
        tr = terminalreporter
        tr.write_sep("-", "kill at every step: final state")
        tr.write_line(f"{'storage':<9} {'step':<18} {'signal+then':<15} {'final state':<12} data check")
        for storage, point, then, state, data in rows:
            tr.write_line(f"{storage:<9} {point:<18} {then:<15} {state:<12} {data}")
