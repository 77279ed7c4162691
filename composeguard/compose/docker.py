"""What runs, read off Docker's state (reads.py: batched, through the CLI or the Engine API),
and compose commands for a project.

Reads are batched: one ``docker container inspect`` for all of a project's containers, and
each image is inspected once per step. (python-on-whales, used at first,
re-runs ``docker inspect`` for every attribute read older than 10 ms, which made ``plan`` on
100 services take 5 s.) Every command goes through ``execute.run`` and is logged at debug level.
What a local image is, and its references: images.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

from composeguard import execute
from composeguard.compose.project import Project
from composeguard.compose.reads import (
    DaemonUnreachable,
    api_listing,
    batched_inspect,
    container_ids,
    daemon_answers,
    daemon_unreachable,
    docker_root_dir,
    seen_inspects,
)
from composeguard.dockercli import docker_binary
from composeguard.errors import CommandError, GuardError, last_line

log = logging.getLogger("composeguard.docker")


@dataclass(frozen=True)
class RunningContainer:
    id: str
    name: str
    service: str
    image_id: str
    image_ref: str  # the reference the container was created from (Config.Image)
    status: str
    oneoff: bool
    # (type, volume name, host path, path in the container) of its bind and volume mounts:
    # anonymous volumes and an image's VOLUMEs are only known from here
    mounts: tuple[tuple[str, str, str, str], ...] = ()


def containers_labelled(label: str) -> list[dict[str, Any]]:
    """The raw inspect of every container (running or not) that carries ``label``."""
    return batched_inspect("container", container_ids(label))


def _identity(d: dict[str, Any]) -> tuple[str, str, dict[str, str]]:
    """(ID, name, labels) of a container's inspect."""
    return d["Id"], str(d.get("Name", "")).lstrip("/"), (d.get("Config") or {}).get("Labels") or {}


UP_STATES = ("running", "restarting", "paused")  # a container in one of these is "up"


def project_containers(project: str) -> list[RunningContainer]:
    """Every container compose made for ``project`` (running or not), one-off runs excluded:
    one ``docker ps`` and one batched ``docker container inspect``."""
    out = []
    for d in containers_labelled(f"com.docker.compose.project={project}"):
        cid, name, labels = _identity(d)
        out.append(
            RunningContainer(
                id=cid,
                name=name,
                service=labels.get("com.docker.compose.service", ""),
                image_id=d.get("Image", ""),
                image_ref=(d.get("Config") or {}).get("Image", ""),
                status=(d.get("State") or {}).get("Status", ""),
                oneoff=labels.get("com.docker.compose.oneoff") == "True",
                mounts=tuple(
                    (str(m.get("Type", "")), str(m.get("Name", "")), str(m.get("Source", "")),
                     str(m.get("Destination", "")))
                    for m in d.get("Mounts") or []
                    if m.get("Type") in ("bind", "volume")
                ),
            )
        )
    return [c for c in out if not c.oneoff and c.service]


def project_container_ids(project: str) -> list[tuple[str, str]]:
    """(container ID, service) of every container compose made for ``project``, one-off runs
    excluded, from ONE ``docker ps`` (no inspect): what the probe needs to know which
    containers to watch, while thirty just-started containers are cheap to list."""
    listed = api_listing(f"com.docker.compose.project={project}")
    if listed is not None:
        out = []
        for c in listed:
            labels = c.get("Labels") or {}
            service = labels.get("com.docker.compose.service")
            if service and labels.get("com.docker.compose.oneoff") != "True":
                out.append((str(c.get("Id", "")), service))
        return out
    fmt = '{{.ID}} {{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.oneoff"}}'
    proc = execute.run(
        [docker_binary(), "container", "ls", "-a", "--no-trunc", "--format", fmt,
         "--filter", f"label=com.docker.compose.project={project}"],
        check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        if daemon_unreachable(proc.stderr):
            raise DaemonUnreachable("dockerd does not answer")
        raise GuardError(f"docker: container ls failed: {last_line(proc.stderr, str(proc.returncode))}")
    out = []
    for line in proc.stdout.splitlines():
        cid, service, oneoff = ([*line.split(" "), "", ""])[:3]
        if cid and service and oneoff != "True":
            out.append((cid, service))
    return out


def inspect_containers(ids: list[str]) -> list[dict[str, Any]]:
    """The raw ``docker inspect`` of these containers in one process (fresh every call; used
    by the probes); missing ones are left out; DaemonUnreachable when dockerd does not answer."""
    return batched_inspect("container", ids)


def wait_for_daemon(timeout: float) -> bool:
    """Wait until dockerd answers (after a restart); False when it did not within ``timeout``."""
    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    return Retrying(
        stop=stop_after_delay(timeout),
        wait=wait_fixed(1),
        retry=retry_if_result(lambda ok: not ok),
        retry_error_callback=lambda state: False,
    )(daemon_answers)


def wait_healthy_again(ids: list[str], limit: float = 120.0) -> list[str]:
    """After an unpause: dockerd reports a paused container ``unhealthy`` until its next
    passing check (about one interval later), and compose fails a service that waits on it
    with ``condition: service_healthy`` at once. Wait until every container with a healthcheck
    is healthy again, at most two intervals plus its timeout (and ``limit``); the names of
    those that are not, for a warning."""
    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    def health(d: dict[str, Any]) -> str:
        return str(((d.get("State") or {}).get("Health") or {}).get("Status") or "")

    def checked() -> list[dict[str, Any]]:
        return [d for d in inspect_containers(ids) if health(d)]

    def seconds(ns: float | None, default: float) -> float:  # Docker's defaults: 30 s
        return (ns or default * 1e9) / 1e9

    first = checked()
    if not first:
        return []
    hc = [(d.get("Config") or {}).get("Healthcheck") or {} for d in first]
    wait = min(limit, max(2 * seconds(h.get("Interval"), 30) + seconds(h.get("Timeout"), 30) for h in hc))

    def sick() -> list[str]:
        return [str(d.get("Name", "")).lstrip("/") for d in checked() if health(d) != "healthy"]

    return Retrying(
        stop=stop_after_delay(wait),
        wait=wait_fixed(0.2),
        retry=retry_if_result(bool),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
    )(sick)


def compose(
    project: Project,
    args: list[str],
    *,
    extra_files: list[str] | None = None,
    capture: bool = False,
    check: bool = True,
    timeout: float | None = None,
):
    """Run ``docker compose`` on the project's own files (+ ``extra_files``)."""
    argv = execute.compose_command(*project.compose_args(extra_files), *args)
    return execute.run(argv, capture=capture, check=check, timeout=timeout)


def save_logs(container_id: str, path: str) -> None:
    try:
        proc = execute.run([docker_binary(), "logs", "--timestamps", container_id], check=False, timeout=60)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(proc.stdout or "")
            f.write(proc.stderr or "")
    except (CommandError, OSError) as e:
        log.warning("could not save the logs of %s: %s", container_id, e)


@dataclass(frozen=True)
class ContainerUse:
    """One container on the host (any project or none) and the host paths it mounts."""

    id: str
    name: str
    project: str  # "" for a container compose did not make
    service: str
    sources: tuple[tuple[str, str], ...]  # (mount type, host path) of its bind and volume mounts
    running: bool = False
    networks: tuple[str, ...] = ()  # the names of the networks it is attached to

    def describe(self) -> str:
        owner = f" of project {self.project}" if self.project else ""
        return f"container {self.name}{owner}"


def all_container_uses() -> list[ContainerUse]:
    """Every container on the host, running or stopped, with the host paths it mounts: one
    ``docker ps -a`` and one batched inspect. Used to find who else keeps data in a dataset."""
    out = []
    containers = batched_inspect("container", container_ids())
    # A local volume made with -o o=bind -o device=DIR shows its _data path in a container's
    # Mounts, but its data is DIR: one batched volume inspect says where each one really is.
    names = sorted({str(m["Name"]) for d in containers for m in d.get("Mounts") or []
                    if m.get("Type") == "volume" and m.get("Name")})
    devices = {}
    for v in batched_inspect("volume", names):
        opts = v.get("Options") or {}
        if opts.get("device") and "bind" in str(opts.get("o", "")).split(","):
            devices[v.get("Name")] = str(opts["device"])
    for d in containers:
        cid, name, labels = _identity(d)
        sources = tuple(
            (str(m.get("Type", "")), devices.get(m.get("Name")) or str(m["Source"]))
            for m in d.get("Mounts") or []
            if m.get("Type") in ("bind", "volume") and m.get("Source")
        )
        project = labels.get("com.docker.compose.project", "")
        running = bool((d.get("State") or {}).get("Running"))
        service = labels.get("com.docker.compose.service", "")
        networks = tuple(sorted((d.get("NetworkSettings") or {}).get("Networks") or {}))
        out.append(ContainerUse(cid, name, project, service, sources, running, networks))
    return out


def data_root() -> str:
    """Docker's data-root (``DockerRootDir``): named volumes and image layers live there.
    While a plan is made, read off a container inspected already (dockerd keeps each
    container's ``hosts`` file at ``<data-root>/containers/<ID>/hosts``, remapped roots
    included) rather than ``docker info``, which gathers everything else too (half a second
    on a busy host)."""
    for d in seen_inspects():
        hosts, cid = str(d.get("HostsPath") or ""), str(d.get("Id") or "")
        suffix = f"/containers/{cid}/hosts"
        if cid and hosts.endswith(suffix) and os.path.isabs(hosts) and len(hosts) > len(suffix):
            return hosts[: -len(suffix)]
    return docker_root_dir()
