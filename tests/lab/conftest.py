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
