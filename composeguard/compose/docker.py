"""Reads of the running state through python-on-whales, and compose commands for a project.

python-on-whales runs the docker CLI for each call; every call made here is logged at debug
level as the equivalent command line.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import dataclass
from functools import cache
from typing import Any

from composeguard import execute
from composeguard.compose.project import Project
from composeguard.entry import docker_binary
from composeguard.errors import CommandError, GuardError

log = logging.getLogger("composeguard.docker")


@cache
def client() -> Any:
    from python_on_whales import DockerClient

    return DockerClient(client_call=[docker_binary()])


def _debug(*args: str) -> None:
    log.debug("run: %s", shlex.join([docker_binary(), *args]))


def _whales_error(e: Exception, what: str) -> GuardError:
    stderr = (getattr(e, "stderr", None) or str(e)).strip().splitlines()
    return GuardError(f"docker: {what} failed: {stderr[-1] if stderr else e}")


def repository(ref: str) -> str:
    """'reg:5000/a/b:tag@sha256:x' -> 'reg:5000/a/b' (no tag, no digest)."""
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def normalize_repository(repo: str) -> str:
    """Docker's short names: 'nginx' == 'docker.io/library/nginx'."""
    parts = repo.split("/")
    if parts[0] in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        parts = parts[1:]
    elif len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        return repo  # another registry: names are taken as they are
    if len(parts) == 1:
        parts = ["library", *parts]
    return "docker.io/" + "/".join(parts)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    repo_digests: tuple[str, ...]
    repo_tags: tuple[str, ...]

    def digest_for(self, ref: str) -> str | None:
        """The repo digest (``repo@sha256:…``) of this image in the repository of ``ref``."""
        want = normalize_repository(repository(ref))
        for rd in self.repo_digests:
            if normalize_repository(repository(rd)) == want:
                return rd
        return None


@dataclass(frozen=True)
class RunningContainer:
    id: str
    name: str
    service: str
    image_id: str
    image_ref: str  # the reference the container was created from (Config.Image)
    status: str
    oneoff: bool


def image_info(ref: str) -> ImageInfo | None:
    """Inspect a local image by reference or ID; None when it is not present."""
    from python_on_whales import DockerException

    _debug("image", "inspect", ref)
    try:
        img = client().image.inspect(ref)
    except DockerException as e:
        if "no such image" in (e.stderr or "").lower() or e.return_code == 1:
            return None
        raise _whales_error(e, f"image inspect {ref}") from e
    return ImageInfo(
        id=img.id, repo_digests=tuple(img.repo_digests or ()), repo_tags=tuple(img.repo_tags or ())
    )


def project_containers(project: str) -> list[RunningContainer]:
    """Every container compose made for ``project`` (running or not), one-off runs excluded."""
    from python_on_whales import DockerException

    _debug("container", "ls", "-a", "--filter", f"label=com.docker.compose.project={project}")
    try:
        containers = client().container.list(
            all=True, filters={"label": f"com.docker.compose.project={project}"}
        )
    except DockerException as e:
        raise _whales_error(e, "container ls") from e
    out = []
    for c in containers:
        labels = c.config.labels or {}
        out.append(
            RunningContainer(
                id=c.id,
                name=c.name,
                service=labels.get("com.docker.compose.service", ""),
                image_id=c.image,
                image_ref=c.config.image,
                status=c.state.status,
                oneoff=labels.get("com.docker.compose.oneoff") == "True",
            )
        )
    return [c for c in out if not c.oneoff and c.service]


class DaemonUnreachable(GuardError):
    """dockerd does not answer (restarting, stopped)."""


def daemon_unreachable(stderr: str) -> bool:
    s = (stderr or "").lower()
    return "cannot connect to the docker daemon" in s or "is the docker daemon running" in s


def inspect_container(container_id: str) -> dict[str, Any]:
    """The raw ``docker inspect`` of one container (fresh every call; used by the probes).
    {} when the container does not exist; DaemonUnreachable when dockerd does not answer."""
    import json

    proc = execute.run([docker_binary(), "container", "inspect", container_id], check=False)
    if proc.returncode != 0:
        if daemon_unreachable(proc.stderr):
            raise DaemonUnreachable("dockerd does not answer")
        return {}
    data = json.loads(proc.stdout or "[]")
    return data[0] if data else {}


def wait_for_daemon(timeout: float) -> bool:
    """Wait until dockerd answers (after a restart); False when it did not within ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        proc = execute.run(
            [docker_binary(), "version", "--format", "{{.Server.Version}}"], check=False, timeout=30
        )
        if proc.returncode == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(1)


def volume_info(name: str) -> dict[str, Any] | None:
    import json

    proc = execute.run([docker_binary(), "volume", "inspect", name], check=False)
    if proc.returncode != 0:
        return None
    data = json.loads(proc.stdout or "[]")
    return data[0] if data else None


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
    argv = [docker_binary(), "compose", *project.compose_args(extra_files), *args]
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


def tag_image(image_id: str, ref: str) -> None:
    execute.run([docker_binary(), "image", "tag", image_id, ref])
