"""Step 12's pure pieces without a lab: dry-run spellings, transaction order against a clock
that steps back, the namespace comparison's messages, and what the ZFS free-space refusal says
composeguard keeps. The real things run in tests/lab/test_nightly_host.py and the guest."""

from __future__ import annotations

import datetime as dt

import pytest

from composeguard.compose.upargs import is_dry_run
from composeguard.dockercli import GLOBAL_OPTIONS_WITH_VALUE
from composeguard.storage import mountns
from composeguard.storage import zfs_tools as zfs_mod
from composeguard.upgrade import journal as journal_mod
from composeguard.upgrade.journal import Journal


@pytest.mark.parametrize(
    ("args", "dry"),
    [
        (["--dry-run"], True),
        (["--dry-run=true"], True),
        (["--dry-run=1"], True),
        (["--dry-run=T"], True),
        (["--dry-run=True"], True),
        (["--dry-run=false"], False),
        (["--dry-run=0"], False),
        (["--dry-run", "--dry-run=false"], False),  # the last one wins, as with pflag
        (["--dry-run=maybe"], True),  # compose refuses it; never a real upgrade
        (["-f", "--dry-run"], False),  # a file named --dry-run
        (["-p", "x", "--", "--dry-run"], False),
        ([], False),
    ],
)
def test_dry_run_spellings(args: list[str], dry: bool) -> None:
    assert is_dry_run(args, GLOBAL_OPTIONS_WITH_VALUE) is dry


def test_transaction_order_does_not_follow_the_wall_clock(tmp_path, monkeypatch) -> None:
    """An NTP step back between two runs gives the newer transaction an older ID: the order
    (and so `history`, retention and `rollback`'s "last") follows the sequence number."""
    monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(tmp_path))
    clock = [dt.datetime(2026, 12, 3, 3, 0, tzinfo=dt.UTC)]

    class Clock(dt.datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[override]
            return clock[0]

    monkeypatch.setattr(journal_mod.dt, "datetime", Clock)
    first = Journal.new("shop", "update")
    first.save()
    clock[0] = clock[0] - dt.timedelta(hours=1)  # the step back
    second = Journal.new("shop", "update")
    second.save()
    assert second.id < first.id
    assert [j.id for j in Journal.all("shop")] == [first.id, second.id]
    assert (first.seq, second.seq) == (1, 2)


def test_the_namespace_check_names_the_cause(monkeypatch) -> None:
    spaces = {"self": (1, 100), 1: (1, 200), 42: (1, 200)}
    monkeypatch.setattr(mountns, "_namespace", lambda pid: spaces.get(pid))
    monkeypatch.setattr(mountns, "dockerd_pid", lambda: 42)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert "unshare --mount" in mountns.namespace_problem("a rollback of tank/app")
    monkeypatch.setenv("INVOCATION_ID", "abc")
    msg = mountns.namespace_problem("a rollback of tank/app")
    assert msg.startswith("a rollback of tank/app mounts datasets") and "PrivateTmp=" in msg
    spaces["self"] = (1, 200)
    assert mountns.namespace_problem("x") == ""
    monkeypatch.setattr(mountns, "dockerd_pid", lambda: None)
    assert "cannot find dockerd's process" in mountns.namespace_problem("x")
    with pytest.raises(mountns.ConfigError, match="Nothing was changed"):
        mountns.check_dockerd_namespace("x")


def test_the_free_space_refusal_says_what_composeguard_keeps(monkeypatch) -> None:
    listing = "\n".join([
        "tank\t9000000000",
        "tank/app\t3000000000",
        "tank/app@composeguard-T1\t104857600",
        "tank/app@autosnap_03:00\t52428800",
        "tank/app.composeguard-failed-T2\t209715200",
        "tank/app.composeguard-failed-T2@autosnap\t1048576",
    ])
    monkeypatch.setattr(zfs_mod, "zfs", lambda *a, check=True: listing)
    assert zfs_mod.kept_by_composeguard("tank") == (
        "; composeguard's kept snapshots and failed states hold 300 MiB of it (2): "
        "lower retention / keep_rollbacks to keep fewer"
    )
    monkeypatch.setattr(zfs_mod, "zfs", lambda *a, check=True: "tank\t1\ntank/x@mine\t5")
    assert zfs_mod.kept_by_composeguard("tank") == ""
