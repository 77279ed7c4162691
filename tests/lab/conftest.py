from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.labproject import LabProject


@pytest.fixture
def lab_project(tmp_path: Path) -> Iterator[LabProject]:
    p = LabProject(tmp_path)
    try:
        yield p
    finally:
        p.destroy()


@pytest.fixture
def other_project(tmp_path: Path) -> Iterator[LabProject]:
    """A second project (B) beside lab_project (A), for layouts two projects share."""
    q = LabProject(tmp_path, prefix="b")
    try:
        yield q
    finally:
        q.destroy()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    from tests.lab import test_kill_recovery as k

    if k.KILL_RESULTS:
        tr = terminalreporter
        tr.write_sep("-", "kill at every step: final state")
        tr.write_line(f"{'storage':<9} {'step':<18} {'signal+then':<15} {'final state':<12} data check")
        for storage, point, then, state, data in k.KILL_RESULTS:
            tr.write_line(f"{storage:<9} {point:<18} {then:<15} {state:<12} {data}")
