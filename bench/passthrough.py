#!/usr/bin/env python3
"""Start-up overhead of the passthrough: `composeguard ps` against `docker compose ps`.

Creates a small throwaway project in a temp dir (or reuses --project-dir), brings it up with
plain `docker compose up -d --wait`, then alternates the two commands for --rounds rounds
(the first --warmup rounds are discarded), timing each with time.perf_counter around
subprocess.run (output to /dev/null), and prints the medians, their spread (p10-p90 and
min-max), the median overhead in milliseconds and the ratio. Tears the project down at the
end (unless it was reused).

    .venv/bin/python bench/passthrough.py [--rounds 30] [--composeguard PATH]

Needs the lab (dockerd, Compose v2, the registry at 127.0.0.1:5000): bash lab/lab.sh up.
Standard library only.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as lab  # noqa: E402

lab.configure("bench/passthrough")

TARGET_MS = 30.0  # step 11: within +30 ms of `docker compose ps`
IMAGE = "127.0.0.1:5000/lab/app:v1"

COMPOSE_YAML = """\
name: {name}
services:
  app:
    image: {image}
  side:
    image: {image}
"""


def check_docker() -> None:
    """benchlib's check_lab (dockerd and the Compose v2 plugin answer), after this bench's own
    wording for a missing docker CLI."""
    if shutil.which("docker") is None:
        lab.fail("docker CLI not found; the lab is not up (run `bash lab/lab.sh up` as root)")
    lab.check_lab(tools=())


def compose(project_dir: Path, *args: str) -> None:
    proc = lab.run(["docker", "compose", *args], cwd=project_dir, timeout=180, check=False)
    if proc.returncode != 0:
        lab.fail(f"docker compose {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr.strip()}")


def timed(argv: list[str], cwd: Path, environ: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        cwd=cwd,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        lab.fail(f"{' '.join(argv)} exited {proc.returncode} (cwd {cwd})")
    return elapsed * 1000.0


def main() -> int:
    ap = lab.arguments(__doc__, rounds=30, warmup=3)
    ap.add_argument(
        "--project-dir",
        metavar="DIR",
        type=Path,
        help="reuse this (already up) compose project instead of creating a throwaway one",
    )
    opts = ap.parse_args()
    if opts.rounds < 1 or opts.warmup < 0:
        lab.fail("--rounds must be >= 1 and --warmup >= 0")

    cg = lab.find_composeguard(opts.composeguard)
    check_docker()

    tmp: tempfile.TemporaryDirectory | None = None
    if opts.project_dir:
        project_dir = opts.project_dir.resolve()
        if not project_dir.is_dir():
            lab.fail(f"--project-dir {project_dir}: not a directory")
    else:
        tmp = tempfile.TemporaryDirectory(prefix="cgbench-")
        name = f"cgbench{uuid.uuid4().hex[:10]}"
        project_dir = Path(tmp.name) / name
        project_dir.mkdir()
        (project_dir / "compose.yaml").write_text(COMPOSE_YAML.format(name=name, image=IMAGE))

    environ = lab.clean_env()
    guarded_argv = [cg, "ps"]
    plain_argv = ["docker", "compose", "ps"]
    guarded: list[float] = []
    plain: list[float] = []
    try:
        if tmp is not None:
            print(f"bringing up {project_dir.name} ...", file=sys.stderr)
            compose(project_dir, "up", "-d", "--wait", "--wait-timeout", "60")
        total = opts.warmup + opts.rounds
        for i in range(total):
            # Alternate which one goes first, so neither always profits from the other's
            # warm caches (page cache, dockerd's).
            order = [(guarded_argv, guarded), (plain_argv, plain)]
            if i % 2:
                order.reverse()
            for argv, sink in order:
                ms = timed(argv, project_dir, environ)
                if i >= opts.warmup:
                    sink.append(ms)
    finally:
        if tmp is not None:
            subprocess.run(
                ["docker", "compose", "down", "-v", "-t", "1"],
                cwd=project_dir,
                env=environ,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=180,
                check=False,
            )
            tmp.cleanup()

    mg, mp = statistics.median(guarded), statistics.median(plain)
    overhead = mg - mp
    ratio = mg / mp
    # The per-round difference too: robust against drift of dockerd's own latency.
    paired = statistics.median(g - p for g, p in zip(guarded, plain, strict=True))

    print(f"composeguard: {cg}")
    print(f"rounds: {opts.rounds} measured, {opts.warmup} warm-up discarded; wall time per call, ms")
    print()
    print(f"{'command':<22}{'median':>9}{'p10':>9}{'p90':>9}{'min':>9}{'max':>9}")
    for label, xs in (("docker compose ps", plain), ("composeguard ps", guarded)):
        print(
            f"{label:<22}{statistics.median(xs):>9.1f}{lab.quantile(xs, 0.1):>9.1f}"
            f"{lab.quantile(xs, 0.9):>9.1f}{min(xs):>9.1f}{max(xs):>9.1f}"
        )
    print()
    print(f"overhead (median - median): {overhead:+.1f} ms")
    print(f"overhead (median of per-round differences): {paired:+.1f} ms")
    print(f"ratio (median / median):    {ratio:.3f}x")
    verdict = "OK" if overhead < TARGET_MS else "OVER TARGET"
    print(f"target: overhead < {TARGET_MS:.0f} ms  -> {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
