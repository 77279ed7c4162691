"""composeguard reads Docker's state through the Engine API on dockerd's socket
(compose/engine.py): the same answers as the docker CLI gives, read off the real dockerd."""

from __future__ import annotations

import json

import pytest

from composeguard.compose import docker, images
from tests.lab.labproject import FAST, LabProject, app_service, output, same_on_zfs

pytestmark = pytest.mark.lab

# what a container's inspect says about it that does not change while it runs
STABLE = ("Id", "Name", "Image", "Config", "Mounts", "HostConfig", "HostsPath", "Created")


@same_on_zfs("reads of Docker's state; the storage plays no part")
def test_the_socket_answers_what_the_cli_prints(
    lab_project: LabProject, monkeypatch: pytest.MonkeyPatch
) -> None:
    p = lab_project
    p.write_compose({"x-composeguard": FAST, "services": {
        "app": app_service("lab/app:v1", p.volume("app")),
        "worker": app_service("lab/app:v1", p.volume("worker"), healthcheck=False),
    }})
    p.compose("up", "-d", "--wait")
    p.compose("run", "-d", "--name", f"{p.name}-oneoff", "worker", "sleep", "30")  # a one-off run
    monkeypatch.delenv("COMPOSEGUARD_DOCKER", raising=False)
    monkeypatch.delenv("COMPOSEGUARD_NO_ENGINE_API", raising=False)
    api_listed = sorted(docker.project_container_ids(p.name))
    api_containers = docker.inspect_containers([cid for cid, _ in api_listed])
    api_image = images.image_info("lab/app:v1")
    api_root = docker.data_root()

    monkeypatch.setenv("COMPOSEGUARD_NO_ENGINE_API", "1")
    cli_listed = sorted(docker.project_container_ids(p.name))
    assert api_listed == cli_listed
    assert sorted(s for _, s in api_listed) == ["app", "worker"]  # the one-off run left out
    cli_containers = json.loads(output("docker", "container", "inspect", *[cid for cid, _ in cli_listed]))
    assert [{k: d.get(k) for k in STABLE} for d in api_containers] == [
        {k: d.get(k) for k in STABLE} for d in cli_containers
    ]
    # the same image; its tags and digests are not compared: the lab tests running beside this
    # one tag and push lab/app:v1 into repositories of their own meanwhile
    cli_image = images.image_info("lab/app:v1")
    assert api_image is not None and cli_image is not None and api_image.id.startswith("sha256:")
    same = ("id", "created", "labels")
    assert [getattr(api_image, k) for k in same] == [getattr(cli_image, k) for k in same]
    assert "lab/app:v1" in api_image.repo_tags and "lab/app:v1" in cli_image.repo_tags
    assert api_root == output("docker", "info", "--format", "{{.DockerRootDir}}").strip()
    assert images.image_info("lab/app:no-such-tag") is None
