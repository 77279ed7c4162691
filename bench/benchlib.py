"""What the benches in this folder share: their messages and exit codes, the lab checks,
running a command, and removing what a bench made (compose projects, composeguard's Btrfs
snapshots, image tags).

A bench puts this folder on sys.path, imports this module and calls configure() with its
name (the prefix of its messages) and the default timeout of its commands. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
LAB = Path(os.environ.get("COMPOSEGUARD_LAB", "/var/lib/composeguard-lab"))
REGISTRY = "127.0.0.1:5000"

# Set by configure(): the benches differ in both.
PROG = "bench"
RUN_TIMEOUT: float = 600


def configure(prog: str, run_timeout: float = 600) -> None:
    """``prog`` prefixes fail() and note(); ``run_timeout`` is run()'s default timeout in seconds."""
    global PROG, RUN_TIMEOUT
    PROG, RUN_TIMEOUT = prog, run_timeout


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


def clean_env() -> dict[str, str]:
    """Our environment without what would steer composeguard or pick compose's project."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSEGUARD_")}
    for k in ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES"):
        e.pop(k, None)
    return e


def run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with its output captured; a timeout, and with ``check`` a non-zero exit,
    raise RuntimeError. ``timeout`` defaults to the bench's (configure())."""
    if timeout is None:
        timeout = RUN_TIMEOUT
    try:
        proc = subprocess.run(
            argv,
            cwd=cwd,
            env=env or clean_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"{' '.join(argv)} did not finish within {timeout:g}s") from e
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{tail}")
    return proc


def find_composeguard(given: str | None) -> str:
    cands = (
        [given]
        if given
        else [
            str(Path(sys.executable).parent / "composeguard"),
            str(ROOT / ".venv" / "bin" / "composeguard"),
            shutil.which("composeguard") or "",
        ]
    )
    for c in cands:
        if c and Path(c).is_file() and os.access(c, os.X_OK):
            return c
        if c and given and shutil.which(c):
            return shutil.which(c) or c
    fail(
        f"composeguard not found ({given or 'beside this python, in .venv, on PATH'}); "
        "pass --composeguard PATH"
    )


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


def wait_for_docker(timeout: float = 90) -> bool:
    """dockerd may be restarting (other lab users do that): wait until it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (
                run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False).returncode
                == 0
            ):
                return True
        except RuntimeError:
            pass
        time.sleep(2)
    return False


# -- cleaning up -----------------------------------------------------------------------------
def compose_files(name: str, state: Path | None) -> list[str]:
    """The ``-f`` options for project ``name``: compose.yaml, plus the pins file composeguard
    applied (in its state dir ``state``), so that compose sees the services as they run."""
    files = ["-f", "compose.yaml"]
    if state:
        pins = state / "projects" / name / "pins.applied.yaml"
        if pins.exists():
            files += ["-f", str(pins)]
    return files


def remove_project(name: str, project_dir: Path, files: list[str]) -> None:
    """``docker compose down``, retried while dockerd restarts, then whatever compose left
    behind: containers and networks labelled with the project."""
    for _ in range(3):
        try:
            proc = run(
                ["docker", "compose", *files, "down", "-t", "1", "--remove-orphans"],
                cwd=project_dir,
                check=False,
            )
            if proc.returncode == 0:
                break
        except RuntimeError:
            pass
        wait_for_docker()
    label = f"label=com.docker.compose.project={name}"
    for kind in ("container", "network"):
        try:
            ids = run(
                ["docker", kind, "ls", "-aq" if kind == "container" else "-q", "--filter", label], check=False
            ).stdout.split()
            if ids:
                run(["docker", kind, "rm", *(["-f"] if kind == "container" else []), *ids], check=False)
        except RuntimeError:
            pass


def delete_snapshots(root: Path) -> None:
    """composeguard's read-only snapshot subvolumes below ``root`` (deepest first)."""
    if not root.exists():
        return
    for p in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        try:
            if p.is_dir() and not p.is_symlink() and p.stat().st_ino == 256:
                run(["btrfs", "property", "set", "-ts", str(p), "ro", "false"], check=False)
                run(["btrfs", "subvolume", "delete", str(p)], check=False)
        except FileNotFoundError:
            pass
    shutil.rmtree(root, ignore_errors=True)


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
