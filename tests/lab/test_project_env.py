"""Step 8, point 4: composeguard resolves a project exactly as compose does — COMPOSE_FILE with
COMPOSE_PATH_SEPARATOR, COMPOSE_PROFILES and COMPOSE_PROJECT_NAME from the project's `.env`, a
service named on the command line whose profile is off — and `update --all` runs each project
with the files, env file, folder and services it was started with (read back from Docker's
labels), saying so when that cannot be known."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.lab.labproject import FAST, STORAGE, LabProject, bad_upgrade_is_rolled_back, composeguard_bin, run

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="project resolution does not depend on the storage"),
]

DATA = {"db.txt": "precious rows\n"}


def write(path: Path, doc: dict) -> None:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def service_names(p: LabProject) -> set[str]:
    out = run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={p.name}",
               "--format", '{{.Label "com.docker.compose.service"}}'], check=True).stdout
    return set(out.split())


def test_dotenv_sets_files_separator_profiles_and_name(lab_project: LabProject) -> None:
    """No -f and no `name:`: `.env` says which files (separated by ';'), which profile and
    which project name. The failed upgrade of the service defined in the SECOND file, behind
    the profile, is rolled back: composeguard ran compose on the same files compose uses."""
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    p.push("lab/app:v1", "db")
    vol = p.subvolume("app", DATA)
    write(p.dir / "compose.yaml", {"x-composeguard": FAST, "services": {
        "db": {"image": f"{p.repo}/db:latest"}}})
    write(p.dir / "compose.extra.yaml", {"services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"], "profiles": ["extra"]}}})
    (p.dir / ".env").write_text(
        "COMPOSE_FILE=compose.yaml;compose.extra.yaml\nCOMPOSE_PATH_SEPARATOR=;\n"
        f"COMPOSE_PROFILES=extra\nCOMPOSE_PROJECT_NAME={p.name}\n"
    )
    assert p.cg("up", "-d", "--wait").returncode == 0
    assert service_names(p) == {"app", "db"}
    plan = p.cg("plan", "--json")
    assert plan.returncode == 0, plan.stderr
    bad_upgrade_is_rolled_back(p, v1, vol)
    assert p.history()[-1]["outcome"] == "rolled-back"


def test_a_named_service_whose_profile_is_off(lab_project: LabProject) -> None:
    """`up -d app` starts app although its profile is not active (compose's rule); composeguard
    guards that upgrade instead of answering "no such service"."""
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    p.push("lab/app:v1", "db")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {
        "db": {"image": f"{p.repo}/db:latest"},
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"], "profiles": ["debug"]}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    assert service_names(p) == {"db"}
    assert p.cg("up", "-d", "--wait", "app").returncode == 0
    r = bad_upgrade_is_rolled_back(p, v1, vol, "app")
    assert "no such service" not in r.stderr


def compose_as_started(p: LabProject, *args: str) -> None:
    run(["docker", "compose", *args], cwd=p.dir, env=p.env, check=True)


def test_update_all_runs_each_project_as_it_was_started(
    lab_project: LabProject, other_project: LabProject
) -> None:
    """A: started with an --env-file (its image repository is a variable in it), a second file
    whose path contains a comma (compose joins the label with commas) and --profile extra.
    update --all must upgrade app AND extra there, and not start `never` (its profile was off).
    B: one of the files it was started with is gone: not knowable, so B is reported and left
    alone, and A is still updated."""
    a, b = lab_project, other_project
    a.push("lab/app:v1", "app")
    a.push("lab/app:v1", "extra")
    vol = a.subvolume("app", DATA)
    write(a.dir / "compose.yaml", {"name": a.name, "x-composeguard": FAST, "services": {
        "app": {"image": "${REPO:?set in custom.env}/app:latest", "volumes": [f"{vol}:/data"]},
        "never": {"image": "${REPO}/app:latest", "profiles": ["never"]}}})
    write(a.dir / "compose,prod.yaml", {"services": {
        "extra": {"image": "${REPO}/extra:latest", "profiles": ["extra"]}}})
    (a.dir / "custom.env").write_text(f"REPO={a.repo}\n")
    compose_as_started(a, "-f", "compose.yaml", "-f", "compose,prod.yaml", "--env-file", "custom.env",
                       "--profile", "extra", "up", "-d", "--wait")
    assert service_names(a) == {"app", "extra"}

    b.push("lab/app:v1", "app")
    write(b.dir / "compose.yaml", {"name": b.name, "services": {"app": {"image": f"{b.repo}/app:latest"}}})
    write(b.dir / "more.yaml", {"services": {"app": {"environment": {"X": "1"}}}})
    compose_as_started(b, "-f", "compose.yaml", "-f", "more.yaml", "up", "-d")
    (b.dir / "more.yaml").unlink()
    b_before = b.container("app")["Id"]

    v3_app, v3_extra = a.push("lab/app:v3", "app"), a.push("lab/app:v3", "extra")
    b.push("lab/app:v3", "app")
    env = {**a.env, "COMPOSEGUARD_STATE_DIR": str(a.state)}
    r = run([composeguard_bin(), "update", "--all", "--filter", f"{a.name}*", "--json"], env=env, cwd="/")
    assert r.returncode == 0, r.stderr
    assert v3_app in a.running_digests("app") and v3_extra in a.running_digests("extra")
    assert service_names(a) == {"app", "extra"}, "update started a service whose profile was off"
    hist = json.loads(a.cg("-p", a.name, "history", "--json").stdout)  # `a` needs custom.env to resolve
    assert hist[-1]["outcome"] == "committed"

    r = subprocess.run([composeguard_bin(), "update", "--all", "--filter", f"{b.name}*"],
                       env={**b.env, "COMPOSEGUARD_STATE_DIR": str(a.state)}, cwd="/",
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 2, r.stderr
    [line] = [ln for ln in r.stderr.splitlines() if b.name in ln]
    assert "not updated" in line and "more.yaml" in line and "nothing was changed" in line
    assert "Traceback" not in r.stderr
    assert b.container("app")["Id"] == b_before
