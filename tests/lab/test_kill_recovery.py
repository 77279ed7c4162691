"""SIGKILL composeguard at every step of a failing upgrade, then recover: the project must end
on the old version with the old data (or committed on the new one), never a mix, with no
snapshot lost. The pause points are composeguard's own test hook (COMPOSEGUARD_TEST_PAUSE_AT);
the kill is a real SIGKILL of the real process."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
from harness import clean_env

from composeguard.faults import DIR_POINTS, POINTS
from tests.lab.labproject import (
    FAST,
    GUEST_FULL,
    STORAGE,
    LabProject,
    app_service,
    composeguard_bin,
    kill_at,
    meta_tree,
    run,
    same_on_zfs,
    tree,
)
from tests.lab.test_shared_dataset import deploy_a, lines_are_complete, shared_layout, start_writer
from tests.treecompare import assert_same_tree

pytestmark = pytest.mark.lab

# Inside the OpenZFS guest (TCG, several times slower) one run takes about two minutes: the
# points below run there with `recover`; "just run up -d again" refuses first and then takes
# the same recover path, which the Btrfs runs cover. COMPOSEGUARD_KILL_POINTS=a,b picks points
# (a quick local run; "all" for every point).
# In the guest the point is where ZFS does something of its own: a clone-promote-rename
# restore cut in the middle (restored-one: one dataset swapped, the other not). With
# COMPOSEGUARD_ZFS_FULL=1 also: the one atomic snapshot of several datasets (between-snapshots:
# recover finds it by the tags tests/zfs/test_zfs_backend.py checks on the pool, then adopts
# it as on Btrfs) and the directory-level restore without RENAME_EXCHANGE (dir-copied: OpenZFS
# 2.1 swaps by two renames, the same code as the uninterrupted directory restore). At the
# other points composeguard does the same thing on either storage; they run on Btrfs, and
# keeping them out of the guest keeps the CI run within its time.
ZFS_POINTS = ("restored-one",) + (("between-snapshots", "dir-copied") if GUEST_FULL else ())
_default = "all" if STORAGE != "zfs" else ",".join(ZFS_POINTS)
_chosen = os.environ.get("COMPOSEGUARD_KILL_POINTS", _default)
SELECTED = POINTS if _chosen == "all" else tuple(p for p in POINTS if p in _chosen.split(","))
DIR_SELECTED = DIR_POINTS if _chosen == "all" else tuple(p for p in DIR_POINTS if p in _chosen.split(","))
# (signal, then): SIGKILL (nothing of composeguard runs after it) then `recover` or just
# `up -d` again; SIGTERM (systemd stopping the job, a shutdown): composeguard handles it itself
# and a `recover` finishes whatever it could not (step 8: an interruption never quarantines
# the new digest; only a probe that ran and failed does).
THEN = (
    (("SIGKILL", "recover"), ("SIGKILL", "up-again"), ("SIGTERM", "recover"))
    if STORAGE != "zfs"
    else (("SIGKILL", "recover"),)
)
# The points after which the probe has failed: only there is the new digest judged bad.
AFTER_VERDICT = ("restoring", "restored-one", "pinned")
KILL_RESULTS: list[tuple[str, str, str, str, str]] = []  # printed by conftest's terminal summary


def two_service_project(p: LabProject) -> tuple[Path, Path, str, str]:
    v1_app = p.push("lab/app:v1", "app")
    v1_db = p.push("lab/app:v1", "db")
    app_vol = p.volume("app", {"cache.txt": "app cache\n"})
    db_vol = p.volume("db", {"db.txt": "precious rows\n"})
    p.write_compose({
        "x-composeguard": FAST,
        "services": {
            "db": app_service(f"{p.repo}/db:latest", db_vol),
            "app": app_service(f"{p.repo}/app:latest", app_vol, depends_on=["db"],
                               environment={"MIGRATE_URL": "http://db:8080/cgi-bin/migrate"}),
        },
    })
    assert p.cg("up", "-d", "--wait").returncode == 0
    return app_vol, db_vol, v1_app, v1_db


def bad_digests(p: LabProject) -> list[str]:
    pins = json.loads(p.cg("pins", "--json").stdout or "{}")
    return [b["digest"] for pin in pins.values() for b in pin["bad"]]


@pytest.mark.parametrize(("sig", "then"), THEN, ids=[f"{s}-{t}" for s, t in THEN])
@pytest.mark.parametrize("point", SELECTED)
def test_kill_at_every_step(
    lab_project: LabProject, tmp_path: Path, point: str, sig: str, then: str
) -> None:
    p = lab_project
    app_vol, db_vol, v1_app, v1_db = two_service_project(p)
    before = {"app": tree(app_vol), "db": tree(db_vol)}
    v2 = p.push("lab/app:v2", "app")  # migrates app's and db's data, then fails its healthcheck

    kill_at(p, point, tmp_path, getattr(signal, sig))

    journals = p.history()
    if then == "up-again" and journals:
        r = p.cg("up", "-d")
        assert r.returncode == 1, r.stderr
        assert journals[-1]["id"] in r.stderr and "composeguard recover" in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = p.cg("recover")
    assert r.returncode == 0, r.stderr
    if point == "between-snapshots" and then == "recover" and sig == "SIGKILL":
        # the journal is written after the snapshots: the one made before the kill is found
        assert "found the unrecorded snapshot" in r.stderr
    ran_again = then == "up-again" and not journals
    if ran_again:
        r = p.cg("up", "-d")  # killed before any journal: the next up simply runs (and fails)
        assert r.returncode == 3, r.stderr

    hist = p.history()
    assert all(j["outcome"] for j in hist), "no unfinished transaction is left"
    app_digests, db_digests = p.running_digests("app"), p.running_digests("db")
    committed = bool(hist) and hist[-1]["outcome"] == "committed"
    assert not committed, "the bad v2 can never be committed"
    state = "old version"
    assert v1_app in app_digests and v1_db in db_digests, f"{point}: not the old version"
    for svc in ("app", "db"):
        assert p.container(svc)["State"]["Status"] == "running", f"{svc} is not running"
    data_ok = tree(app_vol) == before["app"] and tree(db_vol) == before["db"]
    kept = sorted(s["name"] for j in hist if j["outcome"] == "rolled-back" for s in j["snapshots"])
    on_disk = p.snapshots()
    bad = bad_digests(p)
    check = ("data identical" if data_ok else "DATA DIFFERS") + (", v2 quarantined" if bad else "")
    KILL_RESULTS.append((STORAGE, point, f"{sig[3:]}+{then}", state, check))
    assert data_ok, f"{point}/{then}: the data differs from before the upgrade"
    assert [s for s in kept if not p.exists(s)] == [], "a snapshot of a rolled-back transaction was lost"
    assert on_disk == kept, "every snapshot left on disk belongs to a rolled-back transaction's journal"
    if point in AFTER_VERDICT or ran_again:
        assert bad == [v2], "the probe had failed: the new digest is quarantined"
    else:
        assert bad == [], f"{sig} at '{point}' is an interruption, not a verdict: v2 stays untried"



@pytest.mark.parametrize("point", DIR_SELECTED)
def test_kill_during_a_directory_level_restore(
    lab_project: LabProject, other_project: LabProject, tmp_path: Path, point: str
) -> None:
    """A's data is a directory of a dataset B also keeps data in (step 7). SIGKILL at every
    step of the directory-level restore, then recover: A on the old data, B untouched and
    never stopped, nothing of the restore left behind, no snapshot leaked or lost."""
    p, q = lab_project, other_project
    v1 = p.push("lab/app:v1", "app")
    shared = shared_layout(p)
    deploy_a(p, shared / "a")
    writer = start_writer(q, shared / "b")
    before = meta_tree(shared / "a")
    p.push("lab/app:v2", "app")

    kill_at(p, point, tmp_path)
    r = p.cg("recover")
    assert r.returncode == 0, r.stderr

    hist = p.history()
    assert [j["outcome"] for j in hist] == ["rolled-back"]
    assert v1 in p.running_digests("app") and p.container("app")["State"]["Status"] == "running"
    now = q.container("writer")
    assert now["Id"] == writer["Id"] and now["State"]["StartedAt"] == writer["State"]["StartedAt"]
    lines_are_complete(shared / "b" / "lines.txt")
    data_ok = meta_tree(shared / "a") == before
    KILL_RESULTS.append((f"{STORAGE}/dir", point, "KILL+recover", "old version",
                         "data identical" if data_ok else "DATA DIFFERS"))
    assert_same_tree(before, meta_tree(shared / "a"))
    assert sorted(x.name for x in shared.iterdir()) == ["a", "b", "notes.txt"], "a restore leftover"
    failed = {rec["failed"] for rec in hist[0]["restores"].values()}
    kept = sorted(s["name"] for s in hist[0]["snapshots"])
    assert [n for n in p.snapshots() if n not in failed] == kept, "snapshots on disk = the journal's"
    assert all(p.exists(n) for n in failed), "the failed state is kept"


BOOT_UNIT = Path(__file__).resolve().parents[2] / "contrib/systemd/composeguard-recover.service"


def unit_exec_start(unit: Path) -> list[str]:
    """The command line of the unit's ExecStart= (what systemd runs at boot)."""
    text = unit.read_text().splitlines()
    lines = [ln.split("=", 1)[1].split() for ln in text if ln.startswith("ExecStart=")]
    assert len(lines) == 1, f"{unit.name} has one ExecStart="
    return lines[0]


@same_on_zfs("recover --all reads the journals; the recovery itself is the kill tests' on either storage")
def test_boot_unit_recovers_a_project_an_interrupted_run_left_stopped(
    lab_project: LabProject, other_project: LabProject, tmp_path: Path
) -> None:
    """A reboot in the middle of an upgrade: the services were stopped, the data about to be
    snapshotted. At boot the unit's command (run as systemd runs it: from /, with only the
    state dir) brings the project back on its old version and old data; another project with
    nothing interrupted is left alone."""
    p, q = lab_project, other_project
    app_vol, db_vol, v1_app, v1_db = two_service_project(p)
    before = {"app": tree(app_vol), "db": tree(db_vol)}
    q.env["COMPOSEGUARD_STATE_DIR"] = p.env["COMPOSEGUARD_STATE_DIR"]  # one host, one state dir
    q.push("lab/app:v1", "app")
    q.write_compose({"services": {"app": app_service(f"{q.repo}/app:latest", q.volume("app"))}})
    assert q.cg("up", "-d", "--wait").returncode == 0
    q_started = q.container("app")["State"]["StartedAt"]
    p.push("lab/app:v2", "app")

    kill_at(p, "stopped", tmp_path)
    assert p.container("app")["State"]["Status"] != "running", "the kill left the unit stopped"

    argv = unit_exec_start(BOOT_UNIT)
    assert argv[1:] == ["recover", "--all"]
    metrics = tmp_path / "textfile" / "composeguard.prom"
    env = clean_env(COMPOSEGUARD_STATE_DIR=p.env["COMPOSEGUARD_STATE_DIR"],
                    COMPOSEGUARD_PROMETHEUS_FILE=str(metrics))
    r = run([composeguard_bin(), *argv[1:]], cwd="/", env=env)
    assert r.returncode == 0, r.stderr
    hist = p.history()
    assert hist and all(j["outcome"] and j["outcome"] != "committed" for j in hist), hist
    last = f'composeguard_last_outcome{{project="{p.name}",outcome="{hist[-1]["outcome"]}"}} 1'
    assert last in metrics.read_text().splitlines(), "the metrics hear of what recover ended"
    for svc, v1 in (("app", v1_app), ("db", v1_db)):
        assert p.container(svc)["State"]["Status"] == "running", f"{svc} did not come back"
        assert v1 in p.running_digests(svc)
    assert {"app": tree(app_vol), "db": tree(db_vol)} == before
    assert q.container("app")["State"]["StartedAt"] == q_started, "the other project was touched"
    again = run([composeguard_bin(), *argv[1:]], cwd="/", env=env)
    assert again.returncode == 0 and again.stdout.strip() == "nothing to recover", again.stdout + again.stderr
