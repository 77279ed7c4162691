"""contrib/ansible on the lab: upgrade-fleet.yml, run by a real ansible-playbook over an
inventory of two hosts (both ``ansible_connection=local``, each with its own state dir and its
own project filter, so host1 updates only project A and host2 only project B).

Good images roll out to both (check mode first: it plans and changes nothing); a bad image on
the canary is rolled back there and stops the rollout, so the second host is not updated and
the summary says so. ansible-core comes from the ``lab`` extra (pip install -e '.[lab]')."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import harness
import pytest
import yaml

from tests.lab.labproject import FAST, LabProject, composeguard_bin, run

pytestmark = pytest.mark.lab

ANSIBLE = Path(__file__).resolve().parents[2] / "contrib" / "ansible"
DATA = {"db.txt": "precious data D\n"}


@pytest.fixture(scope="session")
def ansible_playbook() -> str:
    for cand in (Path(sys.executable).parent / "ansible-playbook", shutil.which("ansible-playbook")):
        if cand and os.access(cand, os.X_OK):
            return str(cand)
    pytest.fail("ansible-playbook not found: ansible-core is in the lab extra (pip install -e '.[lab]')")


def deploy(p: LabProject) -> None:
    p.push("lab/app:v1", "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr


@pytest.fixture
def fleet(tmp_path: Path):
    """Project A (served by host1) and project B (host2), each on v1, each with its own state dir."""
    a, b = LabProject(tmp_path, prefix="fleeta"), LabProject(tmp_path, prefix="fleetb")
    try:
        deploy(a)
        deploy(b)
        yield a, b
    finally:
        a.destroy()
        b.destroy()


def host_of(p: LabProject, **extra: str) -> dict:
    """A host of the inventory that is this machine, updating project ``p`` alone."""
    return {"ansible_connection": "local", "ansible_become": False,
            "ansible_python_interpreter": sys.executable, "composeguard_bin": composeguard_bin(),
            "composeguard_filter": p.name, "composeguard_state_dir": str(p.state), **extra}


def inventory(tmp: Path, host1: dict, host2: dict) -> Path:
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump({"composeguard": {"hosts": {"host1": host1, "host2": host2}}}))
    return path


def playbook(exe: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = harness.clean_env(
        ANSIBLE_NOCOWS="1",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_HOME=str(tmp / "ansible-home"),
        ANSIBLE_LOCAL_TEMP=str(tmp / "ansible-local"),
        ANSIBLE_REMOTE_TEMP=str(tmp / "ansible-remote"),
    )
    env.pop("ANSIBLE_CONFIG", None)
    # cwd: the test's folder, so that no ansible.cfg of the caller's is read.
    return run([exe, *args], cwd=tmp, env=env, timeout=300)


def roll_out(exe: str, tmp: Path, host1: dict, host2: dict, *extra: str):
    """upgrade-fleet.yml over host1 and host2 -> (the run, {(host, project): summary row}, its output)."""
    summary = tmp / f"summary{'-check' if extra else ''}.json"
    r = playbook(exe, tmp, "-i", str(inventory(tmp, host1, host2)), str(ANSIBLE / "upgrade-fleet.yml"),
                 "-e", f"composeguard_summary_file={summary}", *extra)
    tail = "\n".join(r.stdout.splitlines()[-40:]) + r.stderr
    assert summary.exists(), tail
    rows = json.loads(summary.read_text())
    return r, {(x["host"], x["project"]): x for x in rows}, tail


def test_good_images_roll_out_to_both_hosts_after_a_check(fleet, ansible_playbook, tmp_path) -> None:
    a, b = fleet
    before = {p.name: p.container("app")["Image"] for p in (a, b)}
    v3a, v3b = a.push("lab/app:v3", "app"), b.push("lab/app:v3", "app")
    prom = tmp_path / "prom1" / "composeguard.prom"  # host1's settings must reach composeguard
    hosts = host_of(a, composeguard_prometheus_file=str(prom)), host_of(b)

    r, rows, tail = roll_out(ansible_playbook, tmp_path, *hosts, "--check")

    assert r.returncode == 0, tail
    assert set(rows) == {("host1", a.name), ("host2", b.name)}, tail
    for key in rows:
        assert rows[key]["outcome"] == "would upgrade", rows[key]
        assert "app: sha256:" in rows[key]["detail"]
    assert {p.name: p.container("app")["Image"] for p in (a, b)} == before, "check mode changed nothing"
    assert a.history() == [] and b.history() == []

    r, rows, tail = roll_out(ansible_playbook, tmp_path, *hosts)

    assert r.returncode == 0, tail
    assert set(rows) == {("host1", a.name), ("host2", b.name)}, tail
    for p, host in ((a, "host1"), (b, "host2")):
        row = rows[(host, p.name)]
        assert (row["exit_code"], row["outcome"]) == (0, "upgraded"), row
        assert row["txn"] == p.history()[-1]["id"]
        assert p.history()[-1]["outcome"] == "committed"
    assert v3a in a.running_digests("app") and v3b in b.running_digests("app")
    table = [ln for ln in r.stdout.splitlines() if "upgraded" in ln and "host" in ln]
    assert any("host1" in ln and a.name in ln for ln in table), r.stdout
    assert any("host2" in ln and b.name in ln for ln in table), r.stdout
    assert f'composeguard_last_outcome{{project="{a.name}",outcome="committed"}} 1' in prom.read_text()


def test_a_rollback_on_the_canary_stops_the_rollout(fleet, ansible_playbook, tmp_path) -> None:
    a, b = fleet
    v1a = a.running_digests("app")[0]
    b_image = b.container("app")["Image"]
    a.push("lab/app:v2", "app")  # rewrites its data, then fails its healthcheck
    b.push("lab/app:v3", "app")  # good: host2 would upgrade, if the rollout reached it

    r, rows, tail = roll_out(ansible_playbook, tmp_path, host_of(a), host_of(b))

    assert r.returncode == 2, tail  # ansible-playbook: a host failed (the summary's verdict)
    assert "the rollout stopped at host1" in r.stdout, tail
    canary = rows[("host1", a.name)]
    assert (canary["exit_code"], canary["stop"]) == (3, True), canary
    assert canary["outcome"].startswith("rolled back") and "rolled back" in canary["detail"]
    assert canary["txn"] == a.history()[-1]["id"] and a.history()[-1]["outcome"] == "rolled-back"
    assert v1a in a.running_digests("app")
    assert rows[("host2", "-")]["outcome"] == "not run", rows
    assert rows[("host2", "-")]["detail"] == "rollout stopped at host1"
    assert "[host2]" not in r.stdout, "host2 ran no task at all"
    assert b.container("app")["Image"] == b_image, "host2's project still runs its old image"
    assert b.history() == []
    assert any("host2" in ln and "not run" in ln and "rollout stopped at host1" in ln
               for ln in r.stdout.splitlines()), r.stdout


def test_a_host_where_composeguard_cannot_run_stops_the_rollout(ansible_playbook, tmp_path) -> None:
    """No JSON to read (here: no composeguard at that path) is no news: the rollout stops."""
    nobody = LabProject(tmp_path, prefix="fleetn")  # a name no project has: nothing to update on host2
    host1 = host_of(nobody, composeguard_bin=str(tmp_path / "missing" / "composeguard"))

    r, rows, tail = roll_out(ansible_playbook, tmp_path, host1, host_of(nobody))

    assert r.returncode == 2, tail
    assert set(rows) == {("host1", "(all)"), ("host2", "-")}, rows
    assert rows[("host1", "(all)")]["outcome"].startswith("error") and rows[("host1", "(all)")]["stop"]
    assert (rows[("host2", "-")]["outcome"], rows[("host2", "-")]["detail"]) == (
        "not run", "rollout stopped at host1")
    assert "[host2]" not in r.stdout


def test_playbooks_pass_the_syntax_check(ansible_playbook, tmp_path) -> None:
    inv = ANSIBLE / "inventory.example.yml"
    for book in ("install.yml", "upgrade-fleet.yml"):
        r = playbook(ansible_playbook, tmp_path, "--syntax-check", "-i", str(inv), str(ANSIBLE / book))
        assert r.returncode == 0, r.stdout + r.stderr
        assert "[WARNING]" not in r.stdout + r.stderr, r.stdout + r.stderr
