"""Health probes after an upgrade: healthcheck, running-and-stable, and extra probes.

A container that exits, restarts or turns unhealthy fails at once; one without a
healthcheck must stay running, without a restart, for the settle window. Extra probes
(``x-composeguard: {probe: {http|tcp|exec: …}}``) must pass as well. All changed services
are probed in parallel, each within its own timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

from composeguard import execute
from composeguard.compose.docker import DaemonUnreachable, inspect_container, wait_for_daemon
from composeguard.entry import docker_binary
from composeguard.settings import EffectiveSettings, Probe

log = logging.getLogger("composeguard.probe")
POLL = 0.5


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


def wait_ready(
    container_id: str,
    settings: EffectiveSettings,
    deadline: float,
    now: Callable[[], float] = time.time,
) -> tuple[bool, str]:
    """Watch one container until it is healthy (or stable) or fails. (ok, detail)."""
    first_restarts: int | None = None
    while True:
        try:
            info = inspect_container(container_id)
        except DaemonUnreachable:
            # dockerd is restarting: wait for it within the probe's own deadline
            if now() >= deadline or not wait_for_daemon(max(deadline - now(), 1.0)):
                return False, "dockerd did not answer"
            first_restarts = None  # a daemon restart restarts containers: count afresh
            continue
        if not info:
            return False, "the container disappeared"
        state = info.get("State") or {}
        restarts = int(info.get("RestartCount") or 0)
        if first_restarts is None:
            first_restarts = restarts
        status = state.get("Status")
        if status in ("exited", "dead"):
            return False, f"exited with code {state.get('ExitCode')}"
        if state.get("Restarting") or restarts > first_restarts or status == "restarting":
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
        elif status == "running":
            started = _started_at(state)
            if started is not None and now() - started >= settings.settle:
                return True, f"running and stable for {settings.settle:g}s"
        if now() >= deadline:
            what = f"health is {health.get('Status')}" if health else f"status is {status}"
            return False, f"not ready after {settings.timeout:g}s ({what})"
        time.sleep(POLL)


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


def probe_container(service: str, container_id: str, settings: EffectiveSettings) -> ProbeResult:
    t0 = time.time()
    deadline = t0 + settings.timeout
    ok, detail = wait_ready(container_id, settings, deadline)
    if ok and settings.probe:
        retrying = Retrying(
            stop=stop_after_delay(max(deadline - time.time(), 1.0)),
            wait=wait_fixed(1),
            retry=retry_if_result(lambda r: not r[0]),
            retry_error_callback=lambda state: state.outcome.result(),
        )
        ok, detail = retrying(run_extra_probe, settings.probe, container_id)
    return ProbeResult(service, ok, detail, time.time() - t0)


def probe_all(targets: list[tuple[str, str, EffectiveSettings]]) -> list[ProbeResult]:
    """Probe (service, container id, settings) triples in parallel."""
    if not targets:
        return []
    with ThreadPoolExecutor(max_workers=min(len(targets), 32)) as pool:
        return list(pool.map(lambda t: probe_container(*t), targets))
