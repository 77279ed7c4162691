"""Step 7 end to end: two compose projects keep their data in ONE Btrfs subvolume (or, inside
the OpenZFS guest, one ZFS dataset) as ``a/`` and ``b/``, the Synology/Unraid/tank-appdata
layout. A's upgrade fails and is rolled back: A's directory goes back, and nothing else in
the dataset is touched — B keeps writing the whole time and its container is never stopped."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.lab.labproject import (
    FAST,
    STORAGE,
    ZFS_POOL,
    LabProject,
    app_service,
    composeguard_bin,
    meta_tree,
    one_line,
    poll_until,
    run,
    same_on_zfs,
    zfs,
)
from tests.treecompare import assert_same_tree

pytestmark = pytest.mark.lab

# $$: compose interpolates a single $ itself.
WRITER = "i=0; while true; do i=$$((i+1)); echo $$i >> /data/lines.txt; sleep 0.2; done"


def shared_layout(p: LabProject) -> Path:
    """One dataset with a/ (project A's data), b/ (project B's) and a file nobody mounts."""
    shared = p.volume("shared", {"notes.txt": "the owner's notes\n"})
    (shared / "a").mkdir()
    (shared / "a" / "db.txt").write_text("precious rows of A\n")
    (shared / "a" / "conf").mkdir()
    (shared / "a" / "conf" / "app.ini").write_text("[app]\nx=1\n")
    (shared / "a" / "link").symlink_to("conf/app.ini")
    (shared / "b").mkdir()
    return shared


def deploy_a(p: LabProject, data: Path, *also: str) -> None:
    svc = app_service(f"{p.repo}/app:latest", data)
    svc["volumes"] += list(also)
    p.write_compose({"x-composeguard": FAST, "services": {"app": svc}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr


def start_writer(q: LabProject, path: Path) -> dict:
    """Project B's writer appending numbered lines into ``path``; its container."""
    q.write_compose({
        "services": {
            "writer": {
                "image": "lab/busybox:1",
                "command": ["sh", "-c", WRITER],
                "volumes": [f"{path}:/data"],
                "stop_grace_period": "1s",
            }
        }
    })
    r = q.compose("up", "-d")
    assert r.returncode == 0, r.stderr
    return q.container("writer")


def up_pausing_at(p: LabProject, point: str, action, tmp: Path) -> tuple[subprocess.Popen, str]:
    """``up -d --pull always`` that holds 3 s at pause point ``point`` while ``action`` runs."""
    marker = tmp / f"at-{point}"
    env = {**p.env, "COMPOSEGUARD_TEST_PAUSE_AT": point, "COMPOSEGUARD_TEST_PAUSE_FILE": str(marker),
           "COMPOSEGUARD_TEST_PAUSE_SECONDS": "3"}
    proc = subprocess.Popen([composeguard_bin(), "up", "-d", "--pull", "always"], cwd=p.dir, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 900
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert marker.exists(), f"composeguard never reached {point}"
    action()
    _, err = proc.communicate(timeout=900)
    return proc, err


def lines_are_complete(path: Path) -> list[int]:
    """B's lines are 1, 2, 3 … with none missing (a restore of b/ would lose some)."""
    nums = [int(x) for x in path.read_text().split()]
    assert nums == list(range(1, len(nums) + 1)), "B lost lines"
    return nums


def still_writes(path: Path, after: int, what: str) -> None:
    """Wait until B's writer has more than ``after`` lines in ``path``, none missing (a lost
    line stays lost: the wait then fails, naming it)."""
    poll_until(lambda: len(lines_are_complete(path)) > after, 60, what)


@same_on_zfs(
    "the directory-level restore from a ZFS snapshot is tests/zfs' backend work (test_treecopy_zfs.py, "
    "test_zfs_restorecheck.py, the layouts of test_zfs_backend.py); another project's writes in a shared "
    "dataset on ZFS with Docker: test_trial.py's shared-dataset trial"
)
def test_failed_upgrade_restores_only_the_units_directory(
    lab_project: LabProject, other_project: LabProject, tmp_path: Path
) -> None:
    p, q = lab_project, other_project
    p.push("lab/app:v1", "app")
    shared = shared_layout(p)
    (shared / "a.conf").write_text("setting=1\n")  # A also binds one file of the dataset
    os.chmod(shared / "a.conf", 0o640)
    deploy_a(p, shared / "a", f"{shared / 'a.conf'}:/etc/a.conf")
    writer = start_writer(q, shared / "b")
    before_a = meta_tree(shared / "a")
    conf = os.lstat(shared / "a.conf")
    still_writes(shared / "b" / "lines.txt", 1, "B's writer to write its first lines")

    p.push("lab/app:v2", "app")  # rewrites a/, then fails its healthcheck
    plan = json.loads(p.cg("plan", "--json").stdout)
    [ds] = plan["datasets"]
    assert ds["restore"] == "paths" and ds["exclusive"] is False
    assert ds["paths"] == [str(shared / "a"), str(shared / "a.conf")]
    assert any("writer" in u for u in ds["used_by"]), ds["used_by"]
    assert any("notes.txt" in u for u in ds["used_by"]), ds["used_by"]
    text = p.cg("plan").stdout
    assert "shared" in text and str(shared / "a") in text

    # While A's new version is being probed, the owner edits a file no container uses.
    def edit_notes() -> None:
        (shared / "notes.txt").write_text("edited during A's upgrade\n")
        (shared / "a.conf").write_text("setting=2 written by the failed version\n")

    proc, err = up_pausing_at(p, "probing", edit_notes, tmp_path)

    assert proc.returncode == 3, err
    assert "(shared: restores a, a.conf by " in err
    if STORAGE != "zfs":
        assert "by reflink" in err
    after_a = meta_tree(shared / "a")
    assert_same_tree(before_a, after_a)  # bytes, owners, modes, times, xattrs, links
    assert not (shared / "a" / "SCHEMA").exists(), "a file the new version made is gone"
    assert (shared / "notes.txt").read_text() == "edited during A's upgrade\n"
    assert (shared / "a.conf").read_text() == "setting=1\n", "the bind-mounted file is restored"
    now_conf = os.lstat(shared / "a.conf")
    assert (now_conf.st_mode, now_conf.st_mtime_ns) == (conf.st_mode, conf.st_mtime_ns)
    # B: same container, never stopped or restarted, no line lost, still writing.
    now = q.container("writer")
    assert now["Id"] == writer["Id"]
    assert now["State"]["StartedAt"] == writer["State"]["StartedAt"]
    assert now["State"]["Running"] and now["RestartCount"] == 0
    lines = shared / "b" / "lines.txt"
    still_writes(lines, len(lines_are_complete(lines)), "B's container still writes to b/")
    # Nothing of the restore is left next to a/; the failed state is kept and named.
    assert sorted(x.name for x in shared.iterdir()) == ["a", "a.conf", "b", "notes.txt"]
    txn = p.history()[-1]
    assert txn["outcome"] == "rolled-back"
    rec = txn["restores"][ds["dataset"]]
    assert rec["restore"] == "paths" and rec["progress"][str(shared / "a")]["swapped"]
    failed_a = Path(txn["failed_states"][0])
    if STORAGE == "zfs":
        try:
            assert (failed_a / "SCHEMA").read_text() == "schema: v2\n"
        finally:
            run(["umount", str(failed_a.parent)])
    else:
        assert (failed_a / "SCHEMA").read_text() == "schema: v2\n", "the failed state is kept"
    hist = p.cg("history").stdout
    assert "directory-level" in hist and "failed state" in hist


@same_on_zfs("the whole-dataset restore on ZFS is test_upgrade.py's seed story")
def test_exclusive_dataset_is_still_restored_whole(lab_project: LabProject) -> None:
    """A dataset that only holds the unit's volume: whole restore (no copy), as before."""
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.volume("app", {"db.txt": "rows\n"})
    p.write_compose({"x-composeguard": FAST, "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    p.push("lab/app:v2", "app")
    [ds] = json.loads(p.cg("plan", "--json").stdout)["datasets"]
    assert ds["exclusive"] is True and ds["restore"] == "whole"
    r = p.cg("up", "-d", "--pull", "always")
    assert r.returncode == 3, r.stderr
    txn = p.history()[-1]
    assert txn["restores"] == {}
    assert (vol / "db.txt").read_text() == "rows\n"


@same_on_zfs("the refusal is storage-independent and runs on Btrfs")
def test_other_container_using_the_units_path_is_refused(
    lab_project: LabProject, other_project: LabProject
) -> None:
    """Another project mounts a directory INSIDE A's data: no restore of A can leave it alone."""
    p, q = lab_project, other_project
    p.push("lab/app:v1", "app")
    shared = shared_layout(p)
    deploy_a(p, shared / "a")
    start_writer(q, shared / "a" / "conf")
    p.push("lab/app:v2", "app")
    before = meta_tree(shared / "a" / "conf")
    r = p.cg("up", "-d", "--pull", "always")
    one_line(r, 2, "is used by container", "Nothing was changed", alone=False)
    assert p.snapshots() == []
    assert p.container("app")["State"]["Running"]
    assert meta_tree(shared / "a" / "conf").keys() == before.keys()


@pytest.mark.skipif(STORAGE != "zfs", reason="ZFS child datasets: runs inside the OpenZFS guest")
def test_dataset_with_a_child_dataset(lab_project: LabProject, tmp_path: Path) -> None:
    """The volume is a dataset with a child dataset (uploads/): both are snapshotted in one
    atomic lzc_snapshot; the child is restored whole, the parent (which a rename would carry
    the child away with) entry by entry. It used to be refused."""
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", {"db.txt": "rows\n"})
    child = f"{ZFS_POOL}/{p.name}-app/uploads"
    zfs("create", child)
    (vol / "uploads" / "photo.txt").write_text("a photo\n")
    deploy_a(p, vol)
    before = meta_tree(vol)
    p.push("lab/app:v2", "app")
    plan = {d["dataset"]: d for d in json.loads(p.cg("plan", "--json").stdout)["datasets"]}
    assert plan[child]["restore"] == "whole"
    parent = plan[f"{ZFS_POOL}/{p.name}-app"]
    assert parent["restore"] == "paths" and "child datasets" in parent["whole_refused"]

    def damage_child() -> None:
        (vol / "uploads" / "photo.txt").write_text("overwritten by the failed version\n")

    proc, err = up_pausing_at(p, "probing", damage_child, tmp_path)

    assert proc.returncode == 3, err
    assert v1 in p.running_digests("app")
    assert_same_tree(before, meta_tree(vol))
    txn = p.history()[-1]
    snaps = sorted(s["name"].split("@")[0] for s in txn["snapshots"])
    assert snaps == sorted([f"{ZFS_POOL}/{p.name}-app", child])
    created = {zfs("get", "-H", "-p", "-o", "value", "createtxg", s["name"]) for s in txn["snapshots"]}
    assert len(created) == 1, "one atomic snapshot of the parent and its child"


@pytest.mark.skipif(STORAGE != "zfs", reason="the guest's Docker data-root is a ZFS dataset")
def test_named_and_anonymous_volumes_in_the_data_root(lab_project: LabProject, tmp_path: Path) -> None:
    """A local named volume and an anonymous one (compose keeps it across a recreate: step 8,
    point 2) live in Docker's data-root, here the guest's dataset POOL/docker as on a ZFS root.
    The data-root is never restored whole: only the volumes' _data directories go back."""
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    svc = app_service(f"{p.repo}/app:latest", Path("/unused"))
    svc["volumes"] = ["appdata:/data", "/state"]
    p.write_compose({"x-composeguard": FAST, "services": {"app": svc}, "volumes": {"appdata": {}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    mounts = {m["Destination"]: Path(m["Source"]) for m in p.container("app")["Mounts"]}
    named, anon = mounts["/data"], mounts["/state"]
    (named / "db.txt").write_text("rows in a named volume\n")
    (anon / "wal.txt").write_text("rows in an anonymous volume\n")
    before = {"named": meta_tree(named), "anon": meta_tree(anon)}
    p.push("lab/app:v2", "app")
    [ds] = json.loads(p.cg("plan", "--json").stdout)["datasets"]
    assert ds["restore"] == "paths" and any("data-root" in u for u in ds["used_by"]), ds
    assert ds["paths"] == sorted([str(named), str(anon)])

    def damage_anon() -> None:
        (anon / "wal.txt").write_text("overwritten by the failed version\n")

    try:
        proc, err = up_pausing_at(p, "probing", damage_anon, tmp_path)

        assert proc.returncode == 3, err
        assert v1 in p.running_digests("app")
        now = {m["Destination"]: m["Source"] for m in p.container("app")["Mounts"]}
        assert now["/state"] == str(anon), "compose kept the anonymous volume"
        assert_same_tree(before["named"], meta_tree(named))
        assert_same_tree(before["anon"], meta_tree(anon))
    finally:  # the data-root's snapshots are this test's to release
        release_snapshots_of(p)


def release_snapshots_of(p: LabProject) -> None:
    """The data-root's snapshots made for this project (p.destroy knows only its own datasets)."""
    for name in zfs("list", "-H", "-o", "name", "-t", "snapshot").split():
        if "@composeguard-" in name and zfs("get", "-H", "-o", "value", "composeguard:project",
                                             name).strip() == p.name:
            run(["zfs", "release", "composeguard", name])
            run(["zfs", "destroy", name])


@same_on_zfs("the refusal is storage-independent and runs on Btrfs")
@pytest.mark.parametrize("how", ["external-volume", "volumes_from"])
def test_data_shared_with_another_project_is_refused(
    lab_project: LabProject, other_project: LabProject, how: str
) -> None:
    """Step 8, point 3: an `external: true` volume (a local bind volume onto a subvolume) that
    another project mounts too, or another project's container reaching A's data through
    `volumes_from`, are uses of the same data: no rollback of A could leave B alone."""
    p, q = lab_project, other_project
    p.push("lab/app:v1", "app")
    sv = p.volume("ext", {"db.txt": "rows\n"})
    name = f"{p.name}-ext"
    run(["docker", "volume", "create", "--driver", "local", "--opt", "type=none", "--opt", "o=bind",
         "--opt", f"device={sv}", name], check=True)
    try:
        svc = app_service(f"{p.repo}/app:latest", sv)
        svc["volumes"] = ["ext:/data"]
        p.write_compose({"x-composeguard": FAST, "services": {"app": svc},
                         "volumes": {"ext": {"external": True, "name": name}}})
        assert p.cg("up", "-d", "--wait").returncode == 0
        writer = {"image": "lab/busybox:1", "command": ["sh", "-c", "sleep 3600"], "stop_grace_period": "1s"}
        if how == "external-volume":
            writer["volumes"] = ["ext:/data"]
            q.write_compose({"services": {"writer": writer},
                             "volumes": {"ext": {"external": True, "name": name}}})
        else:
            writer["volumes_from"] = [f"container:{p.container('app')['Name'].lstrip('/')}"]
            q.write_compose({"services": {"writer": writer}})
        assert q.compose("up", "-d").returncode == 0
        p.push("lab/app:v2", "app")
        cid = p.container("app")["Id"]

        r = p.cg("up", "-d", "--pull", "always")

        assert r.returncode == 2, r.stderr
        line = r.stderr.strip().splitlines()[-1]
        assert f"of project {q.name}" in line and "Nothing was changed" in line, line
        assert p.container("app")["Id"] == cid and p.history() == []
    finally:
        q.compose("down", "-t", "1", check=False)
        p.compose("down", "-t", "1", check=False)
        run(["docker", "volume", "rm", name])


@same_on_zfs("tests/zfs/test_zfs_restorecheck.py covers it on ZFS at the backend level")
def test_rollback_by_hand_asks_again_who_uses_the_dataset(
    lab_project: LabProject, other_project: LabProject
) -> None:
    """Step 13, point 2: an upgrade committed while the dataset held only A's folder; since then
    project B keeps its data in another folder of it. `composeguard rollback` must not trust the
    day of the upgrade: it restores A's folder only, and B's folder, data and container are left
    alone (a whole restore would take b/ out of its path while B writes into the kept state)."""
    p, q = lab_project, other_project
    p.push("lab/app:v1", "app")
    ds = p.volume("appdata")
    (ds / "a").mkdir()
    (ds / "a" / "db.txt").write_text("rows of v1\n")
    deploy_a(p, ds / "a")
    p.push("lab/app:v3", "app")  # a good upgrade
    [d] = json.loads(p.cg("plan", "--json").stdout)["datasets"]
    assert d["exclusive"] is True and d["restore"] == "whole"
    r = p.cg("up", "-d", "--pull", "always", "--wait")
    assert r.returncode == 0, r.stderr
    (ds / "a" / "db.txt").write_text("rows of v3\n")
    (ds / "b").mkdir()
    writer = start_writer(q, ds / "b")  # a week later: B moves in
    still_writes(ds / "b" / "lines.txt", 1, "B's writer to write its first lines")

    r = p.cg("rollback")

    assert r.returncode == 0, r.stderr
    assert "cannot be restored whole now" in r.stderr and f"restoring only {ds / 'a'}" in r.stderr
    assert (ds / "a" / "db.txt").read_text() == "rows of v1\n", "A's folder is back"
    now = q.container("writer")
    assert now["Id"] == writer["Id"] and now["State"]["StartedAt"] == writer["State"]["StartedAt"]
    lines = ds / "b" / "lines.txt"
    still_writes(lines, len(lines_are_complete(lines)), "B still writes into its folder")
    txn = p.history()[-1]
    assert txn["outcome"] == "rolled-back" and txn["restores"][d["dataset"]]["paths"] == [str(ds / "a")]


@same_on_zfs("the refusal is storage-independent and runs on Btrfs")
def test_rollback_by_hand_is_refused_when_someone_uses_the_units_data_now(
    lab_project: LabProject, other_project: LabProject
) -> None:
    """Since the upgrade, another project mounts a folder INSIDE A's data: no rollback can put
    A back without touching it, so `rollback` refuses before anything stops."""
    p, q = lab_project, other_project
    p.push("lab/app:v1", "app")
    ds = p.volume("appdata")
    (ds / "a").mkdir()
    deploy_a(p, ds / "a")
    p.push("lab/app:v3", "app")
    assert p.cg("up", "-d", "--pull", "always", "--wait").returncode == 0
    app = p.container("app")
    (ds / "a" / "shared").mkdir()
    start_writer(q, ds / "a" / "shared")

    r = p.cg("rollback")

    one_line(r, 2, "cannot restore", "is used by container", "Nothing was changed")
    assert p.container("app")["State"]["StartedAt"] == app["State"]["StartedAt"], "nothing was stopped"
    assert p.history()[-1]["outcome"] == "committed"
