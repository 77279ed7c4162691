"""End to end on the real lab: dockerd, the registry, and Btrfs subvolumes — or, inside the
OpenZFS guest (COMPOSEGUARD_LAB_STORAGE=zfs), ZFS datasets. The seed story and the rest of
step 2's acceptance, the same scenarios on both."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.lab.labproject import (
    FAST,
    STORAGE,
    ZFS_POOL,
    LabProject,
    composeguard_bin,
    one_line,
    run,
    same_on_zfs,
    tree,
    zfs,
)
from tests.lab.labproject import app_service as lab_app_service

pytestmark = pytest.mark.lab



def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# A one-off container of app that says which version its image is.
RUN_VERSION = ("run", "--rm", "--no-deps", "-T", "--entrypoint", "/bin/sh", "app", "-c", "echo $APP_VERSION")
DATA = {"db.txt": "precious data D\n", "users.csv": "id,name\n1,ada\n"}


def app_service(p: LabProject, volume: Path, healthcheck: bool = True, **extra) -> dict:
    return lab_app_service(f"{p.repo}/app:latest", volume, healthcheck, **extra)


def deploy_v1(p: LabProject, doc: dict) -> None:
    p.write_compose(doc)
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr


def test_seed_story_failed_upgrade_rolls_back(lab_project: LabProject) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", DATA)
    deploy_v1(p, {"x-composeguard": FAST, "services": {"app": app_service(p, vol)}})
    before = tree(vol)
    v2 = p.push("lab/app:v2", "app")  # the tag moves to the bad image

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, r.stderr
    assert "rolled back" in r.stderr.splitlines()[-1]
    assert v1 in p.running_digests("app")
    assert tree(vol) == before, "the data must be byte-identical to before the upgrade"
    txn = p.history()[-1]
    assert txn["outcome"] == "rolled-back"
    assert txn["changes"]["app"]["new_digest"] == v2
    failed = p.failed_tree(txn["failed_states"][0])
    assert failed["SCHEMA"] == sha("schema: v2\n"), "the failed state is kept"
    assert "app.t" in " ".join(x.name for x in (p.state / "projects" / p.name / "txns" / txn["id"]).iterdir())
    assert "failed state" in p.cg("history").stdout
    assert v2 in p.cg("pins").stdout

    # The pin holds: a following guarded up keeps v1 ...
    r = p.cg("up", "-d")
    assert r.returncode == 0, r.stderr
    assert v1 in p.running_digests("app")
    assert tree(vol) == before
    if STORAGE != "zfs":  # (Docker's side only: not worth a TCG minute in the guest)
        # ... and so do the passed-through commands that create containers:
        r = p.cg(*RUN_VERSION)
        assert (r.returncode, r.stdout.strip()) == (0, "v1"), r.stderr
        running = p.container("app")["Id"]
        assert p.cg("create", "app").returncode == 0
        assert p.container("app")["Id"] == running, "create found nothing to change: the pin is v1"
        assert v1 in p.running_digests("app")
        # ... while plain docker compose would start the bad image again.
        assert p.compose(*RUN_VERSION).stdout.strip() == "v2"
    if STORAGE == "zfs":
        # The failed dataset has a mountpoint of its own: `zfs mount` to look at it can never
        # cover the live path.
        assert zfs("get", "-H", "-o", "value", "mountpoint", txn["failed_states"][0]).strip() != str(vol)
        # A sandboxed unit's mount namespace (what systemd's PrivateTmp=, ProtectSystem= …
        # give): a whole ZFS restore would mount where dockerd cannot see; refused at plan
        # time, before anything stops. (`update`: it tries the pinned service's new digest.)
        running, n = p.container("app")["Id"], len(p.history())
        p.push("lab/app:v3", "app")
        r = run(["unshare", "--mount", "--propagation", "slave", composeguard_bin(), "update"],
                cwd=p.dir, env=p.env)
        one_line(r, 2, "not in dockerd's mount namespace", "Nothing was changed", alone=False)
        assert p.container("app")["Id"] == running and len(p.history()) == n
        assert tree(vol) == before
        p.push("lab/app:v2", "app")  # the tag back on the bad image for the last check
    p.compose("up", "-d")
    assert v2 in p.running_digests("app")


@same_on_zfs("two datasets snapshotted and restored together: the ZFS kill runs cover it")
def test_dependency_volume_is_rolled_back_too(lab_project: LabProject) -> None:
    """app's new image migrates the data of the db it depends on; db's image is unchanged."""
    p = lab_project
    p.push("lab/app:v1", "app")
    p.push("lab/app:v1", "db")
    app_vol = p.volume("app", {"cache.txt": "app cache\n"})
    db_vol = p.volume("db", DATA)
    doc = {
        "x-composeguard": FAST,
        "services": {
            "db": {"image": f"{p.repo}/db:latest", "volumes": [f"{db_vol}:/data"]},
            "app": app_service(
                p, app_vol, depends_on=["db"], environment={"MIGRATE_URL": "http://db:8080/cgi-bin/migrate"}
            ),
        },
    }
    deploy_v1(p, doc)
    before_app, before_db = tree(app_vol), tree(db_vol)
    p.push("lab/app:v2", "app")

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, r.stderr
    txn = p.history()[-1]
    assert sorted(txn["unit"]) == ["app", "db"]
    assert list(txn["changes"]) == ["app"]
    assert tree(app_vol) == before_app
    assert tree(db_vol) == before_db, "the dependency's volume must be restored as well"
    kept = {f: p.failed_tree(f) for f in txn["failed_states"]}
    (db_failed,) = [t for f, t in kept.items() if db_vol.name in f]
    assert db_failed["db.txt"] != before_db["db.txt"], "db's migrated state is kept"


@same_on_zfs("retention's destroy and release of ZFS snapshots and holds: tests/zfs/test_zfs_backend.py")
def test_good_upgrade_commits_and_retention_keeps_the_last(lab_project: LabProject) -> None:
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.volume("app", DATA)
    deploy_v1(p, {"x-composeguard": {**FAST, "retention": 1}, "services": {"app": app_service(p, vol)}})

    first = p.upgrade_commits()

    snap = first["snapshots"][0]["name"]
    assert p.exists(snap) and p.snapshot_tree(snap) == tree(vol)

    v1b = p.push("lab/app:v1", "app")  # another upgrade: the retention of 1 drops the first set
    r = p.cg("up", "-d", "--pull", "always")
    assert r.returncode == 0, r.stderr
    assert v1b in p.running_digests("app")
    hist = p.history()
    assert [j["outcome"] for j in hist] == ["committed", "committed"]
    assert not p.exists(snap), f"retention released the older snapshot; stderr:\n{r.stderr}"
    assert p.exists(hist[-1]["snapshots"][0]["name"])
    assert "committed" in p.cg("history").stdout


@same_on_zfs("the probe does not depend on the storage")
@pytest.mark.parametrize(("new", "rc"), [("lab/plain:v2", 3), ("lab/plain:v3", 0)])
def test_service_without_healthcheck(lab_project: LabProject, new: str, rc: int) -> None:
    """No healthcheck: a crash loop is detected and rolled back; a stable one commits."""
    p = lab_project
    v1 = p.push("lab/plain:v1", "app")
    vol = p.volume("app", DATA)
    deploy_v1(
        p,
        {
            "x-composeguard": FAST,
            "services": {"app": app_service(p, vol, healthcheck=False, restart="always")},
        },
    )
    before = tree(vol)
    new_digest = p.push(new, "app")

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == rc, r.stderr
    txn = p.history()[-1]
    if rc == 3:
        assert "restart loop" in txn["reason"] or "exited" in txn["reason"]
        assert v1 in p.running_digests("app")
        assert tree(vol) == before
    else:
        assert txn["outcome"] == "committed"
        assert "stable" in r.stderr
        assert new_digest in p.running_digests("app")


@same_on_zfs("the refusal is storage-independent")
def test_unprotected_volume_refused_then_allowed(lab_project: LabProject, tmp_path: Path) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    plain_dir = tmp_path / "on-root-fs"
    plain_dir.mkdir()
    (plain_dir / "db.txt").write_text("not on zfs or btrfs\n")
    deploy_v1(p, {"x-composeguard": FAST, "services": {"app": app_service(p, plain_dir)}})
    cid = p.container("app")["Id"]
    before = tree(plain_dir)
    p.push("lab/app:v3", "app")

    r = p.cg("up", "-d", "--pull", "always")

    one_line(r, 2, "not protected", "not on ZFS or Btrfs", alone=False)
    assert p.container("app")["Id"] == cid, "the same container still runs"
    assert v1 in p.running_digests("app")
    assert tree(plain_dir) == before
    assert p.history() == []

    r = p.cg("up", "-d", "--pull", "always", "--allow-unprotected")
    assert r.returncode == 0, r.stderr
    assert p.history()[-1]["outcome"] == "committed"
    assert p.history()[-1]["snapshots"] == []


@same_on_zfs("no snapshot is taken: nothing ZFS-specific")
def test_up_without_image_change_is_plain_compose_up(lab_project: LabProject) -> None:
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.volume("app", DATA)
    deploy_v1(p, {"x-composeguard": FAST, "services": {"app": app_service(p, vol)}})
    cid = p.container("app")["Id"]

    r = p.cg("up", "-d")

    assert r.returncode == 0, r.stderr
    assert "transaction" not in r.stderr
    assert p.container("app")["Id"] == cid
    assert p.history() == []
    assert p.snapshots() == [], "no snapshot for an up that changes nothing"


@same_on_zfs("plan's ZFS dataset names are checked by test_shared_dataset.py")
def test_plan_json_lists_changes_and_subvolumes(lab_project: LabProject) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", DATA)
    deploy_v1(p, {"x-composeguard": FAST, "services": {"app": app_service(p, vol)}})
    cid = p.container("app")["Id"]
    v2 = p.push("lab/app:v2", "app")

    r = p.cg("plan", "--json")

    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["compared_with"] == "registry"
    (change,) = doc["changes"]
    assert change["service"] == "app"
    assert change["old_digest"] == v1
    assert change["new_digest"] == v2
    expected = f"{ZFS_POOL}/{p.name}-app" if STORAGE == "zfs" else str(vol)
    assert [d["name"] for d in doc["datasets"]] == [expected]
    assert doc["datasets"][0]["backend"] == STORAGE
    assert p.history() == [], "plan changes nothing"
    assert v1 in p.running_digests("app")
    assert p.container("app")["Id"] == cid
    assert p.snapshots() == []
