"""The probe's rules on `docker inspect` states, and its batched polling (one inspect per round
for every container). The real containers are probed in tests/lab."""

from __future__ import annotations

import pytest

from composeguard import probe
from composeguard.compose.docker import DaemonUnreachable
from composeguard.probe import Watch, judge, wait_ready
from composeguard.settings import EffectiveSettings


def settings(timeout: float = 60, settle: float = 3) -> EffectiveSettings:
    return EffectiveSettings(
        probe=None, timeout=timeout, settle=settle, quiesce="stop", unprotected="refuse", update=True
    )


def info(status: str = "running", health: str | None = None, restarts: int = 0, **state) -> dict:
    st = {"Status": status, "StartedAt": "2026-11-28T00:00:00.5Z", **state}
    if health:
        st["Health"] = {"Status": health, "Log": [{"Output": "curl: connection refused\n"}]}
    return {"Id": "c1", "State": st, "RestartCount": restarts}


T0 = 1795824000.0  # 2026-11-28T00:00:00Z


@pytest.mark.parametrize(
    ("state", "now", "verdict"),
    [
        (info(health="healthy"), T0 + 1, (True, "healthy")),
        (info(health="starting"), T0 + 1, None),
        (info(health="unhealthy"), T0 + 1, (False, "unhealthy: curl: connection refused")),
        (info("exited", ExitCode=2), T0 + 1, (False, "exited with code 2")),
        (info("restarting", Restarting=True), T0 + 1, (False, "restart loop (restarted 0 times)")),
        (info(), T0 + 2, None),  # no healthcheck: running for 1.5 s of the 3 s settle window
        (info(), T0 + 3.6, (True, "running and stable for 3s")),
        (info(health="starting"), T0 + 61, (False, "not ready after 60s (health is starting)")),
        ({}, T0 + 1, (False, "the container disappeared")),
    ],
)
def test_judge(state: dict, now: float, verdict: tuple[bool, str] | None) -> None:
    assert judge(Watch("app", "c1", settings(), T0), state, now) == verdict


def test_a_restart_after_the_first_look_is_a_restart_loop() -> None:
    w = Watch("app", "c1", settings(), T0)
    assert judge(w, info(restarts=2), T0 + 1) is None
    assert judge(w, info(restarts=3), T0 + 1.5) == (False, "restart loop (restarted 3 times)")


def test_one_batched_inspect_per_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three containers: one healthy at once, one after two rounds, one unhealthy. Each round
    inspects only the containers still pending, all in one call."""
    rounds: list[list[str]] = []
    script = {
        "a": ["healthy"],
        "b": ["starting", "starting", "healthy"],
        "c": ["starting", "unhealthy"],
    }

    def fake_inspect(ids: list[str]) -> list[dict]:
        rounds.append(list(ids))
        n = len(rounds) - 1
        return [{**info(health=script[i][min(n, len(script[i]) - 1)]), "Id": i} for i in ids]

    monkeypatch.setattr(probe, "inspect_containers", fake_inspect)
    monkeypatch.setattr(probe.time, "sleep", lambda s: None)
    watches = [Watch(s, s, settings(), T0) for s in "abc"]

    verdicts = wait_ready(watches, now=lambda: T0 + 1)

    assert rounds == [["a", "b", "c"], ["b", "c"], ["b"]]
    assert verdicts == {
        "a": (True, "healthy"),
        "b": (True, "healthy"),
        "c": (False, "unhealthy: curl: connection refused"),
    }


def test_dockerd_restarting_is_waited_for_and_restarts_counted_anew(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def fake_inspect(ids: list[str]) -> list[dict]:
        calls["n"] += 1
        if calls["n"] == 2:
            raise DaemonUnreachable("dockerd does not answer")
        restarts = 0 if calls["n"] == 1 else 1  # the daemon restart restarted the container
        return [{**info(health="healthy" if calls["n"] > 2 else "starting", restarts=restarts), "Id": "a"}]

    monkeypatch.setattr(probe, "inspect_containers", fake_inspect)
    monkeypatch.setattr(probe, "wait_for_daemon", lambda timeout: True)
    monkeypatch.setattr(probe.time, "sleep", lambda s: None)

    verdicts = wait_ready([Watch("app", "a", settings(), T0)], now=lambda: T0 + 1)

    assert verdicts == {"a": (True, "healthy")}


def test_dockerd_gone_for_good_fails_every_pending_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(ids: list[str]) -> list[dict]:
        raise DaemonUnreachable("dockerd does not answer")

    monkeypatch.setattr(probe, "inspect_containers", down)
    monkeypatch.setattr(probe, "wait_for_daemon", lambda timeout: False)

    watches = [Watch("a", "a", settings(), T0), Watch("b", "b", settings(), T0)]
    verdicts = wait_ready(watches, now=lambda: T0 + 1)

    assert verdicts == {"a": (False, probe.DOCKERD_GONE), "b": (False, probe.DOCKERD_GONE)}


def one_shot_watch() -> Watch:
    return Watch("migrate", "c1", settings(), T0, one_shot=True)


@pytest.mark.parametrize(
    ("state", "now", "verdict"),
    [
        (info("exited", ExitCode=0), T0 + 1, (True, "completed (exit 0)")),
        (info("exited", ExitCode=1), T0 + 1, (False, "exited with code 1")),
        (info(), T0 + 10, None),  # still running past the settle window: a one-shot must finish
        (info(), T0 + 61, (False, "not ready after 60s (status is running)")),
    ],
)
def test_one_shot_services_succeed_by_exiting_0(state: dict, now: float, verdict) -> None:
    """Step 8, point 5: a migration job or init container that exits 0 has succeeded."""
    assert judge(one_shot_watch(), state, now) == verdict


def test_a_long_running_service_exiting_0_still_fails() -> None:
    w = Watch("app", "c1", settings(), T0)
    assert judge(w, info("exited", ExitCode=0), T0 + 1) == (False, "exited with code 0")


def test_which_services_are_one_shot() -> None:
    from types import SimpleNamespace

    from composeguard.probe import one_shot_services

    def svc(**raw):
        return SimpleNamespace(raw=raw)

    project = SimpleNamespace(services={
        "migrate": svc(restart="no"),
        "init": svc(),
        "app": svc(depends_on={"init": {"condition": "service_completed_successfully"},
                               "db": {"condition": "service_healthy"}}),
        "db": svc(restart="unless-stopped"),
        "legacy": svc(restart=False),  # YAML 1.1 reads an unquoted no as false
    })
    assert one_shot_services(project) == {"migrate", "init", "legacy"}
