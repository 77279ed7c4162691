"""What the benches in this folder share: their messages and exit codes, the lab checks, and
removing the image tags a bench made. What the tests need too (where the lab is, which
composeguard, running a command, removing a project and its snapshots) is lab/harness.py,
re-exported here.

A bench puts this folder on sys.path, imports this module and calls configure() with its
name (the prefix of its messages) and the default timeout of its commands. Standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "lab"))
import harness  # noqa: E402
from harness import (  # noqa: E402, F401  (re-exported: the benches import them from here)
    LAB,
    POOL,
    REGISTRY,
    ROOT,
    clean_env,
    compose_files,
    composeguard_binary,
    delete_subvolumes,
    remove_project,
    wait_for_docker,
)

# Set by configure(): the benches differ in both.
PROG = "bench"
RUN_TIMEOUT: float = 600


def configure(prog: str, run_timeout: float = 600) -> None:
    """``prog`` prefixes fail() and note(); ``run_timeout`` is run()'s default timeout in seconds."""
    global PROG, RUN_TIMEOUT
    PROG, RUN_TIMEOUT = prog, run_timeout


def arguments(
    doc: str, rounds: int, warmup: int, rounds_are: str = "measured rounds"
) -> argparse.ArgumentParser:
    """A parser with what every bench takes: --rounds, --warmup, --composeguard. ``doc``: the
    bench's docstring, whose first paragraph is the description."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=rounds, help=f"{rounds_are} (default {rounds})")
    ap.add_argument("--warmup", type=int, default=warmup, help=f"discarded warm-up rounds (default {warmup})")
    ap.add_argument("--composeguard", metavar="PATH", help="the composeguard executable to time")
    return ap


def fail(msg: str) -> NoReturn:
    print(f"{PROG}: {msg}", file=sys.stderr)
    sys.exit(2)


def note(msg: str) -> None:
    print(f"{PROG}: {msg}", file=sys.stderr, flush=True)


def exit_status(e: KeyboardInterrupt | RuntimeError) -> int:
    """What main() returns when its measurement loop stopped on ``e`` (noted; its caller's
    ``finally`` cleans up after): 130 on Ctrl-C or SIGTERM, 1 when a step failed."""
    if isinstance(e, KeyboardInterrupt):
        note("interrupted; cleaning up")
        return 130
    note(f"error: {e}")
    return 1


def on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM cleans up as Ctrl-C does."""
    raise KeyboardInterrupt


def run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """The harness's run() with the bench's default timeout (configure())."""
    timeout = RUN_TIMEOUT if timeout is None else timeout
    return harness.run(argv, cwd=cwd, env=env, timeout=timeout, check=check)


def find_composeguard(given: str | None) -> str:
    """The composeguard to time; the checkout's bytecode compiled first, as pip and pipx
    compile an installed package's (a session with PYTHONDONTWRITEBYTECODE=1, as lab/test.sh
    sets, would otherwise compile forty modules from source at every start: 0.2 s or more)."""
    import compileall

    try:
        found = composeguard_binary(given)
    except LookupError as e:
        fail(f"{e}; pass --composeguard PATH")
    compileall.compile_dir(str(ROOT / "composeguard"), quiet=1)
    return found


# -- the lab ---------------------------------------------------------------------------------
def check_lab(
    *,
    tools: tuple[str, ...] = ("docker",),
    root_for: str | None = None,
    pool: Path | None = None,
    images: tuple[str, ...] = (),
) -> None:
    """Stop unless the lab is up, checked in this order: root (when ``root_for`` says what
    for), the ``tools`` on PATH, dockerd and its Compose v2 plugin answering, the Btrfs
    ``pool`` mounted; with ``images``, the registry answering and the images here (pulled
    when missing)."""
    if root_for is not None and os.geteuid() != 0:
        fail(f"run as root ({root_for})")
    for tool in tools:
        if shutil.which(tool) is None:
            fail(f"{tool} not found; the lab is not up (run `bash lab/lab.sh up` as root)")
    try:
        info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False)
        comp = run(["docker", "compose", "version", "--short"], timeout=20, check=False)
    except RuntimeError:
        fail("dockerd does not answer; is the lab up? (bash lab/lab.sh up)")
    if info.returncode != 0:
        fail(f"dockerd not reachable: {info.stderr.strip()} (bash lab/lab.sh up)")
    if comp.returncode != 0:
        fail(f"the Compose v2 plugin is missing: {comp.stderr.strip()} (bash lab/lab.sh up)")
    if pool is not None and not os.path.ismount(pool):
        fail(f"the lab's Btrfs pool is not mounted at {pool} (bash lab/lab.sh up)")
    if not images:
        return
    try:
        import urllib.request

        urllib.request.urlopen(f"http://{REGISTRY}/v2/", timeout=5).close()  # noqa: S310
    except OSError as e:
        fail(f"the lab registry at {REGISTRY} does not answer ({e}); bash lab/lab.sh up")
    for ref in images:
        if run(["docker", "image", "inspect", ref], check=False).returncode != 0:
            if run(["docker", "pull", "-q", ref], check=False).returncode != 0:
                fail(f"the lab image {ref} is missing (bash lab/lab.sh up)")


# -- cleaning up -----------------------------------------------------------------------------
def untag_repository(repo: str) -> None:
    """Remove this bench's local tag and the repo digests its pushes and pulls left behind
    (only the references: the lab images themselves stay)."""
    refs = run(
        [
            "docker",
            "image",
            "ls",
            "--digests",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.Repository}}@{{.Digest}}",
            repo,
        ],
        check=False,
    )
    for word in set(refs.stdout.split()):
        if not word.endswith((":<none>", "@<none>")):
            run(["docker", "image", "rm", word], check=False)


# -- the tables ------------------------------------------------------------------------------
def quantile(xs: list[float], q: float) -> float:
    """Linear-interpolated quantile of a non-empty list, q in [0, 1]."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def spread(xs: list[float]) -> str:
    """min-max, in seconds."""
    return f"{min(xs):.2f}-{max(xs):.2f}"


def get_version(port: int, timeout: float = 1.0) -> str | None:
    """GET http://127.0.0.1:PORT/version (the lab app): its body, or None on any failure."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/version")
        r = conn.getresponse()
        body = r.read().decode(errors="replace").strip()
        return body if r.status == 200 else None
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def stop_pollers(pollers: list) -> None:
    """Tell every poller thread to stop (``stop_event``), then wait for each."""
    for t in pollers:
        t.stop_event.set()
    for t in pollers:
        t.join(timeout=5)


def timed_guarded_up(
    cg: str, cwd: Path, env: dict[str, str], expect: int, who: str
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``composeguard up -d --pull always`` in ``cwd``, timed (seconds); RuntimeError naming
    ``who`` unless it exits ``expect`` (0: upgraded, 3: rolled back)."""
    t0 = time.perf_counter()
    proc = run([cg, "up", "-d", "--pull", "always"], cwd=cwd, env=env, check=False)
    total = time.perf_counter() - t0
    if proc.returncode != expect:
        raise RuntimeError(
            f"{who}: composeguard up exited {proc.returncode}, expected {expect}:\n"
            + proc.stderr.strip()[-3000:]
        )
    return proc, total
