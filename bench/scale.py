#!/usr/bin/env python3
"""`composeguard plan` on a project of 100 services: wall time and peak memory.

Makes a throwaway project of --services services (default 100), each with a bind volume on
its own Btrfs subvolume in the lab pool, in dependency chains of 5 (s001 depends on s000,
s002 on s001, …, s005 starts a new chain). The first half runs 127.0.0.1:5000/<project>/a,
the second half …/b, both v1 of the lab's plain image (the app image without HEALTHCHECK:
100 healthchecks a second would keep the 2 cores of the lab busy and distort the timing;
`plan` does not look at health). It is deployed with plain `docker compose up -d`; then the
registry tag of `a` moves to v3 (the host keeps v1), so `plan` has 50 changes to report.

Then `composeguard plan` and `composeguard plan --json` run alternately for --rounds rounds
(the first --warmup discarded). Each run is a fresh process: the console script is run
in-process by a small wrapper on the same interpreter (runpy), which records at exit its own
peak RSS (getrusage RUSAGE_SELF: composeguard's Python process) and the largest peak RSS of
the children it waited for (RUSAGE_CHILDREN: the docker CLI processes composeguard runs,
which are separate processes and not part of composeguard's own figure).

    bench/scale.py [--rounds 5] [--warmup 1] [--services 100]

Needs the lab (bash lab/lab.sh up) and root. Standard library only. Removes what it made at
the end, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as lab  # noqa: E402

lab.configure("bench/scale", run_timeout=900)

OLD, NEW = f"{lab.REGISTRY}/lab/plain:v1", f"{lab.REGISTRY}/lab/plain:v3"
TARGET_S = 3.0
CHAIN = 5

# Runs the console script in this very process and reports getrusage at exit.
WRAPPER = r"""
import atexit, resource, runpy, sys
out = sys.argv[1]
def report():
    s = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    c = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    with open(out, "w") as f:
        f.write(f"{s} {c}\n")
atexit.register(report)
sys.argv = sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def script_interpreter(cg: str) -> str:
    """The Python of a console script (its #! line): the wrapper must run on it."""
    with open(cg, "rb") as f:
        first = f.readline().decode(errors="replace").strip()
    if not first.startswith("#!") or "python" not in first:
        lab.fail(f"{cg} is not a Python console script (#! line: {first!r}); cannot measure its RSS")
    interp = first[2:].strip().split()[0]
    if not os.access(interp, os.X_OK):
        lab.fail(f"the interpreter of {cg} ({interp}) is not executable")
    return interp


def check_memory(n: int) -> None:
    """Room in RAM for ``n`` small containers, with 1 GiB to spare."""
    avail = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    need = n * 20 << 20  # a busybox container + its shim: well under 20 MiB
    if avail < need + (1 << 30):
        lab.fail(f"{n} containers want about {need >> 20} MiB; only {avail >> 20} MiB available")


class Project:
    def __init__(self, tmp: Path, name: str, n: int) -> None:
        self.name, self.n, self.tmp = name, n, tmp
        self.dir = tmp / name
        self.dir.mkdir()
        self.state = tmp / f"{name}-state"
        self.refs = {g: f"{lab.REGISTRY}/{name}/{g}:latest" for g in ("a", "b")}
        self.services = [f"s{i:03d}" for i in range(n)]
        self.subvolumes: list[Path] = []
        self.tagged: set[str] = set()

    def publish(self, group: str, source: str, keep_local: str | None = None) -> None:
        ref = self.refs[group]
        lab.run(["docker", "tag", source, ref])
        self.tagged.add(group)
        lab.run(["docker", "push", "-q", ref])
        if keep_local:
            lab.run(["docker", "tag", keep_local, ref])

    def create(self) -> None:
        half = self.n // 2
        lines = [f"name: {self.name}", "services:"]
        for i, svc in enumerate(self.services):
            sv = lab.POOL / f"{self.name}-{svc}"
            lab.run(["btrfs", "subvolume", "create", str(sv)])
            self.subvolumes.append(sv)
            (sv / "db.txt").write_text(f"data of {svc}\n")
            lines += [
                f"  {svc}:",
                f"    image: {self.refs['a' if i < half else 'b']}",
                f'    volumes: ["{sv}:/data"]',
            ]
            if i % CHAIN:
                lines.append(f"    depends_on: [{self.services[i - 1]}]")
        (self.dir / "compose.yaml").write_text("\n".join(lines) + "\n")
        self.publish("a", OLD)
        self.publish("b", OLD)

    def destroy(self) -> None:
        if (self.dir / "compose.yaml").exists():
            lab.remove_project(self.name, self.dir, ["-f", "compose.yaml"])
        lab.delete_subvolumes(lab.POOL / ".composeguard-snapshots" / self.name)
        for sv in self.subvolumes:
            if sv.exists():
                lab.run(["btrfs", "subvolume", "delete", str(sv)], check=False)
        for g in self.tagged:
            lab.untag_repository(self.refs[g].rsplit(":", 1)[0])


def measure(p: Project, interp: str, cg: str, args: list[str]) -> dict:
    fd, out = tempfile.mkstemp(prefix="rusage-", dir=p.tmp)
    os.close(fd)
    env = {**lab.clean_env(), "COMPOSEGUARD_STATE_DIR": str(p.state)}
    t0 = time.perf_counter()
    proc = lab.run([interp, "-c", WRAPPER, out, cg, *args], cwd=p.dir, env=env, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(
            f"composeguard {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()[-3000:]}"
        )
    fields = Path(out).read_text().split()
    os.unlink(out)
    if len(fields) != 2:
        raise RuntimeError("the rusage wrapper wrote nothing (did composeguard exec?)")
    changes = None
    if "--json" in args:
        changes = len(json.loads(proc.stdout)["changes"])
    else:
        changes = sum(1 for ln in proc.stdout.splitlines() if ln.strip().startswith("change "))
    return {"wall": wall, "self_kib": int(fields[0]), "child_kib": int(fields[1]), "changes": changes}


def main() -> int:
    ap = lab.arguments(__doc__, rounds=5, warmup=1)
    ap.add_argument("--services", type=int, default=100, help="services in the project (default 100)")
    opts = ap.parse_args()
    if opts.rounds < 1 or opts.warmup < 0 or not 2 <= opts.services <= 500:
        lab.fail("--rounds >= 1, --warmup >= 0, 2 <= --services <= 500")

    cg = lab.find_composeguard(opts.composeguard)
    interp = script_interpreter(cg)
    lab.check_lab(
        tools=("docker", "btrfs"), root_for="Btrfs subvolumes, docker", pool=lab.POOL, images=(OLD, NEW)
    )
    check_memory(opts.services)
    signal.signal(signal.SIGTERM, lab.on_sigterm)

    name = f"bench{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    p = Project(tmp, name, opts.services)
    sides = {"plan": ["plan"], "plan --json": ["plan", "--json"]}
    res: dict[str, list[dict]] = {k: [] for k in sides}
    load0 = os.getloadavg()[0]
    try:
        lab.note(f"{name}: creating {opts.services} subvolumes and services")
        p.create()
        t0 = time.perf_counter()
        lab.run(["docker", "compose", "up", "-d", "--quiet-pull"], cwd=p.dir, timeout=1800)
        deploy = time.perf_counter() - t0
        lab.note(f"{name}: deployed with docker compose up -d in {deploy:.1f}s")
        p.publish("a", NEW, keep_local=OLD)  # the registry has v3 for the first half
        expected = opts.services // 2
        for i in range(opts.warmup + opts.rounds):
            order = list(sides) if i % 2 == 0 else list(sides)[::-1]
            for label in order:
                r = measure(p, interp, cg, sides[label])
                if r["changes"] != expected:
                    raise RuntimeError(f"{label} reported {r['changes']} changes, expected {expected}")
                tag = "warm-up" if i < opts.warmup else f"round {i - opts.warmup + 1}"
                lab.note(
                    f"  {tag:<8} {label:<12} {r['wall']:6.2f}s  "
                    f"RSS {r['self_kib'] / 1024:5.1f} MiB (largest child "
                    f"{r['child_kib'] / 1024:5.1f} MiB)"
                )
                if i >= opts.warmup:
                    res[label].append(r)
    except (KeyboardInterrupt, RuntimeError) as e:
        return lab.exit_status(e)
    finally:
        lab.note(f"{name}: tearing down")
        p.destroy()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"composeguard: {cg}")
    print(
        f"project: {opts.services} services, {opts.services} Btrfs subvolumes, depends_on "
        f"chains of {CHAIN}, {opts.services // 2} with a new image in the registry; "
        f"deployed in {deploy:.1f}s"
    )
    print(
        f"rounds: {opts.rounds} measured (+{opts.warmup} warm-up), alternating; "
        f"load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        "RSS: composeguard's own peak (RUSAGE_SELF); the docker CLI children are separate "
        "processes (the largest of them in the last column)"
    )
    print()
    print(
        f"{'command':<26}{'median s':>9}{'min':>8}{'max':>8}{'peak RSS MiB':>14}"
        f"{'(min-max)':>13}{'largest child MiB':>19}"
    )
    verdicts = []
    for label, rs in res.items():
        w = [r["wall"] for r in rs]
        m = [r["self_kib"] / 1024 for r in rs]
        c = [r["child_kib"] / 1024 for r in rs]
        print(
            f"{'composeguard ' + label:<26}{statistics.median(w):>9.2f}{min(w):>8.2f}"
            f"{max(w):>8.2f}{statistics.median(m):>14.1f}{f'{min(m):.1f}-{max(m):.1f}':>13}"
            f"{max(c):>19.1f}"
        )
        verdicts.append((label, statistics.median(w)))
    print()
    for label, med in verdicts:
        print(
            f"target: {label} on {opts.services} services < {TARGET_S:g} s: {med:.2f}s  -> "
            f"{'OK' if med < TARGET_S else 'NOT MET'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
