"""Step 13, point 2 on real ZFS (inside the guest, no dockerd): every rollback asks again who
uses a dataset. An upgrade snapshotted tank/appdata while it held only A's folder (a whole
restore was planned); since then project B keeps its data in b/ of it. The rollback restores
only a/ by directory, and b/ keeps what B wrote; a container of B inside a/ is a refusal."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.zfs.guest import GUEST_ONLY, backend, get
from tests.zfs.test_zfs_backend import tags

pytestmark = GUEST_ONLY


def journal_of(ds: str, txn: str, unit_path: str):
    from composeguard.upgrade.journal import Journal

    be = backend()
    d = be.dataset_for(get(ds, "mountpoint"))
    j = Journal(id=txn, project="proj", command="up", created="2026-12-04T00:00:00+00:00", unit=["app"])
    j.datasets = [d]
    j.unit_paths = {d.name: [unit_path]}
    j.snapshots = be.snapshot([d], tags(txn))
    return be, j


def test_a_dataset_shared_since_the_upgrade_is_restored_by_directory(datasets, monkeypatch) -> None:
    from composeguard.storage.pathrestore import restore_paths
    from composeguard.upgrade import restorecheck

    ds = datasets("appdata")
    root = Path(get(ds, "mountpoint"))
    (root / "a").mkdir()
    (root / "a" / "db.txt").write_text("rows of v1\n")
    be, j = journal_of(ds, "T1", str(root / "a"))
    (root / "a" / "db.txt").write_text("rows of v3\n")
    (root / "b").mkdir()  # a week later, B moves in
    (root / "b" / "lines.txt").write_text("B's writes\n")
    monkeypatch.setattr(restorecheck.docker, "all_container_uses", lambda: [])
    monkeypatch.setattr(restorecheck.docker, "data_root", lambda: "/var/lib/docker")

    [line] = restorecheck.recheck_restores(j, lambda kind: be)

    assert f"restoring only {root / 'a'}" in line and "holds other entries" in line
    record = j.restores[ds]
    assert record["paths"] == [str(root / "a")] and record["method"] == "copy"  # OpenZFS 2.1
    restore_paths(be, j.snapshots[0], record, "proj", j.id, lambda: None)
    assert (root / "a" / "db.txt").read_text() == "rows of v1\n"
    assert (root / "b" / "lines.txt").read_text() == "B's writes\n", "B's folder is left alone"
    assert get(ds, "origin") == "-", "not restored whole: no clone took the dataset's place"


def test_a_container_inside_the_units_folder_now_is_a_refusal(datasets, monkeypatch) -> None:
    from composeguard.compose.docker import ContainerUse
    from composeguard.errors import GuardError
    from composeguard.upgrade import restorecheck

    ds = datasets("appdata2")
    root = Path(get(ds, "mountpoint"))
    (root / "a" / "shared").mkdir(parents=True)
    be, j = journal_of(ds, "T2", str(root / "a"))
    other = ContainerUse("c1", "b-writer-1", "b", "writer", (("bind", str(root / "a" / "shared")),), True)
    monkeypatch.setattr(restorecheck.docker, "all_container_uses", lambda: [other])
    monkeypatch.setattr(restorecheck.docker, "data_root", lambda: "/var/lib/docker")

    with pytest.raises(GuardError, match="cannot restore .* any more: .* is used by container b-writer-1"):
        restorecheck.recheck_restores(j, lambda kind: be)
    assert j.restores == {}
