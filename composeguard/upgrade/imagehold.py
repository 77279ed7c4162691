"""Keep the old images that a retained snapshot's rollback needs, so ``rollback TXN`` works
offline after a ``docker image prune -a``.

A tag would not do it: ``prune -a`` removes every image that no container uses, tagged or
not. So each old image of a committed transaction gets a *hold*: a container created from it
and never started (``composeguard-hold-PROJECT-TXN-SERVICE``, named after the first service
that ran it, label ``io.composeguard.hold=PROJECT/TXN``, no network). Each VOLUME the image
declares gets an (empty, never mounted) tmpfs in the hold: otherwise creating it would make
an anonymous volume and copy the image's files into it.
Retention removes a transaction's holds when it releases its snapshots, and a rollback of that
transaction removes them (its old images run again). ``docker container prune`` and ``docker
system prune`` remove stopped containers, holds included: the README says so.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from composeguard import execute
from composeguard.compose import docker, images
from composeguard.dockercli import docker_binary
from composeguard.errors import GuardError, last_line
from composeguard.upgrade.journal import Journal

log = logging.getLogger("composeguard.imagehold")

HOLD_LABEL = "io.composeguard.hold"
# The hold never starts; should someone start it, it has nothing to run and no network.
NEVER_RUNS = "/composeguard-hold-never-runs"


def hold_name(project: str, txn: str, service: str) -> str:
    return f"composeguard-hold-{project}-{txn.lower()}-{service}"


def hold_images(j: Journal) -> list[str]:
    """Create the holds of ``j``'s old images, one per image (thirty services of one image
    need one hold, not thirty ``docker container create``), all at once; returns one line per
    image it could not hold (a warning: the upgrade is committed either way)."""
    try:
        volumes = images.image_volumes([c.old_image_id for c in j.changes.values()])
    except GuardError as e:
        return [f"{', '.join(sorted(j.changes))}: {e}"]
    users: dict[str, list[str]] = {}  # old image ID -> the services that ran it, sorted
    for service, change in sorted(j.changes.items()):
        users.setdefault(change.old_image_id, []).append(service)
    problems = [
        f"{', '.join(services)}: the image {image[:19]} is gone"
        for image, services in users.items()
        if image not in volumes
    ]
    argvs = {}
    for image, services in users.items():
        if image not in volumes:
            continue
        change = j.changes[services[0]]
        tmpfs = [f"--mount=type=tmpfs,destination={path}" for path in volumes[image]]
        argvs[", ".join(services)] = [
            docker_binary(), "container", "create", "--name", hold_name(j.project, j.id, services[0]),
            "--label", f"{HOLD_LABEL}={j.project}/{j.id}", "--label", f"{HOLD_LABEL}.image={change.old_ref}",
            "--network", "none", "--entrypoint", NEVER_RUNS, *tmpfs, image,
        ]  # fmt: skip
    with ThreadPoolExecutor(max_workers=8) as pool:
        procs = pool.map(lambda argv: execute.run(argv, check=False, capture=True), argvs.values())
        done = dict(zip(argvs, procs, strict=True))
    for services, proc in done.items():
        if proc.returncode != 0 and "is already in use" not in proc.stderr:
            problems.append(f"{services}: {last_line(proc.stderr, f'exit {proc.returncode}')}")
    return problems


def release_images(project: str, txn: str) -> str | None:
    """Remove the holds of ``txn`` (the images themselves are left to Docker); the problem as
    one line, or None."""
    try:
        ids = [c["Id"] for c in docker.containers_labelled(f"{HOLD_LABEL}={project}/{txn}")]
        if ids:
            execute.run([docker_binary(), "container", "rm", "--volumes", *ids], capture=True)
    except GuardError as e:
        return str(e)
    log.debug("released the image holds of %s: %d", txn, len(ids))
    return None
