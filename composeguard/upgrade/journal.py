"""The transaction journal: one JSON file per transaction, rewritten atomically at every step.

The journal is written *before* each step that changes something, so after a crash it says
what may have happened and ``recover`` can finish the job.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from composeguard.errors import GuardError
from composeguard.state import make_private_dir, project_dir, read_json, write_json
from composeguard.storage.base import Dataset, Snapshot

log = logging.getLogger("composeguard.journal")

# Outcomes of a finished transaction.
COMMITTED = "committed"
ROLLED_BACK = "rolled-back"
ROLLBACK_FAILED = "rollback-failed"
ABORTED = "aborted"  # failed before anything was changed
FINISHED = (COMMITTED, ROLLED_BACK, ROLLBACK_FAILED, ABORTED)


@dataclass
class ServiceChange:
    service: str
    old_image_id: str
    old_ref: str  # the reference a pin would run: repo@sha256:… or a composeguard tag
    old_digest: str | None
    new_image_id: str | None
    new_ref: str
    new_digest: str | None
    labels: dict[str, Any] = field(default_factory=dict)  # the OCI labels of both (policy.py)


@dataclass
class Journal:
    id: str
    project: str
    command: str
    created: str
    phase: str = "started"
    outcome: str | None = None
    reason: str = ""
    changes: dict[str, ServiceChange] = field(default_factory=dict)
    unit: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    # The changed services whose old containers `up --no-start` is replacing or replaced by
    # the new version's, created and not started (written before that `up` runs): undoing
    # the quiesce must bring the old version back for them, never start what is there.
    replaced: list[str] = field(default_factory=list)
    paused: list[str] = field(default_factory=list)
    # Services around the unit (neighbours, and members that only share its data): stopped
    # with it before the snapshot, kept stopped until the verdict, then started again.
    held: list[str] = field(default_factory=list)
    # Running unit members paused only for the instant of the snapshots (Planner.frozen).
    frozen: list[str] = field(default_factory=list)
    datasets: list[Dataset] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)
    failed_states: list[str] = field(default_factory=list)
    # dataset name -> its directory-level restore (shared datasets only; see
    # storage/pathrestore.py): paths, method, the failed-state snapshot and the progress
    restores: dict[str, dict[str, Any]] = field(default_factory=dict)
    # dataset name -> the unit's volume paths in it, for every dataset: a rollback asks again
    # who else uses the dataset now (restorecheck.py)
    unit_paths: dict[str, list[str]] = field(default_factory=dict)
    # The trial run (trial.py), when there was one: its project name, compose file and own
    # snapshot txn, the snapshots and clones it made (JSON), its state and verdict.
    trial: dict[str, Any] = field(default_factory=dict)
    compose_args: list[str] = field(default_factory=list)
    cwd: str = ""  # where the run started: `recover --all` resolves compose_args from there
    # command "provision" (provision.py): the folders made into datasets and the containers
    # stopped for it; recover finishes or undoes it from this alone
    provision: dict[str, Any] = field(default_factory=dict)
    up_args: list[str] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    finished: str | None = None
    snapshots_released: bool = False
    # The new digests were judged bad: a probe (or compose up) ran and failed, or a person
    # rolled back by hand. An interruption (Ctrl-C, SIGTERM, a kill, dockerd gone) is no
    # verdict: the rollback then pins the old digest without quarantining the new one.
    judged_bad: bool = False
    rollback_error: str = ""  # why the rollback failed (outcome rollback-failed; recover resumes)
    failed_at: str = ""  # the phase the failed rollback or abort stopped at ("aborting", …)
    # Committed, but the services held around the unit were not started again yet (a kill or
    # SIGTERM right after the commit): `recover` starts them.
    held_pending: bool = False
    # The project's transactions in the order they were made, whatever the wall clock did (an
    # NTP step back at boot would sort a new ID before older ones). 0: written before it existed.
    seq: int = 0
    # Once the snapshots exist, a journal that cannot be written (a full disk) must not stop
    # the rollback: saves are then best effort and the first error is kept here (not saved).
    best_effort: bool = field(default=False, metadata={"transient": True})
    unsaved: str = field(default="", metadata={"transient": True})

    @classmethod
    def new(cls, project: str, command: str) -> Journal:
        now = dt.datetime.now(dt.UTC)
        txn = now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)
        seq = max((j.seq for j in cls.all(project)), default=0) + 1
        return cls(
            id=txn, project=project, command=command, created=now.replace(microsecond=0).isoformat(), seq=seq
        )

    # -- files -----------------------------------------------------------------------------
    @staticmethod
    def folder(project: str) -> Path:
        d = project_dir(project) / "txns"
        make_private_dir(d)
        return d

    @property
    def path(self) -> Path:
        return self.folder(self.project) / f"{self.id}.json"

    @property
    def files_dir(self) -> Path:
        d = self.folder(self.project) / self.id
        make_private_dir(d)
        return d

    def to_json(self) -> dict[str, Any]:
        """What is written to disk (and shown by ``history --json``): not the run's own flags."""
        fields_ = self.__dataclass_fields__
        return {k: v for k, v in asdict(self).items() if not fields_[k].metadata.get("transient")}

    def save(self) -> None:
        doc = self.to_json()
        try:
            write_json(self.path, doc)
        except OSError as e:
            if not self.best_effort:
                raise
            if not self.unsaved:
                log.warning("cannot write the journal %s: %s; going on with the rollback", self.path, e)
                self.unsaved = f"{self.path}: {e.strerror or e}"

    def step(self, phase: str, **detail: Any) -> None:
        """Record that ``phase`` starts (or happened) and persist the journal."""
        self.phase = phase
        entry = {"phase": phase, "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")}
        entry.update(detail)
        self.steps.append(entry)
        self.save()

    def finish(self, outcome: str, reason: str = "") -> None:
        self.outcome = outcome
        if reason:
            self.reason = reason
        self.finished = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
        self.step(outcome)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Journal:
        """Build a journal from its JSON; raises TypeError/ValueError on a wrong shape."""
        d = dict(d)
        for key in ("id", "project", "command", "created"):
            if not isinstance(d.get(key), str):
                raise ValueError(f"'{key}' is missing or not a string")

        def is_dataset(x: Any) -> bool:
            keys = ("backend", "name", "pool", "mountpoint")
            return isinstance(x, dict) and all(isinstance(x.get(k), str) for k in keys)

        for s in d.get("snapshots") or []:
            if not (isinstance(s, dict) and isinstance(s.get("name"), str) and is_dataset(s.get("dataset"))):
                raise ValueError("a snapshot entry is malformed")
        if not all(is_dataset(x) for x in d.get("datasets") or []):
            raise ValueError("a dataset entry is malformed")
        d["changes"] = {k: ServiceChange(**v) for k, v in (d.get("changes") or {}).items()}
        d["snapshots"] = [Snapshot.from_json(s) for s in d.get("snapshots") or []]
        d["datasets"] = [Dataset.from_json(x) for x in d.get("datasets") or []]
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def read(cls, path: Path) -> Journal:
        data = read_json(path)
        try:
            if not isinstance(data, dict):
                raise TypeError(f"a {type(data).__name__}, not an object")
            return cls.from_dict(data)
        except (TypeError, ValueError, AttributeError) as e:
            raise GuardError(
                f"the state file {path} is corrupt ({e}); move it aside to continue (nothing was changed)"
            ) from e

    @classmethod
    def load(cls, project: str, txn: str) -> Journal:
        return cls.read(cls.folder(project) / f"{txn}.json")

    @classmethod
    def all(cls, project: str) -> list[Journal]:
        journals = [cls.read(p) for p in sorted(cls.folder(project).glob("*.json"))]
        return sorted(journals, key=lambda j: j.seq)  # stable: those without a seq keep ID order

    @property
    def is_unfinished(self) -> bool:
        """Interrupted (no outcome), its rollback failed, or committed with the held services
        still stopped: either way ``recover`` must finish it before anything else may change
        the project."""
        return self.outcome is None or self.outcome == ROLLBACK_FAILED or self.held_pending

    def left_undone(self) -> str:
        """What ``recover`` has to finish, in words."""
        if self.outcome == ROLLBACK_FAILED:
            return f"the rollback of {self.id} failed ({self.rollback_error})"
        if self.outcome == COMMITTED and self.held_pending:
            return f"{self.command} {self.id} was committed, but {', '.join(self.held)} did not run again"
        return f"{self.command} {self.id} was interrupted at '{self.phase}'"

    @classmethod
    def unfinished(cls, project: str) -> Journal | None:
        return next((j for j in reversed(cls.all(project)) if j.is_unfinished), None)


def projects_with_journals() -> list[str]:
    from composeguard.state import state_dir

    root = state_dir() / "projects"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "txns").is_dir() and os.listdir(p / "txns"))
