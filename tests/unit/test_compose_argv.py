"""Which compose composeguard runs (dockercli.compose_argv): its own commands run the compose
plugin that ``docker compose`` would run, directly and the way the docker CLI runs it; the
passthrough keeps ``docker compose`` unless composeguard's shim is that plugin. The lab runs
the real plugin and the shim (tests/lab/test_docker_cli_plugin.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composeguard import dockercli
from composeguard.dockercli import PLUGIN_ENV, NoRealCompose, compose_argv


def plugin(folder: Path, shim: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "docker-compose"
    path.write_text("#!/bin/sh\n" + ("# composeguard-docker-cli-plugin-shim\n" if shim else "exit 0\n"))
    path.chmod(0o755)
    return path


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """The user's cli-plugins folder, then one system folder (docker's search order)."""
    user, system = tmp_path / "config" / "cli-plugins", tmp_path / "system"
    monkeypatch.delenv("COMPOSEGUARD_DOCKER", raising=False)
    monkeypatch.delenv(PLUGIN_ENV, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "config"))
    monkeypatch.setattr(dockercli, "SYSTEM_PLUGIN_DIRS", (str(system),))
    return user, system


def test_own_commands_run_the_plugin_docker_would_run(dirs: tuple[Path, Path]) -> None:
    user, system = dirs
    plugin(system)
    first = plugin(user)
    assert compose_argv(direct=True) == [str(first), "compose"]
    assert os.environ[PLUGIN_ENV]  # else the plugin takes itself for standalone docker-compose
    assert compose_argv() == ["docker", "compose"]  # the passthrough


def test_the_shim_is_skipped_and_a_shim_alone_is_refused(dirs: tuple[Path, Path]) -> None:
    user, system = dirs
    plugin(user, shim=True)
    real = plugin(system)
    assert compose_argv(direct=True) == compose_argv() == [str(real), "compose"]
    real.unlink()
    with pytest.raises(NoRealCompose):
        compose_argv(direct=True)


def test_no_plugin_found_and_a_stand_in_docker_keep_docker_compose(
    dirs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert compose_argv(direct=True) == ["docker", "compose"]
    plugin(dirs[0])
    monkeypatch.setenv("COMPOSEGUARD_DOCKER", "/opt/fake-docker")
    assert compose_argv(direct=True) == ["/opt/fake-docker", "compose"]
