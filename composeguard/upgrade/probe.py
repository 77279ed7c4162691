"""Health probes after an upgrade: healthcheck, running-and-stable, and extra probes.

A container that exits, restarts or turns unhealthy fails at once; one without a
healthcheck must stay running, without a restart, for the settle window. Extra probes
(``x-composeguard: {probe: {http|tcp|exec: …}}``) must pass as well. All changed services
are probed in parallel, each within its own timeout, or longer for a container whose
healthcheck has a longer ``start_period`` (healthcheck_wait): Docker itself still calls such a
container "starting".

Deadlines, settle windows and retry timeouts are measured on the monotonic clock
(composeguard.clock): the wall clock is read only to turn Docker's ``StartedAt`` into an age,
once per container start, so an NTP step during a probe changes no verdict.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tenacity import Retrying, retry_if_result, wait_fixed

from composeguard import execute
from composeguard.clock import SYSTEM, Clock, Instant
from composeguard.compose.docker import (
    DaemonUnreachable,
    inspect_containers,
    project_container_ids,
    wait_for_daemon,
)
from composeguard.dockercli import docker_binary
from composeguard.settings import EffectiveSettings, Probe

if TYPE_CHECKING:
    from composeguard.compose.project import Project
    from composeguard.report import Reporter

log = logging.getLogger("composeguard.probe")
POLL = 0.25  # one batched docker inspect per round, whatever the number of services
DOCKERD_GONE = "dockerd does not answer"  # no verdict on the image: an interruption


@dataclass(frozen=True)
class ProbeResult:
    service: str
    ok: bool
    detail: str
    seconds: float


def _started_at(state: dict) -> float | None:
    """Docker's StartedAt has nanoseconds ('2026-11-28T01:02:03.123456789Z'); keep microseconds."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d{1,6})?", state.get("StartedAt") or "")
    if not m:
        return None
    return dt.datetime.fromisoformat(m.group(1) + (m.group(2) or "") + "+00:00").timestamp()


@dataclass
class Watch:
    """What the probe knows about one container between two polls."""

    service: str
    container_id: str
    settings: EffectiveSettings
    started: float  # monotonic: when the probe began
    first_restarts: int | None = None
    ended: float = 0.0  # monotonic: when the verdict was reached
    one_shot: bool = False  # restart: "no", or awaited with service_completed_successfully
    since: float | None = None  # monotonic, just before `docker compose up` began
    # The first look at the container's current start: (its StartedAt, mono then, its age then)
    first_look: tuple[str, float, float] | None = None
    last_look: float | None = None  # monotonic: the latest look at a running container
    # how long it may take: the service's timeout, or longer when its healthcheck's
    # start_period says so (set at the first look at the container, see healthcheck_wait)
    limit: float | None = None

    @property
    def timeout(self) -> float:
        return self.settings.timeout if self.limit is None else self.limit

    @property
    def deadline(self) -> float:
        return self.started + self.timeout


NS = 1e9  # Docker's healthcheck durations are nanoseconds
# Docker's defaults for a healthcheck field left at 0 (moby daemon/health.go)
DEFAULT_INTERVAL, DEFAULT_RETRIES = 30.0, 3


def healthcheck_wait(timeout: float, healthcheck: dict | None) -> tuple[float, str]:
    """How long to wait for a container with this ``Config.Healthcheck`` (its inspect: the
    image's HEALTHCHECK merged with the compose file's ``healthcheck:``), and why, when that
    is longer than the service's ``timeout``.

    During ``start_period`` Docker counts no failed check: the container stays "starting",
    however long the application takes (a Nextcloud or Jellyfin migration at first start:
    start_period 5m). Judging it failed then, while Docker itself still waits, would roll back
    a good upgrade. After start_period Docker needs ``retries`` failed checks in a row,
    ``interval`` apart, to call it unhealthy: so the wait is at least start_period + retries ×
    interval, the moment by which Docker has turned a container whose checks answer healthy
    or unhealthy. (A check that hangs until its own timeout stretches that further; it fails
    anyway, and "not ready" is then the same verdict.) The probe fails at once on "unhealthy"
    and passes at once on "healthy", so the longer wait costs time only while Docker says
    "starting". Measured from the probe's start, which comes after the container's: never
    shorter than Docker's own window."""
    hc = healthcheck or {}
    test = hc.get("Test") or []
    if not test or test[0] == "NONE":
        return timeout, ""
    start_period = (hc.get("StartPeriod") or 0) / NS
    interval = (hc.get("Interval") or 0) / NS or DEFAULT_INTERVAL
    retries = int(hc.get("Retries") or 0) or DEFAULT_RETRIES
    wait = start_period + retries * interval
    if start_period <= 0 or wait <= timeout:
        return timeout, ""
    return wait, (
        f"its healthcheck's start_period is {start_period:g}s (+ {retries} retries x {interval:g}s "
        f"interval), longer than the timeout of {timeout:g}s"
    )


def _age(w: Watch, state: dict, now: Instant) -> float | None:
    """How long a running container has run: its age at the first look at this start (wall now
    minus StartedAt, both read then), plus the monotonic time since that look. A wall-clock
    step after the first look changes nothing. The first age is clamped to what the monotonic
    clock allows: no more than since the up began (``since``) or, when StartedAt changed (the
    container restarted), since the previous look, which saw the old start."""
    started = _started_at(state)
    if started is None:
        return None
    raw = str(state.get("StartedAt"))
    if w.first_look is None or w.first_look[0] != raw:
        bound = w.since if w.first_look is None else w.last_look
        age = max(now.wall - started, 0.0)
        if bound is not None:
            age = min(age, max(now.mono - bound, 0.0))
        w.first_look = (raw, now.mono, age)
    w.last_look = now.mono
    _, mono0, age0 = w.first_look
    return age0 + (now.mono - mono0)


def judge(w: Watch, info: dict, now: Instant) -> tuple[bool, str] | None:
    """The verdict on one container from its ``docker inspect``, looked at ``now``: (ok, detail),
    or None while it is still starting. No I/O and no clock of its own, so that every rule is
    unit-tested (it keeps what it saw on ``w``: the restart count, the first look)."""
    if not info:
        return False, "the container disappeared"
    if w.limit is None:
        w.limit, why = healthcheck_wait(w.settings.timeout, (info.get("Config") or {}).get("Healthcheck"))
        if why:
            log.info("%s: probing for up to %gs, not %gs: %s", w.service, w.limit, w.settings.timeout, why)
    state = info.get("State") or {}
    restarts = int(info.get("RestartCount") or 0)
    if w.first_restarts is None:
        w.first_restarts = restarts
    status = state.get("Status")
    if w.one_shot and status == "exited" and state.get("ExitCode") == 0 and restarts == w.first_restarts:
        return True, "completed (exit 0)"  # a migration job or an init container: its success
    if status in ("exited", "dead"):
        return False, f"exited with code {state.get('ExitCode')}"
    if state.get("Restarting") or restarts > w.first_restarts or status == "restarting":
        return False, f"restart loop (restarted {restarts} times)"
    health = state.get("Health")
    if health:
        hs = health.get("Status")
        if hs == "healthy":
            return True, "healthy"
        if hs == "unhealthy":
            logs = health.get("Log") or []
            last = (logs[-1].get("Output") or "").strip().splitlines() if logs else []
            return False, "unhealthy" + (f": {last[-1]}" if last else "")
    elif status == "running" and not w.one_shot:  # a one-shot must finish, not just run
        age = _age(w, state, now)
        if age is not None and age >= w.settings.settle:
            return True, f"running and stable for {w.settings.settle:g}s"
    if now.mono >= w.deadline:
        what = f"health is {health.get('Status')}" if health else f"status is {status}"
        return False, f"not ready after {w.timeout:g}s ({what})"
    return None


def wait_ready(watches: list[Watch], clock: Clock = SYSTEM) -> dict[str, tuple[bool, str]]:
    """Poll every container until each is healthy (or stable) or has failed: ONE batched
    ``docker inspect`` per round for all of them, however many services change. Each watch
    carries its own (monotonic) deadline (``judge`` fails it there), so the polling itself
    never stops."""
    verdicts: dict[str, tuple[bool, str]] = {}
    pending = {w.container_id: w for w in watches}

    def one_round() -> bool:
        """Judge what can be judged; True when every container has its verdict."""
        try:
            found = {c.get("Id", ""): c for c in inspect_containers(list(pending))}
        except DaemonUnreachable:
            # dockerd is restarting: wait for it within the probes' own deadline
            left = max(w.deadline for w in pending.values()) - clock.mono()
            if left <= 0 or not wait_for_daemon(max(left, 1.0)):
                t = clock.mono()
                for cid, w in pending.items():
                    verdicts[cid] = (False, DOCKERD_GONE)
                    w.ended = t
                pending.clear()
                return True
            for w in pending.values():
                w.first_restarts = None  # a daemon restart restarts containers: count afresh
            return False
        t = clock.now()  # read after the inspect: what it saw is no later than this
        for cid, w in list(pending.items()):
            info = found.get(cid) or next((v for k, v in found.items() if k.startswith(cid)), {})
            verdict = judge(w, info, t)
            if verdict is not None:
                verdicts[cid] = verdict
                w.ended = t.mono
                del pending[cid]
        return not pending

    if pending:
        until_done = retry_if_result(lambda done: not done)
        Retrying(wait=wait_fixed(POLL), retry=until_done, reraise=True, sleep=clock.sleep)(one_round)
    return verdicts


def run_extra_probe(probe: Probe, container_id: str) -> tuple[bool, str]:
    if probe.kind == "http":
        try:
            with urllib.request.urlopen(str(probe.target), timeout=5) as r:  # noqa: S310
                code = r.status
        except urllib.error.HTTPError as e:
            code = e.code
        except (urllib.error.URLError, OSError) as e:
            return False, f"http {probe.target}: {getattr(e, 'reason', e)}"
        return code == probe.status, f"http {probe.target}: status {code}"
    if probe.kind == "tcp":
        host, _, port = str(probe.target).rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=5):
                return True, f"tcp {probe.target}: open"
        except OSError as e:
            return False, f"tcp {probe.target}: {e.strerror or e}"
    cmd = list(probe.target)
    proc = execute.run([docker_binary(), "exec", container_id, *cmd], check=False, timeout=60)
    return proc.returncode == 0, f"exec {' '.join(cmd)}: exit {proc.returncode}"


def _extra_probe(w: Watch, clock: Clock = SYSTEM) -> tuple[bool, str]:
    """Retry the extra probe until it passes or the watch's deadline (at least 1 s from now)."""
    assert w.settings.probe is not None
    until = max(w.deadline, clock.mono() + 1.0)
    # tenacity's stop_after_delay is monotonic as well (RetryCallState.start_time and
    # outcome_timestamp are time.monotonic() in tenacity 9.2), but it reads the machine's
    # clock: this stop reads the injected one, so that a test's fake clock bounds the retries.
    retrying = Retrying(
        stop=lambda _state: clock.mono() >= until,
        wait=wait_fixed(1),
        sleep=clock.sleep,
        retry=retry_if_result(lambda r: not r[0]),
        retry_error_callback=lambda state: state.outcome.result(),
    )
    verdict = retrying(run_extra_probe, w.settings.probe, w.container_id)
    w.ended = clock.mono()
    return verdict


def probe_all(
    targets: list[tuple[str, str, EffectiveSettings]],
    one_shot: frozenset[str] = frozenset(),
    *,
    since: float | None = None,
    clock: Clock = SYSTEM,
) -> list[ProbeResult]:
    """Probe (service, container id, settings) triples together, each within its own timeout;
    the extra probes of the ready ones run in parallel. Services in ``one_shot`` succeed by
    exiting 0 (and get no extra probe: there is nothing left to ask). ``since``: the
    monotonic time just before ``docker compose up`` began (no container can be older)."""
    if not targets:
        return []
    t0 = clock.mono()
    watches = [Watch(s, cid, st, t0, one_shot=s in one_shot, since=since) for s, cid, st in targets]
    verdicts = wait_ready(watches, clock)
    extra = [w for w in watches if verdicts[w.container_id][0] and w.settings.probe and not w.one_shot]
    if extra:
        with ThreadPoolExecutor(max_workers=min(len(extra), 32)) as pool:
            for w, verdict in zip(extra, pool.map(lambda w: _extra_probe(w, clock), extra), strict=True):
                verdicts[w.container_id] = verdict
    return [ProbeResult(w.service, *verdicts[w.container_id], w.ended - t0) for w in watches]


def one_shot_services(project: Project) -> frozenset[str]:
    """Services whose success is to run and exit 0: ``restart: "no"`` set explicitly, or a
    dependency some service awaits with ``condition: service_completed_successfully``."""
    out = {s for s, svc in project.services.items() if svc.raw.get("restart") in ("no", False)}
    for svc in project.services.values():
        deps = svc.raw.get("depends_on")
        if isinstance(deps, dict):
            out |= {
                d
                for d, how in deps.items()
                if isinstance(how, dict) and how.get("condition") == "service_completed_successfully"
            }
    return frozenset(out)


def probe_services(
    project: Project,
    services: list[str],
    rep: Reporter,
    *,
    since: float | None = None,
    clock: Clock = SYSTEM,
    containers_of: str | None = None,
) -> list[ProbeResult]:
    """Probe the containers of ``services`` of the project, each as its settings say.
    ``since``: ``clock.mono()`` read just before ``docker compose up`` began, if known.
    ``containers_of``: the compose project whose containers are probed, when not the
    project's own (the trial run's: probed with the real project's settings)."""
    if not wait_for_daemon(max(project.settings.timeout, 60)):
        return [ProbeResult(s, False, DOCKERD_GONE, 0.0) for s in services]
    listed = project_container_ids(containers_of or project.name)
    containers = [(cid, s) for cid, s in listed if s in services]
    targets = [(s, cid, project.settings.for_service(project.services[s].settings)) for cid, s in containers]
    missing = [s for s in services if s not in {s for _, s in containers}]
    rep.step(f"probing {', '.join(services)}")
    results = probe_all(targets, one_shot_services(project), since=since, clock=clock)
    results += [ProbeResult(s, False, "no container", 0.0) for s in missing]
    for r in results:
        rep.step(f"  {r.service}: {'ok' if r.ok else 'FAILED'}: {r.detail} ({r.seconds:.1f}s)")
    return results
