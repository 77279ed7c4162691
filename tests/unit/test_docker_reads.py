"""The batched reads of Docker's state (compose/docker.py) with a fake ``docker`` process
runner: a plan inspects each container once, the data-root is read off a container's own
paths while planning, and the probe lists containers without inspecting them. The lab tests
run the real ``docker``."""

from __future__ import annotations

import json
import subprocess

import pytest

from composeguard import execute
from composeguard.compose import docker, reads

ID_A, ID_B = "a" * 64, "b" * 64


def inspected(cid: str, root: str = "/srv/docker") -> dict:
    return {
        "Id": cid,
        "Name": f"/shop-{cid[0]}-1",
        "Image": "sha256:" + "1" * 64,
        "HostsPath": f"{root}/containers/{cid}/hosts",
        "Config": {"Labels": {"com.docker.compose.project": "shop", "com.docker.compose.service": cid[0]}},
        "State": {"Status": "running", "Running": True},
        "Mounts": [],
    }


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def run(args, **kw) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        calls.append(argv)
        verb = argv[1:3]
        if verb == ["container", "ls"] and "--format" in argv:
            out = f"{ID_A} a False\n{ID_B} b False\n{'c' * 64} b True\n{'d' * 64}  \n"
        elif verb == ["container", "ls"]:
            out = f"{ID_A}\n{ID_B}\n"
        elif verb == ["container", "inspect"]:
            out = json.dumps([inspected(r) for r in argv[3:]])
        elif verb == ["info", "--format"]:
            out = "/var/lib/docker\n"
        else:
            raise AssertionError(f"unexpected command {argv}")
        return subprocess.CompletedProcess(argv, 0, out, "")

    monkeypatch.setattr(execute, "run", run)
    return calls


def inspects(calls: list[list[str]]) -> list[list[str]]:
    return [c[3:] for c in calls if c[1:3] == ["container", "inspect"]]


def test_a_plan_inspects_each_container_once(ran: list[list[str]]) -> None:
    with reads.inspect_once():
        first = docker.project_containers("shop")
        again = docker.project_containers("shop")
        uses = docker.all_container_uses()
    assert [c.id for c in first] == [c.id for c in again] == [ID_A, ID_B]
    assert {u.id for u in uses} == {ID_A, ID_B}
    assert inspects(ran) == [[ID_A, ID_B]], "three reads, one inspect"
    docker.project_containers("shop")
    assert len(inspects(ran)) == 2, "outside the plan every read inspects afresh"


def test_the_data_root_is_read_off_an_inspected_container(ran: list[list[str]]) -> None:
    with reads.inspect_once():
        docker.project_containers("shop")
        assert docker.data_root() == "/srv/docker"
    assert not any(c[1] == "info" for c in ran), "no docker info while a container says where"
    assert docker.data_root() == "/var/lib/docker", "no inspect at hand: docker info"


def test_the_probe_lists_containers_without_inspecting_them(ran: list[list[str]]) -> None:
    assert docker.project_container_ids("shop") == [(ID_A, "a"), (ID_B, "b")], "one-off runs left out"
    assert inspects(ran) == []
