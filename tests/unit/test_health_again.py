"""After the pause for the snapshots: wait until a paused container is healthy again
(compose.docker.wait_healthy_again), with dockerd's answers made up."""

from __future__ import annotations

from composeguard.compose import docker


def container(name: str, status: str | None, interval_s: float = 0.1) -> dict:
    health = {"Status": status} if status else None
    hc = {"Interval": int(interval_s * 1e9), "Timeout": int(0.1 * 1e9)} if status else None
    return {"Name": f"/{name}", "State": {"Health": health}, "Config": {"Healthcheck": hc}}


def test_waits_until_the_unpaused_container_is_healthy_again(monkeypatch) -> None:
    answers = iter([[container("db", "unhealthy")]] * 2 + [[container("db", "healthy")]] * 10)
    calls = []
    monkeypatch.setattr(docker, "inspect_containers", lambda ids: calls.append(ids) or next(answers))
    assert docker.wait_healthy_again(["abc"]) == []
    assert len(calls) >= 3, "it looked again until db was healthy"


def test_gives_up_after_two_intervals_and_names_who_is_not_healthy(monkeypatch) -> None:
    monkeypatch.setattr(docker, "inspect_containers", lambda ids: [container("db", "unhealthy")])
    assert docker.wait_healthy_again(["abc"]) == ["db"]


def test_no_healthcheck_nothing_to_wait_for(monkeypatch) -> None:
    monkeypatch.setattr(docker, "inspect_containers", lambda ids: [container("cache", None)])
    assert docker.wait_healthy_again(["abc"]) == []
