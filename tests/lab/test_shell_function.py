"""contrib/shell/docker-compose-guard.sh in a real bash: `docker compose up -d` is guarded (a
failing upgrade exits 3 and is rolled back), `docker compose ps` and every other docker
command are exactly what plain docker prints."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, STORAGE, LabProject, app_service, composeguard_bin, tree

pytestmark = pytest.mark.lab

FUNCTION = Path(__file__).resolve().parents[2] / "contrib" / "shell" / "docker-compose-guard.sh"
FISH_FUNCTION = FUNCTION.with_suffix(".fish")


def in_bash(p: LabProject, command: str, guarded: bool = True) -> subprocess.CompletedProcess[str]:
    """``command`` in a non-interactive bash, with the function sourced when ``guarded``;
    composeguard is found on PATH, as for a user who installed it."""
    script = (f'source "{FUNCTION}"; ' if guarded else "") + command
    env = {**p.env, "PATH": f"{Path(composeguard_bin()).parent}:{os.environ['PATH']}"}
    return subprocess.run(["bash", "-c", script], cwd=p.dir, env=env, capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL, check=False)


@pytest.mark.skipif(STORAGE == "zfs", reason="the shell function does not depend on the storage")
def test_docker_compose_up_is_guarded_and_the_rest_is_docker(lab_project: LabProject) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", {"db.txt": "precious rows\n"})
    p.write_compose({"x-composeguard": FAST, "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
    r = in_bash(p, "docker compose up -d --wait")
    assert r.returncode == 0, r.stderr

    # (ps without its clock columns: two runs may straddle a second)
    for command in (
        "docker compose ps -a --format '{{.Name}} {{.Image}} {{.Service}} {{.State}} {{.Health}}'",
        "docker compose config --services",
        "docker version --format x{{.Client.Os}}",
        "docker compose nosuchcommand",
    ):
        guarded, plain = in_bash(p, command), in_bash(p, command, guarded=False)
        assert (guarded.returncode, guarded.stdout, guarded.stderr) == (
            plain.returncode, plain.stdout, plain.stderr), command
    assert in_bash(p, "type -t docker").stdout.strip() == "function"

    before = tree(vol)
    p.push("lab/app:v2", "app")  # rewrites the data, then fails its healthcheck
    r = in_bash(p, "docker compose up -d --pull always")

    assert r.returncode == 3, r.stderr
    assert "rolled back" in r.stderr
    assert v1 in p.running_digests("app")
    assert tree(vol) == before


@pytest.mark.skipif(STORAGE == "zfs", reason="the shell function does not depend on the storage")
@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_zsh_and_fish_send_docker_compose_through_composeguard(lab_project: LabProject, shell: str) -> None:
    """The same function in zsh (the .sh file) and fish (its own file): `docker compose` goes to
    composeguard (its `up --help` says so), every other command is plain docker's."""
    p = lab_project
    p.write_compose({"services": {"app": {"image": "lab/app:v1"}}})  # one: compose orders services randomly
    source = f'source "{FISH_FUNCTION if shell == "fish" else FUNCTION}"; '
    env = {**p.env, "PATH": f"{Path(composeguard_bin()).parent}:{os.environ['PATH']}"}

    def in_shell(command: str, guarded: bool = True) -> subprocess.CompletedProcess[str]:
        script = (source if guarded else "") + command
        return subprocess.run([shell, "-c", script], cwd=p.dir, env=env, capture_output=True, text=True,
                              timeout=120, stdin=subprocess.DEVNULL, check=False)

    assert "composeguard" in in_shell("docker compose up --help").stdout
    assert "composeguard" not in in_shell("docker compose up --help", guarded=False).stdout
    for command in ("docker compose config --services", "docker version --format x{{.Client.Os}}",
                    "docker compose nosuchcommand"):
        guarded, plain = in_shell(command), in_shell(command, guarded=False)
        assert (guarded.returncode, guarded.stdout, guarded.stderr) == (
            plain.returncode, plain.stdout, plain.stderr), command
