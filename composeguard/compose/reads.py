"""How Docker's state is read: batched ``docker … inspect`` and ``docker ps``, or the same
reads through the Engine API on dockerd's socket (engine.py) when that is the daemon the CLI
would ask. One place, so that every read is batched, logged, and fails the same way when
dockerd does not answer (DaemonUnreachable). What the reads mean: docker.py and images.py.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from composeguard import execute
from composeguard.compose import engine
from composeguard.dockercli import docker_binary
from composeguard.errors import GuardError, last_line

log = logging.getLogger("composeguard.docker")


class DaemonUnreachable(GuardError):
    """dockerd does not answer (restarting, stopped)."""


def daemon_unreachable(stderr: str) -> bool:
    s = (stderr or "").lower()
    return "cannot connect to the docker daemon" in s or "is the docker daemon running" in s


# While a plan is made (upgrade/preflight.py), container ID -> its inspect: the plan reads the same
# containers three times (what runs, their mounts, who else uses a dataset), and one batched
# inspect of thirty containers takes most of a second on a busy host. None: no reuse.
_seen: dict[str, dict[str, Any]] | None = None


@contextmanager
def inspect_once() -> Iterator[None]:
    """Within this block a container is inspected once: later reads of it get that first
    inspect (the project's lock keeps its own containers as they are; ``docker ps`` still
    runs every time, so a container made meanwhile is seen)."""
    global _seen
    _seen = {}
    try:
        yield
    finally:
        _seen = None


def batched_inspect(kind: str, refs: list[str]) -> list[dict[str, Any]]:
    """``docker KIND inspect REF…`` in ONE process; objects that do not exist are left out."""
    if kind == "container" and _seen is not None:
        seen = _seen
        fresh = _inspect_now(kind, [r for r in refs if r not in seen])
        seen.update({d.get("Id", ""): d for d in fresh})
        return [seen[r] for r in refs if r in seen]
    return _inspect_now(kind, refs)


# What ``docker KIND inspect REF`` asks the Engine API (engine.py).
_API_PATHS = {
    "container": "/containers/{}/json",
    "image": "/images/{}/json",
    "volume": "/volumes/{}",
    "network": "/networks/{}",
}


def api_get(path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
    try:
        return engine.get(path, query)
    except engine.Unreachable as e:
        log.debug("%s", e)
        raise DaemonUnreachable("dockerd does not answer") from e


def inspect_api(kind: str, refs: list[str]) -> list[dict[str, Any]]:
    out = []
    for ref in refs:
        status, body = api_get(_API_PATHS[kind].format(engine.quote(ref)))
        if status == 404:
            continue  # as the CLI: what does not exist is left out
        if status != 200 or not isinstance(body, dict):
            message = body.get("message") if isinstance(body, dict) else None
            raise GuardError(f"docker {kind} inspect {ref}: {message or f'HTTP {status}'}")
        out.append(body)
    return out


def _inspect_now(kind: str, refs: list[str]) -> list[dict[str, Any]]:
    if not refs:
        return []
    if engine.socket_path() is not None and kind in _API_PATHS:
        return inspect_api(kind, refs)
    proc = execute.run([docker_binary(), kind, "inspect", *refs], check=False)
    if proc.returncode != 0 and daemon_unreachable(proc.stderr):
        raise DaemonUnreachable("dockerd does not answer")
    try:
        data = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError as e:
        raise GuardError(f"docker {kind} inspect returned no JSON: {e}") from e
    return data if isinstance(data, list) else []


def api_listing(label: str | None) -> list[dict[str, Any]] | None:
    """The Engine API's list of every container (running or not), with ``label`` if given;
    None when the CLI is to be asked instead."""
    if engine.socket_path() is None:
        return None
    query = {"all": "1"}
    if label:
        query["filters"] = json.dumps({"label": [label]})
    status, body = api_get("/containers/json", query)
    if status != 200 or not isinstance(body, list):
        raise GuardError(f"docker: container ls failed: HTTP {status}")
    return body


def container_ids(label: str | None = None) -> list[str]:
    """IDs of every container (running or not), with ``label`` if given: one ``docker ps -a``."""
    listed = api_listing(label)
    if listed is not None:
        return [str(c.get("Id", "")) for c in listed]
    filters = ["--filter", f"label={label}"] if label else []
    proc = execute.run([docker_binary(), "container", "ls", "-a", "-q", "--no-trunc", *filters], check=False)
    if proc.returncode != 0:
        if daemon_unreachable(proc.stderr):
            raise DaemonUnreachable("dockerd does not answer")
        raise GuardError(f"docker: container ls failed: {last_line(proc.stderr, str(proc.returncode))}")
    return proc.stdout.split()


def seen_inspects() -> list[dict[str, Any]]:
    """The containers inspected so far within ``inspect_once`` (none outside it)."""
    return list((_seen or {}).values())


def volume_inspect(name: str) -> dict[str, Any] | None:
    """``docker volume inspect NAME``; None only when the volume does not exist (yet). Any
    other failure is an error, not "no data" (step 8, point 2)."""
    if engine.socket_path() is not None:
        found = inspect_api("volume", [name])
        return found[0] if found else None
    proc = execute.run([docker_binary(), "volume", "inspect", name], check=False)
    if proc.returncode != 0:
        err = (proc.stderr or "").strip()
        if "no such volume" in err.lower():
            return None
        if daemon_unreachable(err):
            raise DaemonUnreachable("dockerd does not answer")
        last = last_line(err, f"exit {proc.returncode}")
        raise GuardError(f"docker volume inspect {name} failed: {last}; nothing was changed")
    try:
        data = json.loads(proc.stdout or "[]")
    except json.JSONDecodeError as e:
        raise GuardError(f"docker volume inspect {name} returned no JSON: {e}") from e
    return data[0] if data else None


def docker_root_dir() -> str:
    """``DockerRootDir`` of ``docker info``."""
    if engine.socket_path() is not None:
        status, body = api_get("/info")
        if status == 200 and isinstance(body, dict):
            return str(body.get("DockerRootDir") or "/var/lib/docker")
    proc = execute.run([docker_binary(), "info", "--format", "{{.DockerRootDir}}"], check=False)
    if proc.returncode != 0:
        if daemon_unreachable(proc.stderr):
            raise DaemonUnreachable("dockerd does not answer")
        raise GuardError(f"docker info failed: {last_line(proc.stderr, str(proc.returncode))}")
    return proc.stdout.strip() or "/var/lib/docker"


def daemon_answers() -> bool:
    """Whether dockerd answers now (``/_ping``, or ``docker version``)."""
    if engine.socket_path() is not None:
        try:
            return engine.get("/_ping")[0] == 200
        except engine.Unreachable:
            return False
    cmd = [docker_binary(), "version", "--format", "{{.Server.Version}}"]
    return execute.run(cmd, check=False, timeout=30).returncode == 0
