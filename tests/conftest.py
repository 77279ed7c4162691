"""Shared pytest setup: lab tests need root and the running lab; unit tests need nothing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.lab.labproject import LabProject


def lab_available() -> str | None:
    """None when the lab is usable, else the reason it is not."""
    if os.geteuid() != 0:
        return "lab tests need root"
    if not shutil.which("docker"):
        return "docker CLI not installed"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "dockerd is not running (run lab/lab.sh up)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    lab_items = [i for i in items if i.get_closest_marker("lab")]
    if not lab_items:
        return
    reason = lab_available()
    if reason is None:
        return
    if os.environ.get("COMPOSEGUARD_REQUIRE_LAB") == "1":
        raise pytest.UsageError(f"the lab is required but not available: {reason}")
    for item in lab_items:
        item.add_marker(pytest.mark.skip(reason=reason))


# The throwaway lab projects (tests/lab, and tests/zfs inside the guest).
@pytest.fixture
def lab_project(tmp_path: Path) -> Iterator[LabProject]:
    from tests.lab.labproject import LabProject

    p = LabProject(tmp_path)
    try:
        yield p
    finally:
        p.destroy()


@pytest.fixture
def other_project(tmp_path: Path) -> Iterator[LabProject]:
    """A second project (B) beside lab_project (A), for layouts two projects share."""
    from tests.lab.labproject import LabProject

    q = LabProject(tmp_path, prefix="b")
    try:
        yield q
    finally:
        q.destroy()
