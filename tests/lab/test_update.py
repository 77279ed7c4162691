"""The nightly job on the lab: update --all, quarantine of bad digests, the lock, quietness,
notifications, and the contrib systemd units."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, LabProject, composeguard_bin, run, tree

pytestmark = pytest.mark.lab

DATA = {"db.txt": "precious data D\n"}
ROOT = Path(__file__).resolve().parents[2]


def deploy(p: LabProject, image: str = "lab/app:v1") -> Path:
    p.push(image, "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    return vol


@pytest.fixture
def two_projects(tmp_path: Path):
    a, b = LabProject(tmp_path, prefix="ua"), LabProject(tmp_path, prefix="ub")
    b.state = a.state  # one host, one state dir
    b.env = a.env
    try:
        yield a, b
    finally:
        a.destroy()
        b.destroy()


def update_all(p: LabProject, pattern: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([composeguard_bin(), "update", "--all", "--filter", pattern, *extra],
               env=p.env, cwd="/")


def test_update_all_commits_one_rolls_back_the_other_and_notifies(two_projects, tmp_path) -> None:
    good, bad = two_projects
    good_vol, bad_vol = deploy(good), deploy(bad)
    bad_before = tree(bad_vol)
    v3 = good.push("lab/app:v3", "app")
    v1_bad = bad.running_digests("app")[0]
    bad.push("lab/app:v2", "app")
    outbox = tmp_path / "hook.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(
        "import os, sys\n"
        "with open(sys.argv[1], 'a') as f:\n"
        "    outcome = os.environ['COMPOSEGUARD_OUTCOME']\n"
        "    f.write(sys.stdin.read().strip() + '\\t' + outcome + '\\n')\n"
    )
    env = {**good.env, "COMPOSEGUARD_HOOK": f"{sys.executable} {hook} {outbox}",
           "COMPOSEGUARD_PROMETHEUS_FILE": str(tmp_path / "prom" / "composeguard.prom")}

    r = run([composeguard_bin(), "update", "--all", "--filter", "u[ab]*", "--json"], env=env, cwd="/")

    assert r.returncode == 3, r.stderr
    results = {x["project"]: (x["exit_code"], x["outcome"]) for x in json.loads(r.stdout)}
    assert results == {good.name: (0, "committed"), bad.name: (3, "rolled-back")}
    txns = {x["project"]: x["txn"] for x in json.loads(r.stdout)}
    assert txns == {good.name: good.history()[-1]["id"], bad.name: bad.history()[-1]["id"]}
    assert v3 in good.running_digests("app")
    assert (good_vol / "db.txt").read_text() == DATA["db.txt"]
    assert v1_bad in bad.running_digests("app")
    assert tree(bad_vol) == bad_before
    lines = outbox.read_text().splitlines()
    got = {json.loads(ln.split("\t")[0])["project"]: ln.split("\t")[1] for ln in lines}
    assert got == {good.name: "committed", bad.name: "rolled-back"}
    doc = json.loads(lines[0].split("\t")[0])
    assert {"txn", "services", "reason", "snapshots", "failed_states"} <= set(doc)
    prom = (tmp_path / "prom" / "composeguard.prom").read_text()
    assert f'composeguard_rollbacks_total{{project="{bad.name}"}} 1' in prom
    assert f'composeguard_last_outcome{{project="{good.name}",outcome="committed"}} 1' in prom


def test_bad_digest_is_quarantined_until_a_new_one_appears(lab_project: LabProject) -> None:
    p = lab_project
    vol = deploy(p)
    v1 = p.running_digests("app")[0]
    v2 = p.push("lab/app:v2", "app")
    assert p.cg("update").returncode == 3
    txns = len(p.history())
    snaps = p.snapshots()

    r = p.cg("update")  # the bad digest is still what the registry serves

    assert r.returncode == 0, r.stderr
    assert r.stdout == "" and r.stderr == "", "quiet: nothing to do"
    assert len(p.history()) == txns
    assert p.snapshots() == snaps, "no new snapshot"
    assert v1 in p.running_digests("app")
    assert "bad" in p.cg("pins").stdout

    v3 = p.push("lab/app:v3", "app")  # upstream fixed it: a new digest is tried
    r = p.cg("update")
    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app")
    assert p.history()[-1]["outcome"] == "committed"
    assert p.cg("pins").stdout.startswith("no pins"), "a digest that passed releases the pin"
    hist = json.loads(p.cg("pins", "--history", "--json").stdout)
    assert hist["pins"] == {}
    [released] = hist["released"]  # the quarantine record is kept
    assert [b["digest"] for b in released["bad"]] == [v2]
    assert released["image"].split("@")[1] == v1.split("@")[1], released
    assert v3.split("@")[1][:19] in released["why"], released
    assert (vol / "db.txt").read_text() == DATA["db.txt"]


def test_two_updates_at_once_one_works_the_other_exits_5(lab_project: LabProject) -> None:
    p = lab_project
    deploy(p)
    p.push("lab/app:v2", "app")  # a slow, failing upgrade keeps the lock for seconds
    procs = [subprocess.Popen([composeguard_bin(), "update"], cwd=p.dir, env=p.env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    t0 = time.monotonic()
    done: dict[int, float] = {}
    while len(done) < 2:
        for i, pr in enumerate(procs):
            if i not in done and pr.poll() is not None:
                done[i] = time.monotonic() - t0
        time.sleep(0.05)
    codes = sorted(pr.returncode for pr in procs)
    assert codes == [3, 5]
    loser = next(i for i, pr in enumerate(procs) if pr.returncode == 5)
    err = procs[loser].stderr.read()
    assert "another composeguard run" in err and len(err.strip().splitlines()) == 1
    assert done[loser] < done[1 - loser], "the locked-out run gives up at once"
    hist = p.history()
    assert len(hist) == 1 and hist[0]["outcome"] == "rolled-back", "nothing half-done"


def test_nothing_new_is_silent_and_takes_no_snapshot(lab_project: LabProject) -> None:
    p = lab_project
    deploy(p)

    r = update_all(p, p.name)

    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert p.history() == []
    assert p.snapshots() == []
    r = update_all(p, p.name, "-v")
    assert r.returncode == 0
    assert r.stderr.strip() == f"composeguard: {p.name}: nothing to update"
    r = update_all(p, p.name, "--json")
    assert json.loads(r.stdout) == [
        {"project": p.name, "exit_code": 0, "message": "", "txn": "", "outcome": "up-to-date",
         "waiting": [], "available": []}]
    assert p.history() == []


def test_service_opt_out_is_not_updated(lab_project: LabProject) -> None:
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"],
                "x-composeguard": {"update": False}}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    v1 = p.running_digests("app")[0]
    p.push("lab/app:v3", "app")

    assert p.cg("update").returncode == 0
    assert v1 in p.running_digests("app")
    assert p.history() == []


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="systemd-analyze not installed")
def test_contrib_systemd_units_verify(tmp_path: Path) -> None:
    """systemd-analyze verify in a throwaway root holding the units and an ExecStart binary."""
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "usr/local/bin/composeguard"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    units = sorted((ROOT / "contrib/systemd").glob("composeguard-update.*"))
    assert [u.suffix for u in units] == [".service", ".timer"]
    for u in units:
        shutil.copy(u, root / "etc/systemd/system" / u.name)
    r = run(["systemd-analyze", "verify", f"--root={root}",
             *[f"/etc/systemd/system/{u.name}" for u in units]])
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr
    timer = (ROOT / "contrib/systemd/composeguard-update.timer").read_text()
    assert "Persistent=true" in timer and "RandomizedDelaySec=" in timer
