"""Writable clones of Btrfs snapshots for a trial run, on the lab's real Btrfs pool.

A trial starts the new version on a clone of the data beside the live version: the clone is a
writable snapshot of the read-only one at ``<txn dir>/trial/<subvolume>``, isolated both ways,
made once (a re-run returns it), made read-only when kept, and destroyed by its path.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.lab.labproject import POOL, delete_subvolumes, output, unavailable

pytestmark = pytest.mark.lab

TXN = "20261204T051111Z-ab12-trial"


@pytest.fixture
def live() -> Iterator[tuple[Path, str]]:
    """A fresh subvolume POOL/cl-<random> holding data.txt, and a project name of its own;
    the subvolume and everything composeguard made for that project deleted afterwards."""
    if not os.path.ismount(POOL):
        unavailable(f"the lab's Btrfs pool is not mounted at {POOL} (run lab/lab.sh up)")
    tag = secrets.token_hex(4)
    sv, project = POOL / f"cl-{tag}", f"cgclone-{tag}"
    output("btrfs", "subvolume", "create", sv)
    (sv / "data.txt").write_text("before\n")
    try:
        yield sv, project
    finally:
        delete_subvolumes(POOL / ".composeguard-snapshots" / project)
        delete_subvolumes(sv)
        assert not sv.exists(), "cleanup left the subvolume behind"


def _tags(project: str):
    from composeguard.storage.base import SnapshotTags

    return SnapshotTags(txn=TXN, project=project, services=("app",), old_digests={}, new_digests={})


def _backend():
    from composeguard.storage.btrfs import BtrfsBackend
    from composeguard.storage.mounts import read_mounts

    return BtrfsBackend(read_mounts())


def _uuid(p: str | Path) -> str:
    line = next(
        ln for ln in output("btrfs", "subvolume", "show", p).splitlines() if ln.strip().startswith("UUID:")
    )
    return line.split(":", 1)[1].strip()


def _ro(p: str | Path) -> str:
    return output("btrfs", "property", "get", "-ts", p, "ro").strip()


def test_clone_is_writable_isolated_idempotent_kept_read_only_and_destroyed(live) -> None:
    from composeguard.errors import StorageError

    sv, project = live
    be = _backend()
    (snap,) = be.snapshot([be.dataset_for(str(sv))], _tags(project))
    (sv / "data.txt").write_text("live, after the snapshot\n")

    (c,) = be.clone([snap], TXN)

    txn_dir = POOL / ".composeguard-snapshots" / project / TXN
    assert c.name == c.files_at == str(txn_dir / "trial" / sv.name)
    assert c.dataset == snap.dataset
    clone = Path(c.files_at)
    assert os.lstat(clone).st_ino == 256 and _ro(clone) == "ro=false"
    assert (clone / "data.txt").read_text() == "before\n"  # the snapshot's data, not the live write
    (clone / "data.txt").write_text("written by the trial\n")
    (clone / "new.txt").write_text("new in the trial\n")
    assert (sv / "data.txt").read_text() == "live, after the snapshot\n"
    assert not (sv / "new.txt").exists()
    assert (Path(snap.name) / "data.txt").read_text() == "before\n"
    assert not (Path(snap.name) / "new.txt").exists()

    # a re-run (after a kill) returns the same clone, with what the trial wrote
    st, uuid = os.stat(clone), _uuid(clone)
    (again,) = _backend().clone([snap], TXN)
    assert again == c
    assert (os.stat(clone).st_ino, os.stat(clone).st_dev, _uuid(clone)) == (st.st_ino, st.st_dev, uuid)
    assert (clone / "new.txt").read_text() == "new in the trial\n"
    with pytest.raises(StorageError, match="not a snapshot of the transaction"):
        be.clone([snap], "20261204T051111Z-ffff-trial")

    be.keep_clone(c)
    assert _ro(clone) == "ro=true"
    with pytest.raises(OSError) as e:
        (clone / "more.txt").write_text("x")
    assert e.value.errno == errno.EROFS
    be.keep_clone(c)  # idempotent
    assert (clone / "data.txt").read_text() == "written by the trial\n"

    be.destroy(c.name)
    assert not clone.exists() and be.exists(snap.name)
    be.destroy(c.name)  # gone is done
    be.destroy(snap.name)  # then the snapshot it was made from
    assert not Path(snap.name).exists()
    assert (sv / "data.txt").read_text() == "live, after the snapshot\n"


def test_something_in_the_clones_place_is_refused_and_destroy_refuses_what_is_not_ours(live) -> None:
    from composeguard.errors import StorageError

    sv, project = live
    be = _backend()
    (snap,) = be.snapshot([be.dataset_for(str(sv))], _tags(project))
    trial = POOL / ".composeguard-snapshots" / project / TXN / "trial"
    trial.mkdir(mode=0o700)
    (trial / sv.name).mkdir()  # a plain folder where the clone would go
    with pytest.raises(StorageError, match="in the way"):
        be.clone([snap], TXN)
    with pytest.raises(StorageError, match="not a subvolume"):
        be.destroy(str(trial / sv.name))
    assert (trial / sv.name).is_dir()
    (trial / sv.name).rmdir()
    output("btrfs", "subvolume", "create", trial / sv.name)  # a subvolume that is no copy of pre
    with pytest.raises(StorageError, match="not composeguard's clone"):
        be.clone([snap], TXN)

    # a subvolume outside composeguard's snapshot folders (the live one) is never deleted
    with pytest.raises(StorageError, match="not in a composeguard snapshot folder"):
        be.destroy(str(sv))
    assert (sv / "data.txt").read_text() == "before\n"


def test_pre_upgrade_snapshot_is_read_only_and_of_the_live_subvolume(live, monkeypatch) -> None:
    """The pre-upgrade snapshot is made by ioctl in-process (no ``btrfs`` process per
    subvolume): read-only, a snapshot of the live subvolume (its Parent UUID), holding the data
    as it was, and nothing the live one gets afterwards."""
    from composeguard import execute

    sv, project = live
    be = _backend()
    dataset = be.dataset_for(str(sv))

    def no_btrfs_process(argv, **kw):
        assert list(argv)[:3] != ["btrfs", "subvolume", "snapshot"], argv
        return real_run(argv, **kw)

    real_run = execute.run
    monkeypatch.setattr(execute, "run", no_btrfs_process)
    (snap,) = be.snapshot([dataset], _tags(project))
    (sv / "data.txt").write_text("live, after the snapshot\n")

    assert _ro(snap.name) == "ro=true"
    show = output("btrfs", "subvolume", "show", snap.name)
    parent = next(ln for ln in show.splitlines() if ln.strip().startswith("Parent UUID:"))
    assert parent.split(":", 1)[1].strip() == _uuid(sv)
    assert (Path(snap.name) / "data.txt").read_text() == "before\n"
    with pytest.raises(OSError):
        (Path(snap.name) / "new.txt").write_text("x")
