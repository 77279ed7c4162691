"""The pull of a guarded upgrade: ``docker compose pull`` of the services that may change,
in the foreground or started in the background while composeguard reads what runs now.
A pull that failed changed nothing yet: the upgrade stops there with one line."""

from __future__ import annotations

import subprocess

from composeguard import execute
from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.errors import GuardError, last_line
from composeguard.report import Reporter


def pull(
    project: Project, services: list[str], pin_files: list[str], rep: Reporter, quiet: bool = False
) -> None:
    if not quiet:
        pulled(start_pull(project, services, pin_files, rep))
        return
    if not services:
        return
    args = ["pull", "--quiet", *services]
    pulled(None, docker.compose(project, args, extra_files=pin_files, check=False, capture=True))


def start_pull(
    project: Project, services: list[str], pin_files: list[str], rep: Reporter
) -> execute.Background | None:
    """``pull`` started in the background (its progress goes to the terminal); ``pulled``
    waits for it."""
    if not services:
        return None
    rep.step(f"pulling {', '.join(services)}")
    args = execute.compose_command(*project.compose_args(pin_files), "pull", *services)
    return execute.Background(args, capture=False)


def pulled(pulling: execute.Background | None, proc: subprocess.CompletedProcess[str] | None = None) -> None:
    """Wait for the pull started by ``start_pull`` (or look at a finished ``proc``): a pull
    that failed changed nothing yet and stops here."""
    if proc is None:
        if pulling is None:
            return
        proc = pulling.result()
    if proc.returncode != 0:
        err = last_line(proc.stderr or "", "")
        detail = f": {err}" if err else ""
        raise GuardError(f"docker compose pull failed (exit {proc.returncode}){detail}; nothing was changed")
