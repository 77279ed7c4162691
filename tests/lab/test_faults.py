"""Faults from outside: dockerd restarted in the middle of the probe, a full Btrfs pool."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.labproject import LAB, LabProject, composeguard_bin, one_line, run, tree

# Restarting dockerd stops every other test's containers: these run alone (lab/test.sh).
pytestmark = [pytest.mark.lab, pytest.mark.serial]
ROOT = Path(__file__).resolve().parents[2]


def restart_dockerd() -> None:
    pid = int((LAB / "dockerd.pid").read_text())
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    time.sleep(3)  # composeguard probes while the daemon is away
    r = run(["bash", str(ROOT / "lab/lab.sh"), "up"])
    assert r.returncode == 0, r.stderr


def test_dockerd_restarted_during_the_probe(lab_project: LabProject, tmp_path: Path) -> None:
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.subvolume("app", {"db.txt": "rows\n"})
    p.write_compose({"x-composeguard": {"timeout": 90, "settle": 3}, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"], "restart": "always"}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    v3 = p.push("lab/app:v3", "app")
    marker = tmp_path / "paused"
    env = {**p.env, "COMPOSEGUARD_TEST_PAUSE_AT": "probing", "COMPOSEGUARD_TEST_PAUSE_FILE": str(marker),
           "COMPOSEGUARD_TEST_PAUSE_SECONDS": "2"}
    proc = subprocess.Popen([composeguard_bin(), "up", "-d", "--pull", "always"], cwd=p.dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    restart_dockerd()
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert v3 in p.running_digests("app")
    assert p.history()[-1]["outcome"] == "committed"
    assert p.container("app")["State"]["Health"]["Status"] == "healthy"


@pytest.fixture
def small_pool():
    img, mnt = LAB / "small-pool.img", LAB / "small-pool"
    mnt.mkdir(exist_ok=True)
    if subprocess.run(["mountpoint", "-q", str(mnt)]).returncode == 0:
        run(["umount", str(mnt)], check=True)
    img.unlink(missing_ok=True)
    run(["truncate", "-s", "300M", str(img)], check=True)
    run(["mkfs.btrfs", "-q", str(img)], check=True)
    run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        run(["umount", "-l", str(mnt)])
        img.unlink(missing_ok=True)


def test_full_pool_refuses_before_changing_anything(lab_project: LabProject, small_pool: Path) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = small_pool / "app"
    run(["btrfs", "subvolume", "create", str(vol)], check=True)
    (vol / "db.txt").write_text("rows\n")
    filler = small_pool / "filler"
    with open(filler, "wb") as f:  # fill the pool up
        try:
            while True:
                f.write(os.urandom(1 << 20))
                f.flush()
        except OSError:
            pass
    p.write_compose({"x-composeguard": {"timeout": 60, "settle": 3}, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    cid = p.container("app")["Id"]
    before = tree(vol)
    p.push("lab/app:v3", "app")

    r = p.cg("up", "-d", "--pull", "always")

    one_line(r, 1, "free", "nothing was changed", alone=False)
    assert p.container("app")["Id"] == cid
    assert v1 in p.running_digests("app")
    assert tree(vol) == before
    assert p.history() == []
    assert not (small_pool / ".composeguard-snapshots").exists()
    p.compose("down", "-t", "1")
