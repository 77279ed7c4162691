"""The order of a transaction with a trial, without the lab (the fakes of
test_transaction_order.py: each command is logged with the journal phase read back from disk).
What matters: the live version is neither stopped nor restored while the trial runs; a failed
trial keeps its clone and pins, a passed one is removed before the guarded upgrade begins, and
an interrupted one leaves no clone, snapshot or pin behind. tests/lab/test_trial.py runs the
real thing on Btrfs and ZFS."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from composeguard.compose.invocation import Invocation
from composeguard.compose.project import parse_project
from composeguard.errors import GuardError, RolledBack
from composeguard.pins.pinfile import PinFile
from composeguard.storage.base import Clone, Dataset, Snapshot
from composeguard.upgrade import trial as trial_mod
from composeguard.upgrade.journal import ABORTED, COMMITTED, ROLLED_BACK, Journal
from composeguard.upgrade.probe import ProbeResult
from composeguard.upgrade.trial import TrialCheck
from composeguard.upgrade.trial_model import TrialModel
from tests.unit.test_transaction_order import (  # noqa: F401
    NEW,
    OLD,
    REPLACE,
    UP,
    StubPlan,
    World,
    start,
    world,
)


@dataclass
class Storage:
    datasets: tuple = ()
    protected: tuple = ()


class TrialWorld(World):
    """World, plus the clones of the trial and the trial's own compose project."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        super().__init__(monkeypatch)
        self.trial_probe_ok = False
        self.trial_ran = True  # a trial container started (so a failed probe is a verdict)
        self.interrupt_at: str | None = None  # a trial step that raises KeyboardInterrupt
        monkeypatch.setattr(trial_mod, "probe_services", self.trial_probe)
        monkeypatch.setattr(trial_mod.Trial, "_ran", lambda t, services: self.trial_ran)
        model = TrialModel(doc={"name": "shop-trial", "services": {}}, name="shop-trial", refusals=[])
        monkeypatch.setattr(trial_mod, "build_model", lambda plan, clone_of: model)

    def run(self, args, **kw):
        argv = [str(a) for a in args]
        if argv[1:2] == ["compose"] and "shop-trial" in argv:
            verb = next(a for a in argv if a in ("up", "down"))
            self.log.append((f"trial {verb}", self.phase()))
            if verb == "up" and self.interrupt_at == "up":
                raise KeyboardInterrupt
            return World.run(self, ["docker", "container", "ls"], **kw)
        return super().run(args, **kw)

    def trial_probe(self, project, services, rep, since=None, containers_of=None):
        assert containers_of == "shop-trial", "the trial's containers are probed, not the live ones"
        self.log.append((f"trial probe {' '.join(services)}", self.phase()))
        return [ProbeResult(s, self.trial_probe_ok, "unhealthy", 0.1) for s in services]

    def clone(self, snapshots: list[Snapshot], txn: str) -> list[Clone]:
        self.log.append(("clone " + " ".join(s.dataset.name for s in snapshots), self.phase()))
        if self.interrupt_at == "clone":
            raise KeyboardInterrupt
        return [
            Clone(s.dataset, f"/pool/.snaps/{txn}/trial/x", f"/pool/.snaps/{txn}/trial/x") for s in snapshots
        ]

    def keep_clone(self, clone: Clone) -> None:
        self.log.append((f"keep {clone.name}", self.phase()))

    def find_snapshot(self, d, project, txn):
        return None


@pytest.fixture
def tw(world: World, monkeypatch: pytest.MonkeyPatch) -> TrialWorld:  # noqa: F811
    w = TrialWorld(monkeypatch)
    w.spare = world.spare
    return w


def trial_start(w: TrialWorld):
    txn = start(w)
    txn.plan.project = txn.project  # type: ignore[attr-defined]
    txn.plan.running_now = ("app", "db")  # type: ignore[attr-defined]
    txn.plan.storage = {"app": Storage(), "db": Storage()}  # type: ignore[attr-defined]
    txn.trial = TrialCheck(wanted=True, explicit=False)
    return txn


SNAP = "snapshot /pool/shop-app"
CLONE = "clone /pool/shop-app"
# every trial with a verdict: snapshot, clone, start, probe, take its containers down
TRIED = [
    (SNAP, "trial-snapshotting"),
    (CLONE, "trial-cloning"),
    ("trial up", "trial-starting"),
    ("trial probe app", "trial-probing"),
    ("trial down", "trial-removing"),
]


def test_a_failed_trial_never_stops_the_live_version(tw: TrialWorld) -> None:
    txn = trial_start(tw)
    with pytest.raises(RolledBack, match="the trial failed.*nothing was stopped"):
        txn.run()
    tid = f"{txn.journal.id}-trial"
    assert tw.log == [
        *TRIED,
        (f"keep /pool/.snaps/{tid}/trial/x", "trial-removing"),
    ]
    assert not any(cmd.startswith(("stop", "restore", "up")) for cmd, _ in tw.log)
    j = Journal.load("shop", txn.journal.id)
    assert j.outcome == ROLLED_BACK and j.trial["verdict"] == "failed" and j.trial["state"] == "kept"
    assert j.failed_states == [f"/pool/.snaps/{tid}/trial/x"]
    assert [s.name for s in j.snapshots] == [f"/pool/.snaps/{tid}/pre//pool/shop-app"]
    pin = PinFile("shop").pins["app"]
    assert pin.image == OLD and [b.digest for b in pin.bad] == [NEW], "pinned: it ran and failed"


def test_a_passed_trial_is_removed_before_the_guarded_upgrade(tw: TrialWorld) -> None:
    tw.trial_probe_ok, tw.probe_ok = True, [True]
    txn = trial_start(tw)
    assert txn.run() == 0
    tid = f"{txn.journal.id}-trial"
    assert tw.log == [
        *TRIED,
        (f"destroy /pool/.snaps/{tid}/trial/x", "trial-removing"),
        (f"destroy /pool/.snaps/{tid}/pre//pool/shop-app", "trial-removing"),
        (REPLACE, "quiescing"),
        (SNAP, "quiescing"),
        (UP, "starting"),
        ("probe app", "probing"),
    ]
    j = Journal.load("shop", txn.journal.id)
    assert j.outcome == COMMITTED and j.trial["verdict"] == "passed" and j.trial["state"] == "removed"
    assert PinFile("shop").pins == {}


def test_a_trial_without_a_verdict_is_no_reason_to_pin(tw: TrialWorld) -> None:
    """The trial's containers never started (compose refused its file): not the images' fault.
    Asked for in the file only: said, and the guarded upgrade runs as without a trial."""
    tw.trial_ran, tw.probe_ok = False, [True]
    txn = trial_start(tw)
    assert txn.run() == 0
    j = Journal.load("shop", txn.journal.id)
    assert j.trial["verdict"] == "none" and j.outcome == COMMITTED
    assert (REPLACE, "quiescing") in tw.log


def test_an_explicit_trial_that_cannot_run_changes_nothing(tw: TrialWorld) -> None:
    tw.trial_ran = False
    txn = trial_start(tw)
    txn.trial = TrialCheck(wanted=True, explicit=True)
    with pytest.raises(GuardError, match="the trial could not run.*nothing was changed"):
        txn.run()
    assert not any(cmd.startswith(("stop", "up")) for cmd, _ in tw.log)
    assert PinFile("shop").pins == {}


@pytest.mark.parametrize("where", ["clone", "up"])
def test_an_interrupted_trial_leaves_nothing_behind(tw: TrialWorld, where: str) -> None:
    tw.interrupt_at = where
    txn = trial_start(tw)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C: undone, then raised again (exit 130)
        txn.run()
    j = Journal.load("shop", txn.journal.id)
    assert j.outcome == ABORTED and j.trial["state"] == "removed"
    destroyed = [cmd for cmd, _ in tw.log if cmd.startswith("destroy")]
    assert destroyed and destroyed[-1].endswith("/pre//pool/shop-app"), "the trial's snapshot is gone"
    assert not any(cmd.startswith(("stop", "restore")) for cmd, _ in tw.log)
    assert json.loads(j.path.read_text())["snapshots"] == []
    assert PinFile("shop").pins == {}


@dataclass
class FreezePlan:
    """What frozen_for_trial reads of a plan."""

    project: object
    unit: list[str]
    storage: dict[str, Storage]
    running_now: set[str]


def btrfs(name: str) -> Dataset:
    return Dataset("btrfs", name, "/dev/x", "/pool")


def zfs(name: str) -> Dataset:
    return Dataset("zfs", name, "tank", f"/{name}")


def freeze(compose: str, data: dict[str, list[Dataset]]) -> list[str]:
    project = parse_project(compose, Invocation.parse([]), ["/srv/x/compose.yaml"])
    storage = {s: Storage(tuple(ds), tuple(ds)) for s, ds in data.items()}
    plan = FreezePlan(project, sorted(data), storage, set(data))
    return trial_mod.frozen_for_trial(plan)  # type: ignore[arg-type]


TWO = """
services:
  app: {image: a, depends_on: [db]}
  db: {image: d}
  other: {image: o}
"""


def test_the_trial_pauses_only_what_must_be_one_moment() -> None:
    # an app and its database on two subvolumes: one moment, so both are paused
    assert freeze(TWO, {"app": [btrfs("/p/app")], "db": [btrfs("/p/db")]}) == ["app", "db"]
    # independent services, each on its own subvolume: each is one moment already
    assert freeze(TWO, {"app": [btrfs("/p/app")], "other": [btrfs("/p/o")]}) == []
    # one service on two subvolumes (PGDATA and pg_wal) is paused, the independent one is not
    assert freeze(TWO, {"db": [btrfs("/p/db"), btrfs("/p/wal")], "other": [btrfs("/p/o")]}) == ["db"]
    # one ZFS pool is one atomic snapshot: nothing to pause
    assert freeze(TWO, {"app": [zfs("tank/app")], "db": [zfs("tank/db")]}) == []


def test_no_trial_asked_for_builds_nothing(tw: TrialWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without trial: true (or --trial) the plan's check reads nothing of the model: a unit
    member compose's model lacks (a named service whose profile is off) is no concern."""

    def no_model(plan, clone_of):
        raise AssertionError("the trial's model was built though no trial was asked for")

    monkeypatch.setattr(trial_mod, "build_model", no_model)
    monkeypatch.delenv("COMPOSEGUARD_TRIAL", raising=False)
    txn = trial_start(tw)
    check = trial_mod.check_trial(txn.plan)  # type: ignore[arg-type]
    assert (check.wanted, check.runs, check.refusals) == (False, False, [])
