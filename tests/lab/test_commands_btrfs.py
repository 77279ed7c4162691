"""End to end on the lab: rollback/unpin/pins commands, compose's file discovery with the pin
override, named volumes bound to a subvolume, and the project lock."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, LabProject, bad_upgrade_is_rolled_back, tree

pytestmark = pytest.mark.lab

DATA = {"db.txt": "precious data D\n"}


def test_override_file_still_applies_next_to_the_pins(lab_project: LabProject) -> None:
    """No -f: compose loads compose.yaml + compose.override.yaml; composeguard must keep
    loading the override when it adds its pin file."""
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    (p.dir / "compose.override.yaml").write_text(
        "services:\n  app:\n    environment:\n      FROM_OVERRIDE: \"yes\"\n")
    assert p.cg("up", "-d", "--wait").returncode == 0
    p.push("lab/app:v2", "app")

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, r.stderr
    assert v1 in p.running_digests("app")
    assert "FROM_OVERRIDE=yes" in p.container("app")["Config"]["Env"]


def test_manual_rollback_of_a_committed_upgrade_then_unpin(lab_project: LabProject) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    before = tree(vol)
    v3 = p.push("lab/app:v3", "app")
    assert p.cg("up", "-d", "--pull", "always").returncode == 0
    (vol / "db.txt").write_text("written by v3 after the upgrade\n")
    txn = p.history()[-1]["id"]

    r = p.cg("rollback")

    assert r.returncode == 0, r.stderr
    assert v1 in p.running_digests("app")
    assert tree(vol) == before
    hist = p.history()[-1]
    assert hist["id"] == txn and hist["outcome"] == "rolled-back"
    failed = Path(hist["failed_states"][0])
    assert (failed / "db.txt").read_text() == "written by v3 after the upgrade\n"
    pins = p.cg("pins", "--json")
    assert v3 in pins.stdout
    assert p.cg("rollback", "nope").returncode == 2

    r = p.cg("unpin", "app")
    assert r.returncode == 0, r.stderr
    assert p.cg("pins").stdout.startswith("no pins")
    assert p.cg("unpin", "app").returncode == 2
    history = p.cg("pins", "--history")
    assert history.returncode == 0 and "released pins:" in history.stdout, history.stdout
    assert "unpinned by hand" in history.stdout and f"bad {v3}" in history.stdout, history.stdout
    r = p.cg("up", "-d")  # unpinned: the compose file's tag (v3, local) comes back, guarded
    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app")


def test_named_volume_bound_to_a_subvolume_is_protected(lab_project: LabProject) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({
        "x-composeguard": FAST,
        "services": {"app": {"image": f"{p.repo}/app:latest", "volumes": ["appdata:/data"]}},
        "volumes": {"appdata": {"driver": "local",
                                "driver_opts": {"type": "none", "o": "bind", "device": str(vol)}}},
    })
    assert p.cg("up", "-d", "--wait").returncode == 0

    bad_upgrade_is_rolled_back(p, v1, vol)

    assert p.history()[-1]["datasets"][0]["name"] == str(vol)
    p.compose("-f", "compose.yaml", "-f", str(p.state / "projects" / p.name / "pins.applied.yaml"),
              "down", "-v", "-t", "1")


def test_second_run_while_locked_exits_5(lab_project: LabProject) -> None:
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    lock = p.state / "projects" / p.name / "lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"4242\n")
        r = p.cg("up", "-d")
    finally:
        os.close(fd)
    assert r.returncode == 5, r.stderr
    assert "pid 4242" in r.stderr and "project " + p.name in r.stderr
    assert p.compose("ps", "-q").stdout.strip() == "", "nothing was started"
