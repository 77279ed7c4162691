"""contrib/docker-cli-plugin: the opt-in `docker-compose` plugin shim. With it installed in the
user's plugin folder, `docker compose up -d` is guarded (a failing upgrade exits 3 and is rolled
back), `docker compose ps` is byte-identical to plain compose, nothing loops (composeguard runs
the real plugin, even when started directly), and removing it restores plain compose."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, STORAGE, LabProject, app_service, composeguard_bin, run, tree

pytestmark = pytest.mark.lab

INSTALL = Path(__file__).resolve().parents[2] / "contrib" / "docker-cli-plugin" / "install.sh"
PS = ("ps", "-a", "--format", "{{.Name}} {{.Image}} {{.Service}} {{.State}} {{.Health}}")


def docker(p: LabProject, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``docker ARGS`` for a user whose docker config folder is ``config``."""
    env = {**p.env, "DOCKER_CONFIG": str(config), "COMPOSEGUARD_BIN": composeguard_bin()}
    return run(["docker", *args], cwd=p.dir, env=env, timeout=600)


@pytest.mark.skipif(STORAGE == "zfs", reason="the plugin shim does not depend on the storage")
def test_plugin_shim_guards_docker_compose_up_and_removing_it_restores_compose(
    lab_project: LabProject, tmp_path: Path
) -> None:
    p = lab_project
    shim_cfg, plain_cfg = tmp_path / "docker-with-shim", tmp_path / "docker-plain"
    plain_cfg.mkdir()
    env = {**p.env, "DOCKER_CONFIG": str(shim_cfg), "COMPOSEGUARD_BIN": composeguard_bin()}
    r = run(["sh", str(INSTALL)], env=env)
    assert r.returncode == 0 and (shim_cfg / "cli-plugins" / "docker-compose").is_file(), r.stderr
    listed = "{{range .ClientInfo.Plugins}}{{.Name}}={{.Vendor}} {{end}}"
    plugins = docker(p, shim_cfg, "info", "--format", listed)
    assert "compose=composeguard" in plugins.stdout, plugins.stdout + plugins.stderr

    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", {"db.txt": "precious rows\n"})
    p.write_compose({"x-composeguard": FAST, "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
    r = docker(p, shim_cfg, "compose", "up", "-d", "--wait")
    assert r.returncode == 0, r.stderr
    assert p.history() == [], "nothing to guard on a first start: plain compose up, no transaction"

    host = ("-H", "unix:///var/run/docker.sock")  # a docker option before `compose`
    for args in (("compose", *PS), ("compose", "config", "--services"), ("compose", "nosuchcommand"),
                 (*host, "compose", *PS)):
        shim, plain = docker(p, shim_cfg, *args), docker(p, plain_cfg, *args)
        assert (shim.returncode, shim.stdout, shim.stderr) == (
            plain.returncode, plain.stdout, plain.stderr), args
    assert p.name in docker(p, shim_cfg, *host, "compose", *PS).stdout
    direct = run([composeguard_bin(), *PS], cwd=p.dir, env=env, timeout=60)  # no loop either way
    assert (direct.returncode, direct.stdout) == (0, docker(p, plain_cfg, "compose", *PS).stdout)
    r = docker(p, shim_cfg, "--tlsverify", "compose", "ps")
    assert r.returncode == 2 and "--tlsverify" in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr

    before = tree(vol)
    p.push("lab/app:v2", "app")  # rewrites the data, then fails its healthcheck
    r = docker(p, shim_cfg, "compose", "up", "-d", "--pull", "always")
    assert r.returncode == 3, r.stderr
    assert "rolled back" in r.stderr
    assert v1 in p.running_digests("app")
    assert tree(vol) == before

    assert "composeguard" in docker(p, shim_cfg, "compose", "up", "--help").stdout
    r = run(["sh", str(INSTALL), "--remove"], env=env)
    assert r.returncode == 0, r.stderr
    assert not (shim_cfg / "cli-plugins" / "docker-compose").exists()
    assert "composeguard" not in docker(p, shim_cfg, "compose", "up", "--help").stdout
    assert docker(p, shim_cfg, "compose", *PS).stdout == docker(p, plain_cfg, "compose", *PS).stdout
