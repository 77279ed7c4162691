"""Step 8, point 10: undoing a failed quiesce/snapshot restarts what it stopped BEFORE anything
that can fail (destroying the partial snapshots). Fakes stand in for docker and the storage:
this is about the order of two calls, which the lab's kill table exercises for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from composeguard.errors import GuardError, StorageError
from composeguard.report import Reporter
from composeguard.storage.base import Dataset, Snapshot
from composeguard.upgrade import rollback
from composeguard.upgrade.journal import ABORTED, Journal


class FailingBackend:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def destroy(self, name: str) -> None:
        self.calls.append(f"destroy {name}")
        raise StorageError(f"cannot destroy {name}: dataset is busy")


def test_abort_starts_the_services_again_even_when_a_snapshot_cannot_be_destroyed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(tmp_path / "state"))
    calls: list[str] = []
    monkeypatch.setattr(
        rollback.docker, "compose", lambda project, args, **kw: calls.append(" ".join(args))
    )
    j = Journal.new("demo", "up")
    j.stopped, j.paused = ["app"], ["db"]
    app = Dataset("btrfs", "/p/app", "/dev/x", "/p")
    j.snapshots = [Snapshot(app, "/p/.composeguard-snapshots/demo/T/pre/app")]

    with pytest.raises(GuardError, match="partial snapshot"):
        rollback.abort(object(), j, [], GuardError("the pool is full"), Reporter(quiet=True),
                       backends=lambda kind: FailingBackend(calls))

    assert calls[:2] == ["unpause db", "start app"], calls
    assert calls[2].startswith("destroy ")
    assert j.outcome == ABORTED and j.snapshots, "the snapshot left over stays in the journal"
