"""The order of the transaction, without the lab: every external command goes through the one
process runner (``execute.run``), which is faked here to record each ``docker compose``
command with the journal phase READ BACK FROM DISK at that moment; the storage backend and the
probe are faked the same way. So each test shows both the order of the commands and that each
phase was written before its command ran. The lab tests (tests/lab) run the real thing."""

from __future__ import annotations

import errno
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from composeguard import execute, state
from composeguard.compose.invocation import Invocation
from composeguard.compose.project import parse_project
from composeguard.errors import GuardError, RollbackFailed, RolledBack, StorageError
from composeguard.pins.pinfile import PinFile
from composeguard.report import Reporter
from composeguard.storage.base import Dataset, Snapshot
from composeguard.upgrade import recover, rollback, transaction
from composeguard.upgrade.journal import ABORTED, COMMITTED, ROLLBACK_FAILED, ROLLED_BACK, Journal
from composeguard.upgrade.planner import Change
from composeguard.upgrade.probe import ProbeResult

COMPOSE = """
name: shop
services:
  db:
    image: reg/db:1
  worker:
    image: reg/worker:1
    depends_on: [db]
  app:
    image: reg/app:latest
    depends_on: [db]
    x-composeguard: {quiesce: stop}
"""
OLD, NEW = "reg/app@sha256:" + "a" * 64, "reg/app@sha256:" + "b" * 64
DATASET = Dataset("btrfs", "/pool/shop-app", "/dev/x", "/pool")


@dataclass
class StubPlan:
    """What the transaction reads of a plan (the planner itself is tested elsewhere)."""

    changes: dict[str, Change]
    unit: list[str]
    usage: dict = field(default_factory=dict)

    def datasets(self) -> list[Dataset]:
        return [DATASET]

    def held(self) -> list[str]:
        return list(self.around)

    around: tuple[str, ...] = ()  # unit.neighbours: stopped with the unit until the verdict
    spread: tuple[str, ...] = ()  # running members with data in several subvolumes

    def frozen(self, quiesced: list[str]) -> list[str]:
        return [s for s in self.spread if s not in quiesced]


class World:
    """The fakes, and the log of (what ran, the journal phase on disk when it ran)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.log: list[tuple[str, str]] = []
        self.argvs: list[list[str]] = []  # every compose command, whole (its -f files too)
        self.journal: Journal | None = None
        self.probe_ok = [False]  # successive probe verdicts for app (the last one repeats)
        self.fail_snapshot: BaseException | None = None
        self.fail_up: BaseException | None = None
        self.interrupt_at: str | None = None  # a compose command that gets a SIGTERM
        self.old_back_fails = False  # compose refuses to bring the old version back (abort)
        self.fill_disk_at: str | None = None  # "snapshot" or "up": the state dir is full from then on
        self.disk_full = False
        real_write = state._write_atomic

        def write(path: Path, data: str | bytes, mode: int = 0o600) -> None:
            if self.disk_full and not str(path).startswith(str(self.spare)):
                raise OSError(errno.ENOSPC, "No space left on device")
            real_write(path, data, mode)

        self.spare = Path("/nonexistent")  # the fixture sets the tmpfs stand-in
        monkeypatch.setattr(state, "_write_atomic", write)
        monkeypatch.setattr(execute, "run", self.run)
        monkeypatch.setattr(transaction, "probe_services", self.probe)
        monkeypatch.setattr(rollback, "probe_services", self.probe)

    def phase(self) -> str:
        assert self.journal is not None
        return json.loads(self.journal.path.read_text())["phase"]

    def run(self, args, **kw) -> subprocess.CompletedProcess[str]:
        argv = [str(a) for a in args]
        if argv[1:2] == ["compose"]:
            i = next(n for n, a in enumerate(argv) if a in ("stop", "pause", "unpause", "start", "up"))
            self.log.append((" ".join(argv[i:]), self.phase()))
            self.argvs.append(argv)
            if " ".join(argv[i:]) == self.interrupt_at:
                raise KeyboardInterrupt  # as runner._on_sigterm raises it
            new_version = argv[i] == "up" and "--no-start" not in argv  # not the quiesce's replace
            if new_version and self.fill_disk_at == "up":
                self.fill_disk_at, self.disk_full = None, True
            if new_version and self.fail_up is not None:  # the first such `up` only
                e, self.fail_up = self.fail_up, None
                raise e
            if self.old_back_fails and " ".join(argv[i:]) == OLD_BACK:
                return subprocess.CompletedProcess(argv, 1, "", "Error response from daemon: no such image\n")
        elif argv[1:3] == ["container", "ls"]:
            return subprocess.CompletedProcess(argv, 0, "", "")
        return subprocess.CompletedProcess(argv, 0, "[]", "")

    def probe(self, project, services, rep, since=None) -> list[ProbeResult]:
        self.log.append((f"probe {' '.join(services)}", self.phase()))
        ok = self.probe_ok.pop(0) if len(self.probe_ok) > 1 else self.probe_ok[0]
        return [ProbeResult(s, ok, "healthy" if ok else "unhealthy", 0.1) for s in services]

    # the storage backend
    def snapshot(self, group, tags, on_each=None) -> list[Snapshot]:
        self.log.append(("snapshot " + " ".join(d.name for d in group), self.phase()))
        if self.fill_disk_at == "snapshot":
            self.disk_full = True
        if self.fail_snapshot is not None:
            raise self.fail_snapshot
        snaps = [Snapshot(d, f"/pool/.snaps/{tags.txn}/pre/{d.name}") for d in group]
        for s in snaps:
            on_each(s)
        return snaps

    def restore(self, snap: Snapshot, txn: str) -> str:
        self.log.append((f"restore {snap.dataset.name}", self.phase()))
        return f"/pool/.snaps/{txn}/failed"

    def destroy(self, name: str) -> None:
        self.log.append((f"destroy {name}", self.phase()))

    def find_snapshot(self, d: Dataset, project: str, txn: str) -> Snapshot | None:
        return None  # every snapshot made was journaled

    def nested(self, d: Dataset) -> list[str]:
        return []

    def whole_refused(self, d: Dataset) -> str:
        return ""


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(rollback, "SPARE_DIR", str(tmp_path / "run"))
    w = World(monkeypatch)
    w.spare = tmp_path / "run"
    return w


def start(
    world: World, around: tuple[str, ...] = (), spread: tuple[str, ...] = (), compose: str = COMPOSE
) -> transaction.Transaction:
    project = parse_project(compose, Invocation.parse([]), ["/srv/shop/compose.yaml"])
    plan = StubPlan(
        changes={"app": Change("app", "sha256:old", OLD, "reg/app:latest", "sha256:new", NEW)},
        unit=["app", "db"],
        around=around,
        spread=spread,
    )
    txn = transaction.Transaction(
        project,
        plan,
        [],
        "up",
        ["-d"],
        Reporter(quiet=True),  # type: ignore[arg-type]
        backends=lambda kind: world,
    )
    world.journal = txn.journal
    txn.journal.save()
    return txn


UP = "up --pull missing -d"


def last_file(world: World) -> Path:
    """The last compose file (``-f``) of the last compose command."""
    argv = world.argvs[-1]
    return Path([argv[n + 1] for n, a in enumerate(argv) if a in ("-f", "--file")][-1])

# The quiesce: app's new container created in place of the old one, not started.
REPLACE = "up --no-start --no-deps --pull missing app"
# Undoing it: the old version of app, on its old image (old-version.yaml), before the snapshots.
OLD_BACK = "up --detach --no-deps --pull missing --no-build app"


def test_commit(world: World) -> None:
    world.probe_ok = [True]
    assert start(world).run() == 0
    assert world.log == [
        (REPLACE, "quiescing"),
        ("snapshot /pool/shop-app", "quiescing"),
        (UP, "starting"),
        ("probe app", "probing"),
    ]
    assert Journal.load("shop", world.journal.id).outcome == COMMITTED


def test_probe_failure_rolls_back_in_order(world: World) -> None:
    world.probe_ok = [False, True]
    with pytest.raises(RolledBack):
        start(world).run()
    assert world.log == [
        (REPLACE, "quiescing"),
        ("snapshot /pool/shop-app", "quiescing"),
        (UP, "starting"),
        ("probe app", "probing"),
        ("stop app db", "stopping-unit"),
        ("restore /pool/shop-app", "restoring"),
        ("up --detach --no-recreate --no-deps --pull missing --no-build db", "pinned"),
        ("up --detach --force-recreate --no-deps --pull missing --no-build app", "pinned"),
        ("probe app", "reprobing"),
    ]
    j = Journal.load("shop", world.journal.id)
    assert j.outcome == ROLLED_BACK and j.judged_bad
    assert [b.digest for b in PinFile("shop").pins["app"].bad] == [NEW]


# A unit (app, db) with a neighbour (worker) that writes into db, up to the probe.
WORKER_HELD_UNTIL_PROBE = [
    ("stop worker", "quiescing"),
    (REPLACE, "quiescing"),
    ("snapshot /pool/shop-app", "quiescing"),
    ("up --pull missing --detach app db", "starting"),
    ("probe app", "probing"),
]


def test_a_neighbour_is_stopped_before_the_snapshot_and_started_after_the_commit(world: World) -> None:
    # worker writes into db, which a rollback would put back: it must not write meanwhile, so
    # the new version's `up` (all services: the user named none) must not start it either
    world.probe_ok = [True]
    assert start(world, around=("worker",)).run() == 0
    assert world.log == [*WORKER_HELD_UNTIL_PROBE, ("up --pull missing --detach worker", "committed")]
    assert Journal.load("shop", world.journal.id).held == ["worker"]


def test_a_sigterm_after_the_commit_leaves_the_neighbour_to_recover(world: World) -> None:
    """systemd stops the nightly job right after the commit, while the held neighbour is being
    started again: the upgrade stands, a guarded run is refused until `recover`, and `recover`
    starts the neighbour."""
    world.probe_ok = [True]
    world.interrupt_at = "up --pull missing --detach worker"
    txn = start(world, around=("worker",))
    with pytest.raises(KeyboardInterrupt):
        txn.run()
    j = Journal.unfinished("shop")
    assert j is not None and j.outcome == COMMITTED and j.held_pending
    with pytest.raises(GuardError, match="worker did not run again; run `composeguard recover`"):
        rollback.refuse_if_unfinished("shop")

    world.log = []
    assert recover.finish_interrupted(txn.project, j, Reporter(quiet=True)) == 0  # type: ignore[arg-type]
    assert [c for c, _ in world.log] == ["start worker"]
    assert Journal.unfinished("shop") is None
    assert Journal.load("shop", j.id).outcome == COMMITTED


def test_a_neighbour_stays_stopped_until_the_rollback_has_restored(world: World) -> None:
    world.probe_ok = [False, True]
    with pytest.raises(RolledBack):
        start(world, around=("worker",)).run()
    assert world.log == [
        *WORKER_HELD_UNTIL_PROBE,
        ("stop app db worker", "stopping-unit"),
        ("restore /pool/shop-app", "restoring"),
        ("up --detach --no-recreate --no-deps --pull missing --no-build db", "pinned"),
        ("up --detach --force-recreate --no-deps --pull missing --no-build app", "pinned"),
        ("up --detach --no-recreate --no-deps --pull missing --no-build worker", "pinned"),
        ("probe app", "reprobing"),
    ]


PAUSED_DB = COMPOSE.replace("image: reg/db:1", "image: reg/db:1\n    x-composeguard: {quiesce: pause}")


@pytest.mark.parametrize(
    ("spread", "compose"),
    [
        (("db",), COMPOSE),  # PGDATA and pg_wal on two Btrfs subvolumes: two snapshots, one moment
        ((), PAUSED_DB),  # quiesce: pause
    ],
    ids=["data-in-two-subvolumes", "quiesce-pause"],
)
def test_a_paused_dependency_runs_again_before_the_new_version_starts(
    world: World, spread: tuple[str, ...], compose: str
) -> None:
    # app may wait on db with service_healthy: db is unpaused (and healthy) before the up
    world.probe_ok = [True]
    assert start(world, spread=spread, compose=compose).run() == 0
    assert [c for c, _ in world.log] == [
        REPLACE,
        "pause db",
        "snapshot /pool/shop-app",
        "unpause db",
        UP,
        "probe app",
    ]


def test_a_stopped_dependency_runs_again_before_the_new_version_starts(world: World) -> None:
    world.probe_ok = [True]
    stopped_db = COMPOSE.replace("image: reg/db:1", "image: reg/db:1\n    x-composeguard: {quiesce: stop}")
    assert start(world, compose=stopped_db).run() == 0
    assert [c for c, _ in world.log] == [
        REPLACE,
        "stop db",
        "snapshot /pool/shop-app",
        "start db",
        UP,
        "probe app",
    ]


def test_a_failed_snapshot_unpauses_what_was_paused_for_it(world: World) -> None:
    world.fail_snapshot = StorageError("the pool is full")
    with pytest.raises(GuardError, match="nothing was changed"):
        start(world, spread=("db",)).run()
    assert [c for c, _ in world.log][:4] == [REPLACE, "pause db", "snapshot /pool/shop-app", "unpause db"]
    assert [c for c, _ in world.log][-1] == OLD_BACK


def test_a_neighbour_is_started_again_when_the_snapshot_fails(world: World) -> None:
    world.fail_snapshot = StorageError("the pool is full")
    with pytest.raises(GuardError, match="nothing was changed"):
        start(world, around=("worker",)).run()
    assert [c for c, _ in world.log] == [
        "stop worker", REPLACE, "snapshot /pool/shop-app", OLD_BACK, "start worker"
    ], "the neighbour is started after the old version it may write into"


def test_snapshot_failure_restarts_what_was_stopped_and_changes_nothing(world: World) -> None:
    world.fail_snapshot = StorageError("the pool is full")
    with pytest.raises(GuardError, match="the pool is full.*nothing was changed"):
        start(world).run()
    assert world.log == [
        (REPLACE, "quiescing"),
        ("snapshot /pool/shop-app", "quiescing"),
        (OLD_BACK, "quiescing"),  # back before anything is written (the disk may be full)
    ]
    assert f"image: {OLD}" in last_file(world).read_text(), "the old version comes back on its old digest"
    assert Journal.load("shop", world.journal.id).outcome == ABORTED
    assert PinFile("shop").pins == {}


def test_an_interruption_rolls_back_without_a_verdict(world: World) -> None:
    world.fail_up = KeyboardInterrupt()
    world.probe_ok = [True]
    with pytest.raises(RolledBack, match="interrupted"):
        start(world).run()
    assert [c for c, _ in world.log][:4] == [REPLACE, "snapshot /pool/shop-app", UP, "stop app db"]
    j = Journal.load("shop", world.journal.id)
    assert j.outcome == ROLLED_BACK and not j.judged_bad
    pin = PinFile("shop").pins["app"]
    assert pin.image == OLD and pin.bad == [], "an interruption pins the old digest, quarantines nothing"


def test_a_full_disk_after_the_snapshots_still_ends_on_the_old_version(world: World) -> None:
    """The journal cannot be written from the snapshot on (no reserve left either): the
    rollback still restores and starts the old version, on a pin overlay written to the spare
    folder, and ends in exit 4 saying exactly what could not be recorded."""
    world.probe_ok = [False, True]
    world.fill_disk_at = "up"
    expected = "finished .*app back on the old digest.*could not be written.*No space"
    with pytest.raises(RollbackFailed, match=expected):
        start(world).run()
    ran = [c for c, _ in world.log]
    assert ran == [
        REPLACE,
        "snapshot /pool/shop-app",
        UP,
        "probe app",
        "stop app db",
        "restore /pool/shop-app",
        "up --detach --no-recreate --no-deps --pull missing --no-build db",
        "up --detach --force-recreate --no-deps --pull missing --no-build app",
        "probe app",
    ]
    assert (world.spare / "projects" / "shop" / "pins.applied.yaml").exists()


def test_a_full_disk_uses_the_reserve(world: World) -> None:
    """With the state dir's reserve in place, the first failed write frees it and the
    rollback is recorded as usual (exit 3)."""
    world.probe_ok = [False, True]
    txn = start(world)
    state.make_reserve()
    reserve = state.state_dir() / state.RESERVE_NAME
    assert reserve.stat().st_size == state.RESERVE_BYTES
    real = state.release_reserve

    def release() -> bool:
        world.disk_full = False  # what deleting the reserve does on a real full disk
        return real()

    world.fill_disk_at = "up"
    state.release_reserve = release  # type: ignore[assignment]
    try:
        with pytest.raises(RolledBack):
            txn.run()
    finally:
        state.release_reserve = real  # type: ignore[assignment]
    assert not reserve.exists()
    assert Journal.load("shop", world.journal.id).outcome == ROLLED_BACK


def test_a_journal_that_cannot_be_written_still_restarts_the_stopped(world: World) -> None:
    world.fill_disk_at = "snapshot"
    world.fail_snapshot = StorageError("the pool is full")
    with pytest.raises(GuardError, match="nothing was changed.*journal could not be written"):
        start(world).run()
    assert [c for c, _ in world.log] == [REPLACE, "snapshot /pool/shop-app", OLD_BACK]
    assert last_file(world).is_relative_to(world.spare), "a full state dir: the old version's file is in /run"


@pytest.mark.parametrize("older_journal", [False, True])
def test_an_old_version_that_cannot_come_back_is_exit_4_and_recover_tries_again(
    world: World, monkeypatch: pytest.MonkeyPatch, older_journal: bool
) -> None:
    """The quiesce replaced app's container, the snapshot failed, and compose cannot start the
    old version again: app is down (on untouched data), which is a human's business (exit 4),
    the neighbour is not started into it, and `recover` brings the old version back later
    (also from a journal written before ``failed_at`` existed)."""
    world.fail_snapshot = StorageError("the pool is full")
    world.old_back_fails = True
    txn = start(world, around=("worker",))
    with pytest.raises(RollbackFailed, match="old version of app could not be started again.*no such image"):
        txn.run()
    assert [c for c, _ in world.log] == ["stop worker", REPLACE, "snapshot /pool/shop-app", OLD_BACK]
    j = Journal.load("shop", txn.journal.id)
    assert j.outcome == ROLLBACK_FAILED and "no such image" in j.rollback_error
    assert j.failed_at == "aborting"
    if older_journal:
        j.failed_at = ""

    world.old_back_fails, world.log = False, []
    monkeypatch.setattr(recover, "backends_for", lambda project: lambda kind: world)
    assert recover.finish_interrupted(txn.project, j, Reporter(quiet=True)) == 0  # type: ignore[arg-type]
    assert [c for c, _ in world.log] == [OLD_BACK, "start worker"]
    assert Journal.load("shop", txn.journal.id).outcome == ABORTED
