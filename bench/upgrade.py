#!/usr/bin/env python3
"""A guarded upgrade against the plain one: `composeguard up -d --pull always` against
`docker compose pull && docker compose up -d --wait`, for 1, 10 and 30 services; then a
failing upgrade guarded without and with the trial run, for 1 and 10 (bench/failing.py).

For each size a throwaway project is made: N services on the lab's app image
(127.0.0.1:5000/<project>/app:latest, which has a HEALTHCHECK, so both sides wait for
"healthy"), each with its own Btrfs subvolume in the lab pool as /data and a port published on
127.0.0.1 (PORT_BASE+i). One poller thread per service GETs /version every --poll-ms (longer
when N services would exceed --max-rate GETs a second in all) and keeps the last answer of the
old version (v1) and the first of the new one (v3): the gap is that service's downtime.

Every round runs both sides, alternating which goes first. Before each side the project is put
back on v1 (tag pushed, `docker compose up -d --wait`, composeguard's snapshots of the previous
round deleted, a fresh composeguard state dir), then the registry tag moves v1 -> v3 (the
local tag stays on v1, so both sides really pull), then the side is timed as a whole. The
first --warmup rounds are discarded. Prints, per size, the median total time of each side
with its spread, the ratio, the median downtime per service of each side and the difference.

    bench/upgrade.py [--rounds 3] [--warmup 1] [--services 1,10,30] [--failing-services 1,10]
                     [--poll-ms 20] [--max-rate 400]

Needs the lab (bash lab/lab.sh up) and root (Btrfs subvolumes). Standard library only.
Everything it creates (containers, subvolumes, composeguard's snapshots, its local image tag)
is removed at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as lab  # noqa: E402
import failing  # noqa: E402

lab.configure("bench/upgrade", run_timeout=600)

OLD, NEW = f"{lab.REGISTRY}/lab/app:v1", f"{lab.REGISTRY}/lab/app:v3"
TARGET_RATIO = 1.05  # at 10 and more services (step 14; 1.15 before)
TARGET_ADDED_DOWNTIME = 0.1  # seconds per service, at most, at 10 and more (step 14; 0.5 before)


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# -- polling ---------------------------------------------------------------------------------
class Poller(threading.Thread):
    """GET http://127.0.0.1:PORT/version in a loop; remember the last v1 and first v3 answer."""

    def __init__(self, port: int, interval: float) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.stop_event = threading.Event()
        self.last_old: float | None = None
        self.first_new: float | None = None
        self.old_after_new = False
        self.requests = self.errors = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            body = lab.get_version(self.port)
            t = time.monotonic()
            self.requests += 1
            if body == "v1":
                self.last_old = t
                if self.first_new is not None:
                    self.old_after_new = True
            elif body == "v3":
                if self.first_new is None:
                    self.first_new = t
            else:
                self.errors += 1
            self.stop_event.wait(self.interval)

    def downtime(self) -> float | None:
        if self.last_old is None or self.first_new is None:
            return None
        return self.first_new - self.last_old


# -- the project -----------------------------------------------------------------------------
class Project:
    def __init__(self, tmp: Path, prefix: str, n: int, port_base: int, cg: str) -> None:
        self.n = n
        self.name = f"{prefix}n{n}"
        self.dir = tmp / self.name
        self.dir.mkdir()
        self.ref = f"{lab.REGISTRY}/{self.name}/app:latest"
        self.ports = [port_base + i for i in range(n)]
        self.services = [f"s{i:02d}" for i in range(n)]
        self.subvolumes: list[Path] = []
        self.cg = cg
        self.state: Path | None = None
        self.tmp = tmp
        self.tagged = False

    def compose(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return lab.run(["docker", "compose", *args], cwd=self.dir, timeout=timeout)

    def create(self) -> None:
        for p in self.ports:
            if not port_free(p):
                raise RuntimeError(f"port 127.0.0.1:{p} is in use; pass another --port-base")
        lines = [
            f"name: {self.name}",
            "x-composeguard:",
            "  timeout: 60",
            "  settle: 3",
            "services:",
        ]
        for svc, port in zip(self.services, self.ports, strict=True):
            sv = lab.POOL / f"{self.name}-{svc}"
            lab.run(["btrfs", "subvolume", "create", str(sv)])
            self.subvolumes.append(sv)
            (sv / "db.txt").write_text(f"data of {svc}\n" * 100)
            lines += [
                f"  {svc}:",
                f"    image: {self.ref}",
                f'    ports: ["127.0.0.1:{port}:8080"]',
                f'    volumes: ["{sv}:/data"]',
            ]
        (self.dir / "compose.yaml").write_text("\n".join(lines) + "\n")

    def publish(self, source: str, keep_local: str | None = None) -> None:
        """Point the registry tag at ``source``; then, if asked, the local tag at ``keep_local``
        (so that the next pull has something to fetch)."""
        lab.run(["docker", "tag", source, self.ref])
        self.tagged = True
        lab.run(["docker", "push", "-q", self.ref])
        if keep_local:
            lab.run(["docker", "tag", keep_local, self.ref])

    def drop_snapshots(self) -> None:
        lab.delete_subvolumes(lab.POOL / ".composeguard-snapshots" / self.name)

    def fresh_state(self) -> dict[str, str]:
        if self.state and self.state.exists():
            shutil.rmtree(self.state)
        self.state = Path(tempfile.mkdtemp(prefix=f"{self.name}-state-", dir=self.tmp))
        return {**lab.clean_env(), "COMPOSEGUARD_STATE_DIR": str(self.state)}

    def reset(self) -> None:
        """v1 running and healthy everywhere, nothing of composeguard's left."""
        self.publish(OLD)
        self.compose("up", "-d", "--wait", "--wait-timeout", "120", "--remove-orphans")
        self.drop_snapshots()

    def destroy(self) -> None:
        if (self.dir / "compose.yaml").exists():
            lab.remove_project(self.name, self.dir, lab.compose_files(self.name, self.state))
        self.drop_snapshots()
        for sv in self.subvolumes:
            if sv.exists():
                lab.run(["btrfs", "subvolume", "delete", str(sv)], check=False)
        if self.tagged:
            lab.untag_repository(self.ref.rsplit(":", 1)[0])


# -- one measured side -----------------------------------------------------------------------
STEP = re.compile(r"^composeguard \[\s*([\d.]+)s\] (.*)$")


def measure(p: Project, side: str, interval: float) -> dict:
    p.reset()
    env = p.fresh_state()
    pollers = [Poller(port, interval) for port in p.ports]
    for t in pollers:
        t.start()
    try:
        deadline = time.monotonic() + 30
        while any(t.last_old is None for t in pollers):
            if time.monotonic() > deadline:
                raise RuntimeError("the v1 services do not answer on their ports")
            time.sleep(0.05)
        p.publish(NEW, keep_local=OLD)  # the registry has v3 now; the host still has v1
        t0 = time.perf_counter()
        if side == "plain":
            p.compose("pull", "--quiet")
            p.compose("up", "-d", "--wait", "--wait-timeout", "120")
            steps = {}
        else:
            proc, _ = lab.timed_guarded_up(p.cg, p.dir, env, 0, "guarded")
            steps = phase_times(proc.stderr)
        total = time.perf_counter() - t0
        deadline = time.monotonic() + 15
        while any(t.first_new is None for t in pollers) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        lab.stop_pollers(pollers)
    downs = [t.downtime() for t in pollers]
    missing = [svc for svc, d in zip(p.services, downs, strict=True) if d is None]
    if missing:
        raise RuntimeError(f"{side}: no v3 answer from {', '.join(missing)} after the upgrade")
    if any(t.old_after_new for t in pollers):
        lab.note(f"warning: {side}: a service answered v1 again after its first v3")
    return {
        "total": total,
        "downtime": [d for d in downs if d is not None],
        "requests": sum(t.requests for t in pollers),
        "steps": steps,
    }


def phase_times(stderr: str) -> dict[str, float]:
    """Seconds since composeguard started at which some of its progress lines appeared."""
    marks = {
        "pulling ": "pull",
        "transaction ": "stop",
        "snapshotted ": "compose up",
        "probing ": "probe",
        "committed ": "committed",
    }
    out: dict[str, float] = {}
    for line in stderr.splitlines():
        m = STEP.match(line)
        if not m:
            continue
        for prefix, key in marks.items():
            if m.group(2).startswith(prefix) and key not in out:
                out[key] = float(m.group(1))
    return out


def rounds(p: Project, sides: tuple[str, str], measure_side, opts: argparse.Namespace) -> dict:
    """The warm-up and measured rounds of both sides on a new project ``p`` (removed after),
    alternating which side goes first."""
    n = p.n
    try:
        p.create()
        lab.note(
            f"{p.name}: {n} service(s); {opts.warmup} warm-up + {opts.rounds} rounds; "
            f"poll every {interval(opts, n) * 1000:.0f} ms per service"
        )
        res: dict[str, list[dict]] = {side: [] for side in sides}
        for i in range(opts.warmup + opts.rounds):
            for side in sides if i % 2 == 0 else sides[::-1]:
                r = measure_side(p, side, interval(opts, n))
                tag = "warm-up" if i < opts.warmup else f"round {i - opts.warmup + 1}"
                lab.note(
                    f"  {tag:<8} {side:<13} total {r['total']:6.2f}s  "
                    f"downtime/service median {statistics.median(r['downtime']):5.2f}s"
                )
                if i >= opts.warmup:
                    res[side].append(r)
        return res
    finally:
        p.destroy()


def interval(opts: argparse.Namespace, n: int) -> float:
    """Seconds between two GETs of one poller."""
    return max(opts.poll_ms / 1000, n / opts.max_rate)


def main() -> int:
    ap = lab.arguments(__doc__, rounds=3, warmup=1, rounds_are="measured rounds per size")
    ap.add_argument("--services", default="1,10,30", help="project sizes (default 1,10,30)")
    ap.add_argument(
        "--poll-ms",
        type=float,
        default=20.0,
        help="pause between two GETs of one service's poller (default 20)",
    )
    ap.add_argument(
        "--max-rate",
        type=float,
        default=400.0,
        help="cap on the GETs per second of all pollers together: the pause grows "
        "with the number of services (default 400; busybox httpd forks per request, "
        "and 1500/s would load the 2 lab cores as much as what is measured)",
    )
    ap.add_argument(
        "--failing-services",
        default="1,10",
        help="sizes of the failing upgrade, without and with the trial run (default 1,10; '' skips it)",
    )
    ap.add_argument("--port-base", type=int, default=20000, help="first published port (default 20000)")
    opts = ap.parse_args()
    try:
        sizes = [int(s) for s in opts.services.split(",") if s.strip()]
        failing_sizes = [int(s) for s in opts.failing_services.split(",") if s.strip()]
    except ValueError:
        lab.fail(f"--services {opts.services!r}, --failing-services: comma-separated lists of numbers")
    if opts.rounds < 1 or opts.warmup < 0 or not sizes or min(sizes + failing_sizes) < 1 or max(sizes) > 200:
        lab.fail("--rounds >= 1, --warmup >= 0, sizes between 1 and 200")

    cg = lab.find_composeguard(opts.composeguard)
    lab.check_lab(
        tools=("docker", "btrfs"),
        root_for="Btrfs subvolumes, docker",
        pool=lab.POOL,
        images=(OLD, NEW, failing.BAD),
    )
    signal.signal(signal.SIGTERM, lab.on_sigterm)

    prefix = f"bench{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    results: dict[int, dict[str, list[dict]]] = {}
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    failing_results: dict[int, dict[str, list[dict]]] = {}
    try:
        for n in sizes:
            p = Project(tmp, prefix, n, opts.port_base, cg)
            results[n] = rounds(p, ("plain", "guarded"), measure, opts)
        for n in failing_sizes:
            p = Project(tmp, f"{prefix}f", n, opts.port_base, cg)
            failing_results[n] = rounds(p, failing.SIDES, failing.measure, opts)
    except (KeyboardInterrupt, RuntimeError) as e:
        return lab.exit_status(e)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    elapsed = time.monotonic() - started
    print(f"composeguard: {cg}")
    polls = ", ".join(f"{interval(opts, n) * 1000:.0f} ms at {n}" for n in results)
    print(
        f"rounds: {opts.rounds} measured per size (+{opts.warmup} warm-up), sides alternating; "
        f"run took {elapsed / 60:.1f} min; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(f"each service polled every {polls} (--poll-ms {opts.poll_ms:g}, --max-rate {opts.max_rate:g})")
    print("plain   = docker compose pull && docker compose up -d --wait")
    print("guarded = composeguard up -d --pull always")
    print("downtime = last v1 answer -> first v3 answer, per service; all services of all rounds")
    print()
    hdr = (
        f"{'services':>8}  {'plain s':>8} {'(min-max)':>11}  {'guarded s':>9} {'(min-max)':>11}"
        f"  {'ratio':>6}  {'down plain':>10} {'down guard':>10} {'added':>7} {'max guard':>9}"
    )
    print(hdr)
    verdicts = []
    for n, res in results.items():
        tp = [r["total"] for r in res["plain"]]
        tg = [r["total"] for r in res["guarded"]]
        dp = [d for r in res["plain"] for d in r["downtime"]]
        dg = [d for r in res["guarded"] for d in r["downtime"]]
        ratio = statistics.median(tg) / statistics.median(tp)
        added = statistics.median(dg) - statistics.median(dp)
        print(
            f"{n:>8}  {statistics.median(tp):>8.2f} {lab.spread(tp):>11}  "
            f"{statistics.median(tg):>9.2f} {lab.spread(tg):>11}  {ratio:>5.2f}x  "
            f"{statistics.median(dp):>9.2f}s {statistics.median(dg):>9.2f}s {added:>+6.2f}s "
            f"{max(dg):>8.2f}s"
        )
        if n >= 10:
            verdicts.append(
                (
                    f"total <= {TARGET_RATIO:.2f}x plain at {n} services",
                    ratio <= TARGET_RATIO,
                    f"{ratio:.2f}x",
                )
            )
        if n >= 10:  # step 14's target is per service at 30 (a lone service pays the second
            # compose start-up alone: +0.16 s at 1, printed in the table)
            verdicts.append(
                (
                    f"added downtime <= {TARGET_ADDED_DOWNTIME} s/service at {n}",
                    added <= TARGET_ADDED_DOWNTIME,
                    f"{added:+.2f}s",
                )
            )
    print()
    print("guarded: median seconds since composeguard started at which each step began")
    print("  (pull: after resolve + record; stop: after pull, change detection, storage mapping;")
    print("   compose up: after stop + snapshots; probe: after compose up + listing the containers)")
    keys = ["pull", "stop", "compose up", "probe", "committed"]
    print(f"{'services':>8}  " + " ".join(f"{k:>11}" for k in keys))
    for n, res in results.items():
        cells = []
        for k in keys:
            xs = [r["steps"][k] for r in res["guarded"] if k in r["steps"]]
            cells.append(f"{statistics.median(xs):>11.1f}" if xs else f"{'-':>11}")
        print(f"{n:>8}  " + " ".join(cells))
    if failing_results:
        verdicts += failing.report(failing_results)
    print()
    for what, ok, val in verdicts:
        print(f"target: {what:<42} {val:>7}  -> {'OK' if ok else 'NOT MET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
