"""Step 10 end to end: ``provision`` gives a database and a media service that keep their data
as folders of ONE shared dataset (Btrfs subvolume on the host, ZFS dataset in the guest) a
dataset each, at the same paths, with the record size each workload wants; killed at every
step it is finished or undone by ``recover``; and afterwards a failing upgrade of one service
restores its own dataset whole without touching the other."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from composeguard.faults import PROVISION_POINTS
from tests.lab import labproject as lab
from tests.lab.labproject import FAST, STORAGE, LabProject, app_service, meta_tree
from tests.treecompare import assert_same_tree

pytestmark = pytest.mark.lab

# What ZFS may decide for itself: holes (compression turns zero blocks into holes).
IGNORE = ("data",) if STORAGE == "zfs" else ()


def shared_app_layout(p: LabProject) -> Path:
    """One dataset holding db/ and media/ (two services' data) and a file nobody mounts."""
    shared = p.volume("shared", {"notes.txt": "the owner's notes\n"})
    db, media = shared / "db", shared / "media"
    db.mkdir()
    (db / "PG_VERSION").write_text("16\n")
    (db / "base").mkdir()
    (db / "base" / "1249").write_bytes(os.urandom(64 << 10))
    os.link(db / "base" / "1249", db / "base" / "1249.link")  # a hardlink inside the folder
    (db / "empty dir").mkdir()
    (db / "pg_hba.conf").symlink_to("PG_VERSION")
    os.setxattr(db / "PG_VERSION", "user.note", b"kept")
    os.chown(db, 999, 999)
    os.chmod(db, 0o700)
    media.mkdir()
    with open(media / "film.mkv", "wb") as f:
        f.write(os.urandom(1 << 20))
        f.truncate(8 << 20)  # a sparse tail
    (media / "日本 ü.srt").write_text("1\n00:00:01,000 --> 00:00:02,000\nhello\n")
    return shared


def deploy(p: LabProject, shared: Path) -> None:
    """db runs an image called postgres (the lab's app), media one called jellyfin; each has its
    folder at the path its workload is recognised by, and at /data, where the app writes."""
    p.push("lab/app:v1", "postgres")
    p.push("lab/app:v1", "jellyfin")
    db = app_service(f"{p.repo}/postgres:latest", shared / "db")
    db["volumes"] = [f"{shared / 'db'}:/var/lib/postgresql/data", f"{shared / 'db'}:/data"]
    media = app_service(f"{p.repo}/jellyfin:latest", shared / "media")
    media["volumes"] = [f"{shared / 'media'}:/media", f"{shared / 'media'}:/data"]
    p.write_compose({"x-composeguard": FAST, "services": {"db": db, "media": media}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def apps(lab_project: LabProject) -> Path:
    """db and media running on their folders of one shared dataset; the dataset's path."""
    shared = shared_app_layout(lab_project)
    deploy(lab_project, shared)
    return shared


def data_tree(path: Path) -> dict:
    """meta_tree without provision's own tag on a new subvolume's root (Btrfs: an xattr)."""
    t = meta_tree(path)
    t[b""]["xattrs"].pop("trusted.composeguard.provisioned", None)
    return t


def started(p: LabProject, service: str) -> tuple[str, str, bool]:
    st = p.container(service)
    return st["Id"], st["State"]["StartedAt"], st["State"]["Running"]


def is_own_dataset(path: Path) -> bool:
    if STORAGE == "zfs":
        return os.path.ismount(path)
    return os.lstat(path).st_ino == 256


def leftovers(shared: Path) -> list[str]:
    return sorted(n for n in os.listdir(shared) if ".composeguard-provision-" in n)


@lab.same_on_zfs(
    "making a dataset at a folder's path and destroying it is tests/zfs/test_newdataset_zfs.py's; "
    "the copy and the containers are the same on either storage (3 min of TCG)"
)
def test_provision_gives_each_service_a_dataset_of_its_own(lab_project: LabProject, apps: Path) -> None:
    p, shared = lab_project, apps
    before = {n: meta_tree(shared / n) for n in ("db", "media")}
    notes = (shared / "notes.txt").stat()

    # Without --apply: what it would do, and nothing done.
    r = p.cg("provision", "db", "media")
    assert r.returncode == 0, r.stderr
    assert f"at {shared / 'db'}" in r.stdout and f"at {shared / 'media'}" in r.stdout, r.stdout
    if STORAGE == "zfs":
        assert "recordsize=8K" in r.stdout and "recordsize=1M" in r.stdout, r.stdout
    assert "would stop and restart" in r.stdout, r.stdout
    assert not is_own_dataset(shared / "db") and not is_own_dataset(shared / "media")

    r = p.cg("provision", "db", "media", "--apply")

    assert r.returncode == 0, r.stderr
    for n in ("db", "media"):
        assert is_own_dataset(shared / n), f"{n} is not a dataset of its own"
        assert_same_tree(before[n], data_tree(shared / n), ignore=IGNORE)
    if STORAGE == "zfs":
        sizes = lab.zfs("get", "-H", "-p", "-o", "name,value", "recordsize", "-r", p.datasets[0])
        assert f"{p.datasets[0]}/db\t8192" in sizes and f"{p.datasets[0]}/media\t1048576" in sizes, sizes
    assert leftovers(shared) == [], "the originals are deleted once verified"
    assert (shared / "notes.txt").stat().st_mtime_ns == notes.st_mtime_ns
    assert started(p, "db")[2] and started(p, "media")[2], "the containers run again"
    assert p.history()[-1]["command"] == "provision" and p.history()[-1]["outcome"] == "committed"


@lab.same_on_zfs("a ZFS dataset's whole restore is the seed story's (this one takes 7 min under TCG)")
def test_then_a_failing_upgrade_restores_its_own_dataset_only(lab_project: LabProject, apps: Path) -> None:
    p, shared = lab_project, apps
    before = meta_tree(shared / "db")
    r = p.cg("provision", "db", "media", "--apply")
    assert r.returncode == 0, r.stderr

    # A failing upgrade of db now restores db's own dataset whole; media is never touched.
    media_before = started(p, "media")
    media_tree = meta_tree(shared / "media")
    p.push("lab/app:v2", "postgres")
    r = p.cg("up", "-d", "--pull", "always")
    assert r.returncode == 3, r.stderr
    last = p.history()[-1]
    assert last["outcome"] == "rolled-back" and not last["restores"], "restored whole, not by directory"
    assert [s["dataset"]["name"] for s in last["snapshots"]] == [
        f"{p.datasets[0]}/db" if STORAGE == "zfs" else str(shared / "db")
    ]
    assert_same_tree(before, data_tree(shared / "db"), ignore=IGNORE)
    assert started(p, "media") == media_before, "media was never stopped"
    assert_same_tree(media_tree, meta_tree(shared / "media"), ignore=IGNORE)


@lab.same_on_zfs("the undo and finish logic is the same on either storage; the ZFS run proves create/destroy")
@pytest.mark.parametrize("point", PROVISION_POINTS)
def test_kill_provision_at_every_step(
    lab_project: LabProject, apps: Path, tmp_path: Path, point: str
) -> None:
    p, shared = lab_project, apps
    before = {n: meta_tree(shared / n) for n in ("db", "media")}

    lab.kill_at(p, point, tmp_path, signal.SIGKILL, args=("provision", "db", "media", "--apply"))
    guarded = p.cg("up", "-d")
    r = p.cg("recover")

    lab.one_line(guarded, 1, "provision", "interrupted", "recover", alone=False)
    assert r.returncode == 0, r.stderr
    finished = PROVISION_POINTS.index(point) >= PROVISION_POINTS.index("provision-verified")
    for n in ("db", "media"):
        assert is_own_dataset(shared / n) == finished, (n, point)
        assert_same_tree(before[n], data_tree(shared / n), ignore=IGNORE)
    assert leftovers(shared) == []
    assert started(p, "db")[2] and started(p, "media")[2], "the containers run again"
    assert p.history()[-1]["outcome"] == ("committed" if finished else "rolled-back")
    assert p.cg("recover").stdout.startswith("nothing to recover")


@lab.same_on_zfs("the refusal is storage-independent")
def test_hardlink_across_the_new_boundary_is_refused(lab_project: LabProject, apps: Path) -> None:
    p, shared = lab_project, apps
    os.link(shared / "notes.txt", shared / "db" / "notes-link")
    before = meta_tree(shared)
    ids = started(p, "db")

    r = p.cg("provision", "db", "--apply")

    lab.one_line(r, 2, "hardlinked", "notes-link", "nothing was changed")
    assert_same_tree(before, meta_tree(shared))
    assert started(p, "db") == ids


def test_doctor_reports_sharing_tuning_network_gpu_and_cpus(lab_project: LabProject) -> None:
    """No container needs to run: doctor reads the compose file and the host."""
    p = lab_project
    shared = shared_app_layout(p)
    gpu = {
        "image": "lab/busybox:1",
        "networks": ["proxy"],
        "cpuset": "0",
        "deploy": {"resources": {"reservations": {"devices": [
            {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]}}},
    }
    db = {"image": f"{p.repo}/postgres:16", "volumes": [f"{shared / 'db'}:/var/lib/postgresql/data"],
          "cpuset": "0-1"}
    media = {"image": f"{p.repo}/jellyfin:10", "volumes": [f"{shared / 'media'}:/media"]}
    p.write_compose({
        "services": {"db": db, "media": media, "transcoder": gpu},
        "networks": {"proxy": {"external": True, "name": f"{p.name}-proxy-missing"}},
    })

    r = p.cg("doctor", "--json")

    assert r.returncode == 7, r.stderr  # errors: the missing network, the GPU
    doc = json.loads(r.stdout)
    found = {(f["service"], f["area"], f["severity"]): f for f in doc["findings"]}
    assert doc["exit"] == 7
    shares = [f for f in doc["findings"] if f["area"] == "storage" and "shares" in f["message"]]
    assert {f["service"] for f in shares} == {"db", "media"}, shares
    assert all("composeguard provision" in f["fix"] for f in shares)
    net = found[("", "network", "error")]  # one line per missing network, naming who uses it
    assert f"{p.name}-proxy-missing" in net["message"] and "transcoder" in net["message"], net
    assert ("transcoder", "gpu", "error") in found, doc
    overlap = [f for f in doc["findings"] if f["area"] == "cpu" and f["severity"] == "warning"]
    assert any("db" in f["message"] and "transcoder" in f["message"] for f in overlap), overlap
    if STORAGE == "zfs":
        tuning = [f for f in doc["findings"] if "recordsize" in f["message"]]
        assert any(f["service"] == "db" and "8K" in f["message"] for f in tuning), tuning
        assert any(f["service"] == "media" and "1M" in f["message"] for f in tuning), tuning

    text = p.cg("doctor")
    assert text.returncode == 7
    for f in shares:
        assert f["message"] in text.stdout
    assert lab.run(["docker", "network", "ls", "-q", "--filter", f"name={p.name}-proxy-missing"]).stdout == ""


@lab.same_on_zfs("--keep-old only skips the deletion: the same on either storage")
def test_keep_old_leaves_the_original_beside_the_new_dataset(lab_project: LabProject, apps: Path) -> None:
    p, shared = lab_project, apps
    before = meta_tree(shared / "db")

    r = p.cg("provision", "db", "--keep-old")  # without --apply: nothing happens
    assert r.returncode == 0 and leftovers(shared) == [] and not is_own_dataset(shared / "db")
    r = p.cg("provision", "db", "--apply", "--keep-old")

    assert r.returncode == 0, r.stderr
    (kept,) = leftovers(shared)
    assert kept.startswith("db.composeguard-provision-") and kept in r.stderr
    assert_same_tree(before, meta_tree(shared / kept))
    assert_same_tree(before, data_tree(shared / "db"))
    assert is_own_dataset(shared / "db") and not is_own_dataset(shared / "media")
