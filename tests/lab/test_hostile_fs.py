"""Step 8, point 11: a hostile file system cannot turn root against the machine. The folders
next to a volume are often writable by others (a 0777 share, a container that keeps running):
whatever composeguard makes, renames or deletes there goes through directory descriptors, and
a name in its way that it did not make is refused, never used, followed or deleted."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, POOL, STORAGE, LabProject, app_service, run, tree
from tests.lab.test_shared_dataset import deploy_a, shared_layout, up_pausing_at

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="descriptor-relative code shared by both; planted on Btrfs"),
]


def txn_of(p: LabProject) -> str:
    [txn] = [d.name for d in p.snapshot_root().iterdir()]
    return txn


def is_subvolume(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and os.lstat(path).st_ino == 256


def test_a_symlink_planted_as_the_restore_copy_never_deletes_what_it_points_to(
    lab_project: LabProject, other_project: LabProject, tmp_path: Path
) -> None:
    """While the rollback is about to restore A's subvolume, a link named like composeguard's
    restore copy is planted next to it, pointing to ANOTHER app's subvolume. The old code took
    it for a half-made copy and ran `btrfs subvolume delete` through it. Now: refused with one
    line (exit 4, the snapshot kept), the other app's subvolume untouched; with the link gone,
    `recover` finishes the rollback."""
    p, q = lab_project, other_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.subvolume("app", {"db.txt": "rows of A\n"})
    victim = q.subvolume("data", {"precious.txt": "the other app's data\n"})
    p.write_compose({"x-composeguard": FAST, "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    before = tree(vol)
    p.push("lab/app:v2", "app")
    planted: list[Path] = []

    def plant() -> None:
        link = vol.parent / f".{vol.name}.composeguard-restore-{txn_of(p)}"
        link.symlink_to(victim)
        planted.append(link)

    proc, err = up_pausing_at(p, "restoring", plant, tmp_path)
    assert is_subvolume(victim) and (victim / "precious.txt").read_text() == "the other app's data\n"
    assert proc.returncode == 4, err
    assert str(planted[0]) in err and "not composeguard's copy" in err
    assert "Traceback" not in err
    planted[0].unlink()
    r = p.cg("recover")
    assert r.returncode == 0, r.stderr
    assert tree(vol) == before
    assert v1 in p.running_digests("app")
    assert (victim / "precious.txt").exists()


def test_a_folder_planted_as_the_staging_folder_is_not_used_or_deleted(
    lab_project: LabProject, tmp_path: Path
) -> None:
    """Directory-level restore in a shared subvolume: a world-writable folder planted under the
    staging name by another user. The old code used it as its staging folder (so that user
    could swap what was moved into place) and deleted it with its content afterwards. Now:
    refused, the folder and its file untouched; with it gone, `recover` finishes."""
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    shared = shared_layout(p)
    deploy_a(p, shared / "a")
    before = tree(shared / "a")
    p.push("lab/app:v2", "app")
    planted: list[Path] = []

    def plant() -> None:
        d = shared / f".a.composeguard-restore-{txn_of(p)}"
        d.mkdir()
        (d / "keep.txt").write_text("someone else's file\n")
        os.chown(d, 65534, 65534)
        os.chmod(d, 0o777)
        planted.append(d)

    proc, err = up_pausing_at(p, "failed-snapshotted", plant, tmp_path)
    assert proc.returncode == 4, err
    assert str(planted[0]) in err and "was not made by composeguard" in err
    assert (planted[0] / "keep.txt").read_text() == "someone else's file\n"
    assert sorted(os.listdir(planted[0])) == ["keep.txt"], "nothing of A's was put in it"
    subprocess.run(["rm", "-rf", str(planted[0])], check=True)
    r = p.cg("recover")
    assert r.returncode == 0, r.stderr
    assert tree(shared / "a") == before
    assert v1 in p.running_digests("app")


def test_a_snapshot_folder_others_can_change_is_refused_before_anything_stops(
    lab_project: LabProject,
) -> None:
    """x-composeguard.btrfs_snapshot_dir names a folder anyone can write: a user could plant a
    link where composeguard writes its tags file as root, or take the snapshots' data. Refused
    at plan time (exit 2, nothing stopped, no snapshot)."""
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.subvolume("app", {"db.txt": "rows\n"})
    snapdir = POOL / f"{p.name}-snaps"
    snapdir.mkdir(mode=0o777)
    os.chmod(snapdir, 0o777)
    try:
        settings = {**FAST, "btrfs_snapshot_dir": str(snapdir)}
        p.write_compose({"x-composeguard": settings,
                         "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
        assert p.cg("up", "-d", "--wait").returncode == 0
        started = p.container("app")["State"]["StartedAt"]
        p.push("lab/app:v2", "app")
        r = p.cg("up", "-d", "--pull", "always")
        assert r.returncode == 2, r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert str(snapdir) in line and "only root can change" in line and "nothing was changed" in line
        assert p.container("app")["State"]["StartedAt"] == started, "A was stopped"
        assert os.listdir(snapdir) == []
    finally:
        run(["rm", "-rf", str(snapdir)])
