"""The failing upgrade, for bench/upgrade.py: the lab's v2 (it rewrites its data, then never
gets healthy) offered to N services, guarded without and with the trial run
(COMPOSEGUARD_TRIAL=0 / 1). Both end with v1 running on v1's data and exit 3; what differs is
the downtime: without the trial the services are stopped, v2 runs and fails its probe, the data
is restored and v1 started again; with it, v2 runs on clones beside v1, which is never stopped.

A poller per service GETs /version; its downtime is the time between the last v1 answer before
a failed one and the next v1 answer, summed (0 when every answer was v1). Standard library
only.
"""

from __future__ import annotations

import statistics
import threading
import time

import benchlib as lab

BAD = f"{lab.REGISTRY}/lab/app:v2"
SIDES = ("without trial", "with trial")


class OutagePoller(threading.Thread):
    """GET /version in a loop; sum the gaps in which it did not answer v1."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.stop_event = threading.Event()
        self.first_ok = threading.Event()
        self.last_ok: float | None = None
        self.failing_since: float | None = None  # the last v1 answer before a failed one
        self.outage = 0.0
        self.requests = self.failures = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            good = lab.get_version(self.port) == "v1"
            t = time.monotonic()
            self.requests += 1
            if good:
                if self.failing_since is not None:
                    self.outage += t - self.failing_since
                    self.failing_since = None
                self.last_ok = t
                self.first_ok.set()
            else:
                self.failures += 1
                if self.failing_since is None and self.last_ok is not None:
                    self.failing_since = self.last_ok
            self.stop_event.wait(self.interval)


def measure(p, side: str, interval: float) -> dict:
    """One failing upgrade of project ``p`` (bench/upgrade.py's Project), on one side."""
    p.reset()
    env = {**p.fresh_state(), "COMPOSEGUARD_TRIAL": "1" if side == "with trial" else "0"}
    pollers = [OutagePoller(port, interval) for port in p.ports]
    for t in pollers:
        t.start()
    try:
        for t in pollers:
            if not t.first_ok.wait(30):
                raise RuntimeError("the v1 services do not answer on their ports")
        p.publish(BAD, keep_local=lab.REGISTRY + "/lab/app:v1")
        proc, total = lab.timed_guarded_up(p.cg, p.dir, env, 3, side)
        deadline = time.monotonic() + 30  # after exit 3 v1 answers again (at once, with the trial)
        while any(t.failing_since is not None for t in pollers) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        lab.stop_pollers(pollers)
    if any(t.failing_since is not None for t in pollers):
        raise RuntimeError(f"{side}: a service does not answer v1 again 30 s after the rollback")
    return {
        "total": total,
        "downtime": [t.outage for t in pollers],
        "failures": sum(t.failures for t in pollers),
    }


def report(results: dict[int, dict[str, list[dict]]]) -> list[tuple[str, bool, str]]:
    """Print the failing-upgrade table; return its verdicts."""
    print()
    print("failing upgrade (v2: rewrites its data, never healthy), guarded, exit 3 on both sides")
    print("downtime = time without a v1 answer, per service; all services of all rounds")
    print(
        f"{'services':>8}  {'without s':>9} {'(min-max)':>11}  {'with trial s':>12} {'(min-max)':>11}"
        f"  {'down without':>12} {'down with':>10} {'failed GETs with':>16}"
    )
    verdicts = []
    for n, res in results.items():
        t0 = [r["total"] for r in res[SIDES[0]]]
        t1 = [r["total"] for r in res[SIDES[1]]]
        d0 = [d for r in res[SIDES[0]] for d in r["downtime"]]
        d1 = [d for r in res[SIDES[1]] for d in r["downtime"]]
        failed = sum(r["failures"] for r in res[SIDES[1]])
        print(
            f"{n:>8}  {statistics.median(t0):>9.2f} {lab.spread(t0):>11}  {statistics.median(t1):>12.2f} "
            f"{lab.spread(t1):>11}  {statistics.median(d0):>11.2f}s {max(d1):>9.2f}s {failed:>16}"
        )
        verdicts.append(
            (f"failing upgrade with the trial: no downtime at {n}", max(d1) == 0, f"{max(d1):.2f}s")
        )
    return verdicts
