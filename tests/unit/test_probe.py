"""The probe's rules on `docker inspect` states, and its batched polling (one inspect per round
for every container), and its clocks: a wall-clock step during a probe changes no verdict. The
real containers are probed in tests/lab."""

from __future__ import annotations

import pytest

from composeguard.clock import Clock, Instant
from composeguard.compose.docker import DaemonUnreachable
from composeguard.settings import EffectiveSettings, Probe
from composeguard.upgrade import probe
from composeguard.upgrade.probe import Watch, judge, probe_all, wait_ready


def settings(timeout: float = 60, settle: float = 3, extra: Probe | None = None) -> EffectiveSettings:
    return EffectiveSettings(
        probe=extra, timeout=timeout, settle=settle, quiesce="stop", unprotected="refuse", update=True
    )


def info(status: str = "running", health: str | None = None, restarts: int = 0, **state) -> dict:
    st = {"Status": status, "StartedAt": "2026-11-28T00:00:00.5Z", **state}
    if health:
        st["Health"] = {"Status": health, "Log": [{"Output": "curl: connection refused\n"}]}
    return {"Id": "c1", "State": st, "RestartCount": restarts}


T0 = 1795824000.0  # 2026-11-28T00:00:00Z, on the wall clock
M0 = 5000.0  # the monotonic clock at the same moment: another origin, so that a mix-up shows


def at(wall: float) -> Instant:
    """The moment the wall clock reads ``wall``, no step in between: mono moved as much."""
    return Instant(mono=M0 + (wall - T0), wall=wall)


class FakeClock:
    """Both clocks, moved only by the probe's own sleeps (no real time passes). ``steps`` maps
    the number of a sleep to a step of the wall clock alone, as NTP makes one, after that sleep.
    A probe that would wait for ever fails the test when mono passes ``limit`` seconds."""

    def __init__(self, steps: dict[int, float] | None = None, limit: float = 3600.0) -> None:
        self.mono, self.wall = M0, T0
        self.steps = steps or {}
        self.limit = limit
        self.sleeps = 0

    def sleep(self, seconds: float) -> None:
        self.sleeps += 1
        self.mono += seconds
        self.wall += seconds + self.steps.get(self.sleeps, 0.0)
        assert self.mono - M0 < self.limit, "the probe is still waiting after the test's bound"

    @property
    def clock(self) -> Clock:
        return Clock(wall=lambda: self.wall, mono=lambda: self.mono, sleep=self.sleep)


def still() -> Clock:
    """A clock that never moves (the probe's sleeps take no time)."""
    return Clock(wall=lambda: T0 + 1, mono=lambda: M0 + 1, sleep=lambda s: None)


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
    assert judge(Watch("app", "c1", settings(), M0), state, at(now)) == verdict


def test_a_restart_after_the_first_look_is_a_restart_loop() -> None:
    w = Watch("app", "c1", settings(), M0)
    assert judge(w, info(restarts=2), at(T0 + 1)) is None
    assert judge(w, info(restarts=3), at(T0 + 1.5)) == (False, "restart loop (restarted 3 times)")


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
    watches = [Watch(s, s, settings(), M0) for s in "abc"]

    verdicts = wait_ready(watches, clock=still())

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

    verdicts = wait_ready([Watch("app", "a", settings(), M0)], clock=still())

    assert verdicts == {"a": (True, "healthy")}


def test_dockerd_gone_for_good_fails_every_pending_probe(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(ids: list[str]) -> list[dict]:
        raise DaemonUnreachable("dockerd does not answer")

    monkeypatch.setattr(probe, "inspect_containers", down)
    monkeypatch.setattr(probe, "wait_for_daemon", lambda timeout: False)

    watches = [Watch("a", "a", settings(), M0), Watch("b", "b", settings(), M0)]
    verdicts = wait_ready(watches, clock=still())

    assert verdicts == {"a": (False, probe.DOCKERD_GONE), "b": (False, probe.DOCKERD_GONE)}


def one_shot_watch() -> Watch:
    return Watch("migrate", "c1", settings(), M0, one_shot=True)


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
    assert judge(one_shot_watch(), state, at(now)) == verdict


def test_a_long_running_service_exiting_0_still_fails() -> None:
    w = Watch("app", "c1", settings(), M0)
    assert judge(w, info("exited", ExitCode=0), at(T0 + 1)) == (False, "exited with code 0")


def test_which_services_are_one_shot() -> None:
    from types import SimpleNamespace

    from composeguard.upgrade.probe import one_shot_services

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


# -- an NTP step during a probe (step 12, point 4) ----------------------------------------------
# The nightly timer (Persistent=) fires right after boot, when NTP may step the wall clock. The
# probe measures every duration on the monotonic clock: the same container gives the same
# verdict, after the same monotonic time, whether the wall clock steps an hour or not.

HOUR = 3600.0
STEPS = [None, +HOUR, -HOUR]  # no step, or one of an hour either way right after the first poll


def probe_one(
    script,
    step: float | None,
    s: EffectiveSettings | None = None,
    since: float | None = None,
    before: float = 0.0,
) -> probe.ProbeResult:
    """``probe_all`` on one container whose ``docker inspect`` at poll n (from 1) is
    ``script(n, fake clock)``, the wall clock stepping by ``step`` after the first poll (and by
    ``before`` before it). The first poll comes 0.5 s after the container started (StartedAt
    is T0 + 0.5)."""
    fake = FakeClock({1: step} if step else None)
    fake.mono, fake.wall = M0 + 1, T0 + 1 + before
    polls = {"n": 0}

    def fake_inspect(ids: list[str]) -> list[dict]:
        polls["n"] += 1
        return [{**script(polls["n"], fake), "Id": i} for i in ids]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(probe, "inspect_containers", fake_inspect)
        [result] = probe_all([("app", "c1", s or settings())], since=since, clock=fake.clock)
    return result


def crashing(n: int, fake: FakeClock) -> dict:
    """Runs, then exits with code 1 at the 3rd poll (0.5 s of the 3 s settle window later)."""
    return info() if n < 3 else info("exited", ExitCode=1)


def steady(n: int, fake: FakeClock) -> dict:
    """Runs and stays up; no healthcheck."""
    return info()


def healthy_after_30s(n: int, fake: FakeClock) -> dict:
    return info(health="healthy" if fake.mono - M0 >= 30 else "starting")


@pytest.mark.parametrize("step", STEPS)
def test_a_crashing_image_fails_whatever_the_wall_clock_does(step: float | None) -> None:
    """Measured in wall time, the +1 h step made this container look an hour old at the 2nd
    poll: "running and stable" for an image that crashes 0.5 s later."""
    result = probe_one(crashing, step)
    assert (result.ok, result.detail) == (False, "exited with code 1")
    assert result == probe_one(crashing, None)


@pytest.mark.parametrize("step", STEPS)
def test_a_good_image_is_stable_after_the_settle_window_whatever_the_wall_clock_does(
    step: float | None,
) -> None:
    """Measured in wall time, +1 h failed it at once ("not ready after 120s") and -1 h waited
    for ever (FakeClock fails the test past an hour of monotonic time)."""
    result = probe_one(steady, step, settings(timeout=120))
    assert (result.ok, result.detail) == (True, "running and stable for 3s")
    assert result.seconds == 2.5  # 0.5 s old at the first look: 2.5 s more of the 3 s window
    assert result == probe_one(steady, None, settings(timeout=120))


@pytest.mark.parametrize("step", STEPS)
def test_a_healthcheck_that_passes_after_30s_passes_whatever_the_wall_clock_does(
    step: float | None,
) -> None:
    result = probe_one(healthy_after_30s, step, settings(timeout=60))
    assert (result.ok, result.detail) == (True, "healthy")
    assert result.seconds == 29.0  # healthy at mono M0 + 30; the probe began at M0 + 1
    assert result == probe_one(healthy_after_30s, None, settings(timeout=60))


@pytest.mark.parametrize("step", STEPS)
def test_a_healthcheck_that_never_passes_fails_at_the_monotonic_deadline(step: float | None) -> None:
    result = probe_one(lambda n, fake: info(health="starting"), step, settings(timeout=60))
    assert (result.ok, result.detail) == (False, "not ready after 60s (health is starting)")
    assert result.seconds == 60.0


@pytest.mark.parametrize("script", [crashing, steady])
def test_a_step_before_the_first_look_is_bounded_by_the_up(script) -> None:
    """The wall clock stepped +1 h between the container's start and the first poll: StartedAt
    says an hour ago, but the up began (``since``) 1 s of monotonic time before that poll."""
    stepped, plain = probe_one(script, None, since=M0, before=HOUR), probe_one(script, None, since=M0)
    assert (stepped.ok, stepped.detail) == (plain.ok, plain.detail)
    assert stepped.ok is (script is steady)


def test_a_new_start_resets_the_first_look() -> None:
    """StartedAt changed between two looks (restarted, the restart count not telling: counted
    afresh after a dockerd restart): the age starts again, bounded by the previous look even
    when the wall clock stepped in between."""
    again = "2026-11-28T00:00:03Z"  # T0 + 3
    for step in (0.0, HOUR):
        w = Watch("app", "c1", settings(), M0)
        assert judge(w, info(), at(T0 + 1)) is None  # 0.5 s old
        w.first_restarts = None  # as wait_ready does after dockerd came back
        later = Instant(mono=M0 + 3.6, wall=T0 + 3.6 + step)
        assert judge(w, info(StartedAt=again), later) is None  # 0.6 s (or at most 2.6 s) old, not 3.1


@pytest.mark.parametrize("step", STEPS)
def test_the_extra_probe_retries_on_the_monotonic_clock(monkeypatch: pytest.MonkeyPatch, step) -> None:
    """Healthy at once, the http probe answers 200 after 10 s; one that never does fails at the
    watch's deadline, in monotonic time."""
    http = Probe("http", "http://app:8080/health")
    monkeypatch.setattr(probe, "inspect_containers", lambda ids: [{**info(health="healthy"), "Id": "c1"}])
    for answers, verdict, seconds in [
        (True, (True, "http http://app:8080/health: status 200"), 10.0),
        (False, (False, "http http://app:8080/health: status 503"), 60.0),
    ]:
        fake = FakeClock({1: step} if step else None)

        def run(p: Probe, cid: str, fake: FakeClock = fake, answers: bool = answers) -> tuple[bool, str]:
            ok = answers and fake.mono - M0 >= 10
            return ok, f"http {p.target}: status {200 if ok else 503}"

        monkeypatch.setattr(probe, "run_extra_probe", run)
        [result] = probe_all([("app", "c1", settings(timeout=60, extra=http))], clock=fake.clock)
        assert ((result.ok, result.detail), result.seconds) == (verdict, seconds)


# -- a healthcheck's start_period (step 13, point 7.2) ------------------------------------------
# Docker counts no failed check during start_period: a first start that migrates for 5 minutes
# is "starting", not failed. The probe waits at least start_period + retries x interval (the
# time Docker needs to call it unhealthy after that), read from the container's own inspect.

S = 1_000_000_000  # nanoseconds, as docker inspect gives healthcheck durations


def with_healthcheck(d: dict, start_period: float = 300, interval: float = 30, retries: int = 3,
                     test: list[str] | None = None) -> dict:
    hc = {"Test": test or ["CMD-SHELL", "curl -f http://localhost/"], "Interval": int(interval * S),
          "Timeout": 10 * S, "StartPeriod": int(start_period * S), "Retries": retries}
    return {**d, "Config": {"Healthcheck": hc}}


def test_starting_within_start_period_is_not_failed_at_the_timeout() -> None:
    w = Watch("nextcloud", "c1", settings(timeout=120), M0)
    starting = with_healthcheck(info(health="starting"))
    assert judge(w, starting, at(T0 + 1)) is None
    assert judge(w, starting, at(T0 + 121)) is None, "Docker still counts no failure: start_period 5m"
    assert judge(w, starting, at(T0 + 389)) is None
    # 300 s + 3 retries x 30 s: by then Docker has said healthy or unhealthy
    assert judge(w, starting, at(T0 + 390)) == (False, "not ready after 390s (health is starting)")


def test_a_migration_healthy_after_4_minutes_passes(caplog: pytest.LogCaptureFixture) -> None:
    """Today's deadline (the 120 s timeout) failed it while Docker still said "starting"."""
    def migrating(n: int, fake: FakeClock) -> dict:
        return with_healthcheck(info(health="healthy" if fake.mono - M0 >= 240 else "starting"))

    with caplog.at_level("INFO", logger="composeguard.probe"):
        result = probe_one(migrating, None, settings(timeout=120))
    assert (result.ok, result.detail, result.seconds) == (True, "healthy", 239.0)
    said = [r.getMessage() for r in caplog.records if "start_period" in r.getMessage()]
    assert said == [
        "app: probing for up to 390s, not 120s: its healthcheck's start_period is 300s "
        "(+ 3 retries x 30s interval), longer than the timeout of 120s"
    ]


def test_unhealthy_within_start_period_still_fails_at_once() -> None:
    w = Watch("app", "c1", settings(timeout=120), M0)
    verdict = judge(w, with_healthcheck(info(health="unhealthy")), at(T0 + 5))
    assert verdict == (False, "unhealthy: curl: connection refused")


@pytest.mark.parametrize(
    ("hc", "limit"),
    [
        ({"start_period": 2, "interval": 1}, 60),  # the lab image's: 2 s + 3 x 1 s, within 60 s
        ({"start_period": 0, "interval": 30, "retries": 10}, 60),  # no start_period: the timeout rules
        ({"start_period": 50, "interval": 5}, 65),  # 50 + 3 x 5
        ({"start_period": 50, "interval": 0, "retries": 0}, 140),  # Docker's defaults: 30 s, 3 retries
        ({"start_period": 300, "test": ["NONE"]}, 60),  # healthcheck disabled: nothing to wait for
    ],
)
def test_how_long_start_period_makes_the_probe_wait(hc: dict, limit: float) -> None:
    w = Watch("app", "c1", settings(timeout=60), M0)
    judge(w, with_healthcheck(info(health="starting"), **hc), at(T0 + 1))
    assert (w.timeout, w.deadline) == (limit, M0 + limit)


def test_no_healthcheck_keeps_the_timeout(caplog: pytest.LogCaptureFixture) -> None:
    w = Watch("app", "c1", settings(timeout=60), M0)
    with caplog.at_level("INFO", logger="composeguard.probe"):
        judge(w, info(), at(T0 + 1))
    assert w.timeout == 60 and not caplog.records
