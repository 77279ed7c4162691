"""A project mixing a ZFS dataset and a Btrfs subvolume: one failed upgrade, both restored.
Runs inside the OpenZFS guest with its Docker lab (lab/zfs-guest.sh --docker)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.lab.labproject import GUEST_FULL, LabProject, run, tree

pytestmark = [
    pytest.mark.zfs,
    pytest.mark.skipif(
        os.environ.get("COMPOSEGUARD_IN_ZFS_GUEST") != "1"
        or os.environ.get("COMPOSEGUARD_LAB_STORAGE") != "zfs",
        reason="runs inside the OpenZFS guest with Docker (lab/zfs-guest.sh --docker)",
    ),
    # Six minutes of TCG: snapshots and restores are made per backend (storage/base.by_backend),
    # each backend's proven on its own (the seed story on ZFS, every Btrfs scenario on the host).
    pytest.mark.skipif(
        not GUEST_FULL, reason="a Docker scenario in the guest: COMPOSEGUARD_ZFS_FULL=1 runs it"
    ),
]

SLOW_HEALTH = {"interval": "5s", "timeout": "30s", "start_period": "20s", "retries": 3}


@pytest.fixture
def btrfs_in_guest(tmp_path: Path):
    """A small Btrfs loop filesystem inside the guest, next to the ZFS pool."""
    lab = Path(os.environ["COMPOSEGUARD_ZFS_MNT"]).parent
    img, mnt = lab / "mixed-btrfs.img", lab / "mixed-btrfs"
    run(["modprobe", "btrfs"])
    run(["modprobe", "loop"])
    img.unlink(missing_ok=True)
    run(["truncate", "-s", "400M", str(img)], check=True)
    run(["mkfs.btrfs", "-q", str(img)], check=True)
    mnt.mkdir(exist_ok=True)
    run(["mount", "-o", "loop", str(img), str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)
        img.unlink(missing_ok=True)


def test_failed_upgrade_restores_a_zfs_dataset_and_a_btrfs_subvolume(
    lab_project: LabProject, btrfs_in_guest: Path
) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    p.push("lab/app:v1", "db")
    app_vol = p.volume("app", {"cache.txt": "app cache\n"})  # a ZFS dataset
    db_vol = btrfs_in_guest / f"{p.name}-db"
    run(["btrfs", "subvolume", "create", str(db_vol)], check=True)
    (db_vol / "db.txt").write_text("precious rows\n")
    p.write_compose(
        {
            "x-composeguard": {"timeout": 240, "settle": 10},
            "services": {
                "db": {
                    "image": f"{p.repo}/db:latest",
                    "volumes": [f"{db_vol}:/data"],
                    "healthcheck": SLOW_HEALTH,
                },
                "app": {
                    "image": f"{p.repo}/app:latest",
                    "volumes": [f"{app_vol}:/data"],
                    "depends_on": ["db"],
                    "healthcheck": SLOW_HEALTH,
                    "environment": {"MIGRATE_URL": "http://db:8080/cgi-bin/migrate"},
                },
            },
        }
    )
    assert p.cg("up", "-d", "--wait").returncode == 0
    before = {"app": tree(app_vol), "db": tree(db_vol)}
    p.push("lab/app:v2", "app")
    plan = p.cg("plan")
    assert f"would snapshot zfs {os.environ['COMPOSEGUARD_ZFS_POOL']}/{p.name}-app" in plan.stdout
    assert f"would snapshot btrfs {db_vol}" in plan.stdout

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, r.stderr
    assert v1 in p.running_digests("app")
    assert tree(app_vol) == before["app"]
    assert tree(db_vol) == before["db"]
    backends = sorted(s["dataset"]["backend"] for s in p.history()[-1]["snapshots"])
    assert backends == ["btrfs", "zfs"]
