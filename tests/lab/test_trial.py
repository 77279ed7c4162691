"""Step 14 end to end: the trial run. With ``x-composeguard: {trial: true}`` a failing upgrade
is tried on clones of the data beside the live version: the live service answers the whole
time, its container and its data are never touched, the bad digest is pinned; a good one is
then tried, passes, and is installed by the guarded upgrade. On Btrfs on the host, and on ZFS
in the guest (lab/zfs-guest.sh --docker)."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from composeguard.faults import TRIAL_POINTS
from tests.lab.labproject import (
    FAST,
    STORAGE,
    LabProject,
    app_service,
    kill_at,
    one_line,
    run,
    same_on_zfs,
    tree,
)
from tests.lab.test_shared_dataset import lines_are_complete, shared_layout, start_writer

pytestmark = pytest.mark.lab

TRIAL = {**FAST, "trial": True}


class Poller:
    """A client asking the live service every 100 ms, as a user's browser would."""

    def __init__(self, url: str) -> None:
        self.url, self.errors, self.answers = url, [], 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as r:
                    body = r.read().decode().strip()
                self.answers += 1
                if body != "v1":
                    self.errors.append(f"answered {body!r}")
            except Exception as e:  # noqa: BLE001 - every failure is what the test counts
                self.errors.append(f"{type(e).__name__}: {e}")
            self._stop.wait(0.1)

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def trial_containers(p: LabProject) -> list[str]:
    out = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={p.name}-trial"])
    return out.stdout.split()


def deploy(p: LabProject, vol: Path, settings: dict | None = None) -> str:
    """v1 of the app on ``vol``, published on a free port of 127.0.0.1; returns its URL."""
    p.push("lab/app:v1", "app")
    svc = app_service(f"{p.repo}/app:latest", vol, ports=["127.0.0.1::8080"])
    p.write_compose({"x-composeguard": settings or TRIAL, "services": {"app": svc}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr
    port = p.compose("port", "app", "8080").stdout.strip().rsplit(":", 1)[1]
    return f"http://127.0.0.1:{port}/version"


def identity(p: LabProject) -> tuple[str, str]:
    c = p.container("app")
    return c["Id"], c["State"]["StartedAt"]


def test_a_failing_upgrade_costs_no_downtime_then_a_good_one_is_installed(lab_project: LabProject) -> None:
    p = lab_project
    vol = p.volume("app", {"db.txt": "precious data D\n", "users.csv": "id,name\n1,ada\n"})
    url = deploy(p, vol)
    before, live = tree(vol), identity(p)
    v1 = p.running_digests("app")[0]
    v2 = p.push("lab/app:v2", "app")  # rewrites every file of its data, then never gets healthy
    plan = p.cg("plan")
    assert f"trial: the new version runs first as {p.name}-trial" in plan.stdout, plan.stdout
    assert json.loads(p.cg("plan", "--json").stdout)["trial"]["refusals"] == []

    with Poller(url) as client:
        r = p.cg("up", "-d", "--pull", "always")
        time.sleep(0.5)  # the client asks a few more times after the trial is gone
    assert r.returncode == 3, r.stderr
    assert "the trial failed" in r.stderr and "nothing was stopped" in r.stderr, r.stderr
    assert client.answers > 5 and client.errors == [], (
        f"the live service failed a client: {client.errors[:3]}"
    )
    assert identity(p) == live, "the live container is the very same, never stopped"
    assert v1 in p.running_digests("app")
    assert tree(vol) == before, "the live data never holds what v2 wrote"
    txn = p.history()[-1]
    assert txn["outcome"] == "rolled-back" and txn["trial"]["verdict"] == "failed"
    assert [s["phase"] for s in txn["steps"]].count("stopping-unit") == 0
    kept = p.failed_tree(txn["failed_states"][0])
    assert "SCHEMA" in kept and "db.txt" in kept, "the trial's data is kept as the failed state"
    pins = json.loads(p.cg("pins", "--json").stdout)
    assert [b["digest"] for b in pins["app"]["bad"]] == [v2]
    assert trial_containers(p) == [], "no trial container is left"
    shown = p.cg("history").stdout
    assert f"trial {p.name}-trial: failed: the live version was never stopped" in shown, shown
    assert f"failed state (the trial's clone): {txn['failed_states'][0]}" in shown, shown

    # A good v3: the trial passes, then the guarded upgrade installs it (and cleans the trial).
    v3 = p.push("lab/app:v3", "app")
    r = p.cg("update")
    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app")
    txn = p.history()[-1]
    assert txn["outcome"] == "committed" and txn["trial"]["verdict"] == "passed"
    assert txn["trial"]["state"] == "removed"
    assert all(not p.exists(c["name"]) for c in txn["trial"]["clones"]), "the passed trial's clones are gone"
    assert all(not p.exists(s["name"]) for s in txn["trial"]["snapshots"])
    assert trial_containers(p) == []


def test_a_trial_on_a_shared_dataset_leaves_the_other_projects_writes_alone(
    lab_project: LabProject, other_project: LabProject
) -> None:
    p, q = lab_project, other_project
    shared = shared_layout(p)
    deploy(p, shared / "a")
    writer = start_writer(q, shared / "b")
    before = tree(shared / "a")
    p.push("lab/app:v2", "app")

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, r.stderr
    assert tree(shared / "a") == before
    now = q.container("writer")
    assert now["Id"] == writer["Id"] and now["State"]["StartedAt"] == writer["State"]["StartedAt"]
    lines_are_complete(shared / "b" / "lines.txt")
    assert sorted(x.name for x in shared.iterdir()) == ["a", "b", "notes.txt"]
    logs = list((p.state / "projects" / p.name / "txns").glob("*/trial.app.*.log"))
    assert logs, "the trial's logs are kept"


@same_on_zfs("what cannot be tried is decided from the compose model, whatever the storage")
def test_what_cannot_be_tried_is_said_and_refused_when_asked_for(lab_project: LabProject) -> None:
    p = lab_project
    vol = p.volume("app", {"db.txt": "D\n"})
    url = deploy(p, vol, {**FAST})
    port = url.rsplit(":", 1)[1].split("/")[0]
    svc = app_service(f"{p.repo}/app:latest", vol, ports=[f"127.0.0.1:{port}:8080"])
    svc["x-composeguard"] = {"probe": {"http": f"http://127.0.0.1:{port}/version"}}
    p.write_compose({"x-composeguard": TRIAL, "services": {"app": svc}})
    p.push("lab/app:v3", "app")
    assert p.compose("pull").returncode == 0
    live = identity(p)

    r = p.cg("update", "--trial")

    one_line(r, 2, "no trial:", "needs a published port", "nothing was changed")
    assert identity(p) == live and p.history() == []
    plan = json.loads(p.cg("plan", "--json").stdout)["trial"]
    assert plan["wanted"] is True and plan["runs"] is False
    assert "needs a published port" in plan["refusals"][0]
    # Without --trial (only the file asks): said, and the upgrade runs guarded without one.
    r = p.cg("update")
    assert r.returncode == 0, r.stderr
    assert "no trial:" in r.stderr and "upgrading without one" in r.stderr, r.stderr
    assert p.history()[-1]["outcome"] == "committed" and identity(p) != live


# SIGKILL then recover, SIGTERM then recover: at every step of the trial the live version is
# never stopped; recover removes the trial (or, after a failed verdict, finishes it: pinned).
KILLS = [(pt, sig) for pt in TRIAL_POINTS for sig in ("SIGKILL", "SIGTERM")]


@pytest.mark.skipif(STORAGE == "zfs", reason="the trial's steps are the same code on ZFS; run on Btrfs")
@pytest.mark.parametrize(("point", "sig"), KILLS, ids=[f"{p}-{s}" for p, s in KILLS])
def test_kill_during_the_trial(lab_project: LabProject, tmp_path: Path, point: str, sig: str) -> None:
    p = lab_project
    vol = p.volume("app", {"db.txt": "precious rows\n"})
    deploy(p, vol)
    before, live, v1 = tree(vol), identity(p), p.running_digests("app")[0]
    v2 = p.push("lab/app:v2", "app")

    kill_at(p, point, tmp_path, getattr(signal, sig))
    r = p.cg("recover")
    assert r.returncode == 0, r.stderr

    assert identity(p) == live, f"{point}: the live container was stopped or replaced"
    assert p.container("app")["State"]["Status"] == "running"
    assert tree(vol) == before
    assert trial_containers(p) == []
    hist = p.history()
    assert all(j["outcome"] for j in hist), "no unfinished transaction is left"
    j = hist[-1]
    kept = set(j["failed_states"]) | {s["name"] for s in j["snapshots"]}
    for made in [*j["trial"].get("clones", []), *j["trial"].get("snapshots", [])]:
        assert p.exists(made["name"]) == (
            made["name"] in kept or any(made["name"].startswith(k + "/") for k in kept)
        ), made["name"]
    pins = json.loads(p.cg("pins", "--json").stdout or "{}")
    bad = [b["digest"] for pin in pins.values() for b in pin["bad"]]
    if point == "trial-failed":
        assert j["outcome"] == "rolled-back" and bad == [v2], "the verdict was in: it is finished"
        assert j["failed_states"], "the trial's data is kept"
    else:
        assert j["outcome"] == "aborted" and bad == [], "an interruption is no verdict"
        assert p.snapshots() == [] and list(Path(p.snapshot_root()).glob("*/trial/*")) == []
    # and the next run simply runs
    r = p.cg("up", "-d")
    assert r.returncode in (0, 3), r.stderr
    assert v1 in p.running_digests("app"), "v2 is pinned, or its trial fails again"
    if point != "trial-failed":  # (with the pin, compose recreates the container on v1's digest)
        assert identity(p) == live, "the trial failed again: the live version stays"


@same_on_zfs("which projects a host has is read from Docker's labels, whatever the storage")
def test_update_all_never_takes_a_trial_for_a_project(lab_project: LabProject, tmp_path: Path) -> None:
    """A trial's containers (left by a kill before recover) are no project `update --all` acts on."""
    p = lab_project
    vol = p.volume("app", {"db.txt": "D\n"})
    deploy(p, vol)
    p.push("lab/app:v2", "app")
    kill_at(p, "trial-probing", tmp_path)
    assert trial_containers(p), "the trial runs (killed while probed)"
    from composeguard.compose.started import host_projects

    names = [sp.name for sp in host_projects()]
    assert p.name in names and f"{p.name}-trial" not in names
    assert p.cg("recover").returncode == 0
    assert trial_containers(p) == []
