"""How each compose project on the host was started, read back from its containers' labels,
so that ``update --all`` runs compose on it the way it was started: the same files (paths may
contain a comma, which is also compose's separator in the label), the same working directory
and env files (so the same ``.env``, COMPOSE_PROFILES and variables), and the services that
were started (so a service enabled by ``--profile`` at start is updated, one never started is
not started). What the labels cannot tell is reported, not guessed.

Not recorded anywhere: variables exported in the shell that ran ``docker compose up``. A
project that needs them must have them in its ``.env`` or env file to be updated unattended.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from composeguard.compose.docker import containers_labelled

PREFIX = "com.docker.compose."
TRIAL_LABEL = "io.composeguard.trial"  # on the containers of a trial run (upgrade/trial_model.py)


@dataclass
class StartedProject:
    name: str
    global_args: list[str] = field(default_factory=list)
    services: list[str] = field(default_factory=list)
    problem: str = ""  # set when the project cannot be run as it was started


def split_paths(label: str) -> list[str] | None:
    """The absolute files a comma-joined compose label lists. A path may itself contain a
    comma, so the pieces are joined back every way that names existing files; None unless
    exactly one way does (files gone, or a truly ambiguous list)."""
    parts = label.split(",")
    found: list[list[str]] = []

    def walk(i: int, acc: list[str]) -> None:
        if len(found) > 1:
            return
        if i == len(parts):
            found.append(acc)
            return
        for j in range(i + 1, len(parts) + 1):
            cand = ",".join(parts[i:j])
            if os.path.isabs(cand) and os.path.isfile(cand):
                walk(j, [*acc, cand])

    if label:
        walk(0, [])
    return found[0] if len(found) == 1 else None


PIN_OVERLAY = "pins.applied.yaml"  # composeguard's own override file (pins/pinfile.py), always the last -f
PIN_HEADER = "# composeguard pins for project "


def is_pin_overlay(path: str) -> bool:
    """Whether ``path`` is composeguard's applied pin file: its name, in a state folder's
    ``projects/<name>/``, and (when it still exists) its header. A run applies it with ``-f``,
    so compose records it in the containers' config_files label with the user's files."""
    parts = path.rstrip("/").split("/")
    if len(parts) < 3 or parts[-1] != PIN_OVERLAY or parts[-3] != "projects":
        return False
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith(PIN_HEADER)
    except FileNotFoundError:
        return True  # released since (unpin, or a digest that passed): still ours, not the user's
    except OSError:
        return False


def without_pin_overlay(label: str) -> str:
    """The config_files label without composeguard's pin overlay: it is not the user's compose
    file, and passing it back would run the pinned digest for ever (``update --all`` would never
    see a new one). composeguard adds it after the user's files, so it ends the label."""
    head, sep, last = label.rpartition(",")
    while sep and is_pin_overlay(last):
        label = head
        head, sep, last = label.rpartition(",")
    return label


def _one(values: set[str], what: str) -> tuple[str, str]:
    """The single value its containers agree on, or a problem line."""
    if len(values) > 1:
        listed = "; ".join(sorted(v or "(none)" for v in values))
        return "", f"its containers were started with different {what} ({listed})"
    return (next(iter(values)) if values else ""), ""


def started_project(name: str, containers: list[dict]) -> StartedProject:
    labels = [(c.get("Config") or {}).get("Labels") or {} for c in containers]
    labels = [lb for lb in labels if lb.get(PREFIX + "oneoff") != "True" and lb.get(PREFIX + "service")]
    sp = StartedProject(name=name, services=sorted({lb[PREFIX + "service"] for lb in labels}))
    if not labels:
        sp.problem = "it has no containers but one-off runs"
        return sp
    # Compared without the pin overlay: after a rollback the pinned services' containers carry
    # it and the rest of the unit (kept as they were) does not.
    files_label, p1 = _one(
        {without_pin_overlay(lb.get(PREFIX + "project.config_files", "")) for lb in labels}, "compose files"
    )
    workdir, p2 = _one({lb.get(PREFIX + "project.working_dir", "") for lb in labels}, "working folders")
    env_label, p3 = _one({lb.get(PREFIX + "project.environment_file", "") for lb in labels}, "env files")
    if p1 or p2 or p3:
        sp.problem = p1 or p2 or p3
        return sp
    files = split_paths(files_label)
    if files is None:
        sp.problem = (
            f"cannot tell which compose files it was started with from {files_label!r}"
            " (a file is gone, or a path with a comma makes the list ambiguous)"
        )
        return sp
    env_files = split_paths(env_label) if env_label else []
    if env_files is None:
        sp.problem = f"cannot tell which env files it was started with from {env_label!r} (gone or ambiguous)"
        return sp
    if not workdir or not os.path.isdir(workdir):
        sp.problem = f"its working folder {workdir or '(not recorded)'} is gone"
        return sp
    sp.global_args = ["-p", name, "--project-directory", workdir]
    for f in files:
        sp.global_args += ["-f", f]
    for e in env_files:
        sp.global_args += ["--env-file", e]
    return sp


def host_projects() -> list[StartedProject]:
    """Every compose project with containers on the host (running or stopped), by name: one
    ``docker ps -a`` and one batched inspect."""
    by_project: dict[str, list[dict]] = {}
    for c in containers_labelled(PREFIX + "project"):
        labels = (c.get("Config") or {}).get("Labels") or {}
        name = labels.get(PREFIX + "project")
        if TRIAL_LABEL in labels:
            continue  # a trial run's copy of a project (upgrade/trial.py): never a project to update
        if name:
            by_project.setdefault(name, []).append(c)
    return [started_project(name, cs) for name, cs in sorted(by_project.items())]
