"""The end of a trial run (trial.py): tear it down (containers, then clones, then snapshots),
or, when it failed, keep its clones read-only as the failed state, pin the bad digest and end
the transaction. Both can run again: ``recover`` and the abort (rollback.py) use them too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from composeguard import execute
from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.errors import GuardError, RolledBack, StorageError
from composeguard.pins.pinfile import PinFile
from composeguard.report import Reporter, short
from composeguard.storage.base import Clone, Dataset, Snapshot
from composeguard.upgrade.journal import ROLLED_BACK, Journal
from composeguard.upgrade.retention import apply_retention

# The journal's phases while a trial runs: the live version has not been stopped.
TRIAL_PHASES = (
    "trial-snapshotting",
    "trial-cloning",
    "trial-starting",
    "trial-probing",
    "trial-removing",
    "trial-removed",
    "trial-passed",
)


def trial_compose(t: dict[str, Any], args: list[str], check: bool = False):
    """``docker compose`` on the trial's own project (its file in the transaction's folder)."""
    folder = str(Path(t["file"]).parent)
    argv = execute.compose_command("-p", t["name"], "-f", t["file"], "--project-directory", folder, *args)
    return execute.run(argv, capture=True, check=check)


def stop_trial_containers(t: dict[str, Any]) -> None:
    """Remove the trial's containers, anonymous volumes and network: by its compose file,
    then whatever is still labelled with its project name (a file lost with a full disk)."""
    if os.path.exists(t["file"]):
        trial_compose(t, ["down", "--volumes", "--remove-orphans", "--timeout", "10"])
    left = [c.id for c in docker.project_containers(t["name"])]
    if left:
        execute.run([docker.docker_binary(), "rm", "--force", "--volumes", *left], check=False, capture=True)
    net = f"{t['name']}_default"
    if (
        execute.run([docker.docker_binary(), "network", "inspect", net], check=False, capture=True).returncode
        == 0
    ):
        execute.run([docker.docker_binary(), "network", "rm", net], check=False, capture=True)


def _clones(t: dict[str, Any]) -> list[Clone]:
    return [Clone.from_json(c) for c in t.get("clones") or []]


def _snapshots(t: dict[str, Any]) -> list[Snapshot]:
    return [Snapshot.from_json(s) for s in t.get("snapshots") or []]


def _adopt(t: dict[str, Any], datasets: list[Dataset], project: str, backends: Any) -> None:
    """Snapshots made just before a kill, not yet in the journal, are the trial's too."""
    known = {s["dataset"]["name"] for s in t.get("snapshots") or []}
    for d in datasets:
        if d.name not in known:
            snap = backends(d.backend).find_snapshot(d, project, t["txn"])
            if snap is not None:
                t["snapshots"].append(snap.to_json())


def remove_trial(j: Journal, rep: Reporter, backends: Any) -> None:
    """Tear a trial down: containers, then clones (children first), then its snapshots.
    Idempotent; a clone or snapshot that cannot be destroyed is a warning (kept in the
    journal for the next ``recover`` or retention)."""
    t = j.trial
    if not t or t.get("state") in ("removed", "kept"):
        return
    stop_trial_containers(t)
    _adopt(t, j.datasets, j.project, backends)
    left: list[str] = []
    for c in reversed(_clones(t)):
        try:
            backends(c.dataset.backend).destroy(c.name)
        except (StorageError, OSError) as e:
            left.append(c.name)
            rep.warn(f"could not destroy the trial's clone {c.name}: {e}")
    if not left:
        for s in _snapshots(t):
            try:
                backends(s.dataset.backend).destroy(s.name)
            except (StorageError, OSError) as e:
                left.append(s.name)
                rep.warn(f"could not destroy the trial's snapshot {s.name}: {e}")
    t["state"] = "removed" if not left else "left"
    j.save()


def top_clones(clones: list[Clone]) -> list[Clone]:
    """Clones not inside another (a ZFS child's clone is destroyed with its parent's)."""
    return [c for c in clones if not any(o is not c and c.name.startswith(o.name + "/") for o in clones)]


def finish_failed_trial(project: Project, j: Journal, rep: Reporter, backends: Any) -> None:
    """The trial ran and failed: remove its containers, keep its clones read-only as the
    failed state, pin the bad digest, and end the transaction (exit 3). Can run again."""
    t = j.trial
    j.step("trial-removing")
    stop_trial_containers(t)
    clones = _clones(t)
    for c in clones:
        try:
            backends(c.dataset.backend).keep_clone(c)
        except (StorageError, OSError) as e:
            rep.warn(f"could not make the trial's clone {c.name} read-only: {e}")
    t["state"] = "kept"
    # The failed state is the trial's data; retention destroys it (top clones first), then
    # the snapshots the clones were made from.
    j.failed_states = [c.name for c in top_clones(clones)]
    j.snapshots = _snapshots(t)
    pins = PinFile(project.name)
    for s, c in j.changes.items():
        pins.pin(s, c.old_ref, j.id, c.new_digest or c.new_image_id, j.reason)
    try:
        pins.save()
    except (OSError, GuardError) as e:
        j.unsaved = j.unsaved or f"{pins.path}: {getattr(e, 'strerror', None) or e}"
    j.step("pinned")
    j.finish(ROLLED_BACK, j.reason)
    apply_retention(project, rep, backends)
    kept = ", ".join(j.failed_states) or "(no data)"
    raise RolledBack(
        f"{j.reason}; nothing was stopped: the live version runs on, untouched; "
        f"pinned {', '.join(f'{s}={short(c.old_ref)}' for s, c in j.changes.items())}; "
        f"the trial's data kept at {kept}; see `composeguard history`"
    )
