"""The lab harness: what the end-to-end tests (tests/lab, tests/zfs) and the benches (bench/)
both need to drive the lab — where it is, which composeguard to run, the environment both
composeguard and plain compose get, running a command, and removing a throwaway project
with everything composeguard made for it (containers, networks, Btrfs snapshots).

Standard library only: the benches run with any python3. The tests find it through
``pythonpath`` in pyproject.toml, the benches put this folder on sys.path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAB = Path(os.environ.get("COMPOSEGUARD_LAB", "/var/lib/composeguard-lab"))
POOL = LAB / "btrfs"
REGISTRY = "127.0.0.1:5000"

# What would pick the project, its files or its profiles for compose from OUR environment.
COMPOSE_STEERING = ("COMPOSE_PROJECT_NAME", "COMPOSE_FILE", "COMPOSE_PROFILES", "COMPOSE_ENV_FILES")


def clean_env(**extra: str) -> dict[str, str]:
    """Our environment minus composeguard's own switches (COMPOSEGUARD_DEBUG makes it announce
    the exec on stderr, by design) and what would steer compose, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSEGUARD_")}
    for k in COMPOSE_STEERING:
        env.pop(k, None)
    env.update(extra)
    return env


def composeguard_binary(given: str | None = None) -> str:
    """The installed console script (that is what users alias), not ``python -m``: ``given``
    (a path or a name on PATH), else the one beside this python, in the checkout's .venv, on
    PATH. LookupError says what was looked for."""
    if given:
        if Path(given).is_file() and os.access(given, os.X_OK):
            return given
        found = shutil.which(given)
        if found:
            return found
        raise LookupError(f"--composeguard {given}: not an executable")
    for cand in (Path(sys.executable).parent / "composeguard", ROOT / ".venv" / "bin" / "composeguard"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return str(cand)
    found = shutil.which("composeguard")
    if found:
        return found
    raise LookupError("composeguard not found beside this python, in .venv, nor on PATH")


def run(
    argv: list[str],
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 600,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` with its output captured; a timeout, and with ``check`` a non-zero exit,
    raise RuntimeError with the end of its output."""
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


def wait_for_docker(timeout: float = 90) -> bool:
    """dockerd may be restarting (a fault test does that): wait until it answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            info = run(["docker", "info", "--format", "{{.ServerVersion}}"], timeout=20, check=False)
            if info.returncode == 0:
                return True
        except RuntimeError:
            pass
        time.sleep(2)
    return False


# -- removing a throwaway project -------------------------------------------------------------
def compose_files(name: str, state: Path | None) -> list[str]:
    """The ``-f`` options for project ``name``: compose.yaml, plus the pins file composeguard
    applied (in its state dir ``state``), so that compose sees the services as they run."""
    files = ["-f", "compose.yaml"]
    if state:
        pins = state / "projects" / name / "pins.applied.yaml"
        if pins.exists():
            files += ["-f", str(pins)]
    return files


def remove_project(name: str, project_dir: Path, files: list[str] | None, volumes: bool = False) -> None:
    """``docker compose down`` with ``files`` (none: the compose file is gone), retried while
    dockerd restarts, then whatever compose did not reach (a project started with other files
    or env files): containers and networks labelled with the project. ``volumes``: their
    volumes too."""
    v = ["-v"] if volumes else []
    for _ in range(3 if files else 0):
        try:
            down = ["docker", "compose", *files, "down", "-t", "1", "--remove-orphans", *v]
            if run(down, cwd=project_dir, check=False).returncode == 0:
                break
        except RuntimeError:
            pass
        wait_for_docker()
    label = f"label=com.docker.compose.project={name}"
    for kind, ls, rm in (("container", "-aq", ["-f", *v]), ("network", "-q", [])):
        try:
            ids = run(["docker", kind, "ls", ls, "--filter", label], check=False).stdout.split()
            if ids:
                run(["docker", kind, "rm", *rm, *ids], check=False)
        except RuntimeError:
            pass
    try:  # composeguard's image holds (upgrade/imagehold.py), labelled io.composeguard.hold=NAME/TXN
        out = run(["docker", "container", "ls", "-a", "--filter", "label=io.composeguard.hold",
                   "--format", '{{.ID}} {{.Label "io.composeguard.hold"}}'], check=False).stdout
        held = [cid for cid, _, owner in (ln.partition(" ") for ln in out.splitlines())
                if owner.startswith(f"{name}/")]
        if held:
            run(["docker", "container", "rm", "-f", *held], check=False)
    except RuntimeError:
        pass


def delete_subvolumes(root: Path) -> None:
    """Every Btrfs subvolume at or below ``root``, deepest first (read-only ones too: the
    snapshots composeguard made, the subvolumes provision made inside a test's), then whatever
    is left of ``root``."""
    if not root.exists():
        return
    for p in [*sorted(root.rglob("*"), key=lambda p: -len(p.parts)), root]:
        try:
            if p.is_dir() and not p.is_symlink() and p.stat().st_ino == 256:
                run(["btrfs", "property", "set", "-ts", str(p), "ro", "false"], check=False)
                run(["btrfs", "subvolume", "delete", str(p)], check=False)
        except FileNotFoundError:
            pass
    if root.exists():
        shutil.rmtree(root, ignore_errors=True)
