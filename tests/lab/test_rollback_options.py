"""Step 13, point 7 on the real lab: the rollback restarts the old version in the shape the
user's ``up`` options gave it (``--scale``), and the probe waits out a healthcheck's
``start_period`` that is longer than the service's timeout. Docker's side only: the same on
either storage, so the ZFS guest leaves them to the host's Btrfs run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, LabProject, app_service, run, same_on_zfs, tree

pytestmark = [pytest.mark.lab, same_on_zfs("Docker's side of the rollback and the probe, not storage")]

DATA = {"db.txt": "precious data D\n"}


def containers(p: LabProject, service: str) -> list[dict]:
    """The inspect of every running container of ``service`` (one-off runs left out)."""
    ids = run(["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={p.name}",
               "--filter", f"label=com.docker.compose.service={service}",
               "--filter", "label=com.docker.compose.oneoff=False"], check=True).stdout.split()
    return json.loads(run(["docker", "inspect", *ids], check=True).stdout) if ids else []


def digests(image_id: str) -> list[str]:
    return json.loads(run(["docker", "image", "inspect", image_id], check=True).stdout)[0]["RepoDigests"]


def test_the_old_version_comes_back_with_the_users_scale(lab_project: LabProject) -> None:
    """`up -d --scale app=2` to a failing v2: the old version came back as one container (the
    rollback's own `up` converged to the compose file's scale); it must be two again."""
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", DATA)
    p.write_compose({"x-composeguard": FAST,
                     "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
    r = p.cg("up", "-d", "--wait", "--scale", "app=2")
    assert r.returncode == 0, r.stderr
    assert len(containers(p, "app")) == 2
    before = tree(vol)
    p.push("lab/app:v2", "app")

    r = p.cg("up", "-d", "--pull", "always", "--scale", "app=2")

    assert r.returncode == 3, r.stderr
    running = containers(p, "app")
    assert len(running) == 2, f"{len(running)} container(s) of app after the rollback:\n{r.stderr}"
    assert all(v1 in digests(c["Image"]) for c in running), "both run the old image"
    assert all(c["State"].get("Health", {}).get("Status") == "healthy" for c in running)
    assert tree(vol) == before


def run_log(p: LabProject, txn: str) -> str:
    return (Path(p.state) / "projects" / p.name / "txns" / txn / "run.log").read_text()


def test_a_start_period_longer_than_the_timeout_is_waited_for(lab_project: LabProject) -> None:
    """v3 passes its healthcheck only at its 6th check (about 6 s), inside its start_period of
    10 s, with x-composeguard timeout 3: Docker says "starting" all along, so the upgrade must
    commit, not be judged failed at 3 s and rolled back."""
    p = lab_project
    p.push("lab/app:v1", "app")
    vol = p.volume("app", DATA)
    # v1 is healthy at its first check (a fast deploy); any other version counts its checks
    slow = ('[ "$$APP_VERSION" = v1 ] || { n=$$(( $$(cat /tmp/checks 2>/dev/null || echo 0) + 1 )); '
            'echo $$n > /tmp/checks; [ $$n -ge 6 ]; } && wget -q -O- http://127.0.0.1:8080/health')
    app = app_service(f"{p.repo}/app:latest", vol, healthcheck=False)
    app["healthcheck"] = {"test": ["CMD-SHELL", slow], "interval": "1s", "timeout": "3s",
                          "start_period": "10s", "retries": 3}
    p.write_compose({"x-composeguard": {"timeout": 3, "settle": 3}, "services": {"app": app}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr

    txn = p.upgrade_commits()

    said = "app: probing for up to 13s, not 3s: its healthcheck's start_period is 10s"
    assert said in run_log(p, txn["id"]), "the longer wait is logged, with why"
