"""Writable clones of ZFS snapshots for a trial run, on real OpenZFS (inside the guest).

A trial starts the new version on clones of the unit's datasets beside the live version: a
child dataset's clone is made inside its parent's clone, so the clone tree mirrors the live one;
the clones are isolated both ways, made once (a re-run returns them), kept read-only, and
destroyed by the top clone's name, never when something composeguard did not make is in them.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest

from tests.zfs.guest import GUEST_ONLY, POOL, backend, get, zfs

pytestmark = GUEST_ONLY

TXN = "20261204T051111Z-ab12-trial"


def tags(txn: str = TXN):
    from composeguard.storage.base import SnapshotTags

    return SnapshotTags(txn=txn, project="proj", services=("app",), old_digests={}, new_digests={})


def names() -> list[str]:
    return zfs("list", "-H", "-o", "name", "-t", "all").split()


def _parent_and_child(datasets, tmp_path: Path):
    """POOL/c…/app (a local mountpoint, compression set) and its child app/db mounted inside it,
    snapshotted for the trial; then the live data changed."""
    live_mp = tmp_path / "live app"
    parent = datasets(
        "app",
        {"top.txt": "parent before\n"},
        "-o",
        f"mountpoint={live_mp}",
        "-o",
        "compression=lz4",
        "-o",
        "com.sun:auto-snapshot=true",  # zfs-auto-snapshot's: a clone must not inherit it
    )
    child = f"{parent}/db"
    zfs("create", "-o", "recordsize=16K", child)
    (live_mp / "db" / "db.txt").write_text("child before\n")
    be = backend()
    dp = be.dataset_for(str(live_mp))
    kids = be.descendants(dp, [str(live_mp)])
    assert [k.name for k in kids] == [child]
    snaps = be.snapshot([dp, *kids], tags())
    (live_mp / "top.txt").write_text("parent live after\n")
    (live_mp / "db" / "db.txt").write_text("child live after\n")
    return parent, child, live_mp, snaps


def test_parent_and_child_clones_mirror_the_tree_isolated_idempotent_kept_and_destroyed(
    datasets, tmp_path: Path
) -> None:
    parent, child, live_mp, snaps = _parent_and_child(datasets, tmp_path)
    be = backend()

    top, nested = be.clone(list(reversed(snaps)), TXN)  # given children first: returned parents first

    assert top.name == f"{parent}.composeguard-failed-{TXN}" and top.dataset.name == parent
    assert nested.name == f"{top.name}/db" and nested.dataset.name == child
    assert top.files_at == f"/run/composeguard/trial/{TXN}/{parent}"
    assert nested.files_at == f"{top.files_at}/db"
    assert get(nested.name, "mountpoint") == nested.files_at
    assert zfs("get", "-H", "-o", "source", "mountpoint", nested.name).strip().startswith("inherited")
    for c, snap in ((top, snaps[0]), (nested, snaps[1])):
        assert get(c.name, "origin") == snap.name and get(c.name, "mounted") == "yes"
        assert get(c.name, "readonly") == "off"
    assert get(top.name, "compression") == "lz4" and get(nested.name, "recordsize") == str(16 * 1024)
    assert get(top.name, "com.sun:auto-snapshot") == get(nested.name, "com.sun:auto-snapshot") == "false"
    t, n = Path(top.files_at), Path(nested.files_at)
    assert (t / "top.txt").read_text() == "parent before\n"
    assert (n / "db.txt").read_text() == (t / "db" / "db.txt").read_text() == "child before\n"

    # writes isolated both ways (the live writes after the snapshot are not in the clones)
    (t / "top.txt").write_text("trial parent\n")
    (n / "db.txt").write_text("trial child\n")
    (n / "new.txt").write_text("new\n")
    assert (live_mp / "top.txt").read_text() == "parent live after\n"
    assert (live_mp / "db" / "db.txt").read_text() == "child live after\n"
    assert not (live_mp / "db" / "new.txt").exists()
    assert (
        live_mp / "db" / ".zfs" / "snapshot" / f"composeguard-{TXN}" / "db.txt"
    ).read_text() == "child before\n"

    # a re-run (after a kill) returns the same clones, even unmounted in between
    guids = [get(c.name, "guid") for c in (top, nested)]
    zfs("unmount", nested.name)
    assert backend().clone(snaps, TXN) == [top, nested]
    assert [get(c.name, "guid") for c in (top, nested)] == guids
    assert (n / "db.txt").read_text() == "trial child\n"

    for c in (top, nested):
        be.keep_clone(c)
        be.keep_clone(c)  # idempotent
        assert get(c.name, "readonly") == "on"
    with pytest.raises(OSError) as e:
        (n / "more.txt").write_text("x")
    assert e.value.errno == errno.EROFS

    be.destroy(top.name)  # takes its nested clone with it
    assert top.name not in names() and nested.name not in names()
    be.destroy(top.name)  # gone is done
    be.destroy(nested.name)
    for s in snaps:  # then the snapshots the clones were made from
        be.destroy(s.name)
    assert not [x for x in names() if "composeguard" in x and x.startswith(parent)], names()
    assert (live_mp / "top.txt").read_text() == "parent live after\n"
    assert (live_mp / "db" / "db.txt").read_text() == "child live after\n"


def test_destroy_refuses_clones_holding_what_composeguard_did_not_make(datasets, tmp_path: Path) -> None:
    from composeguard.errors import StorageError

    parent, child, live_mp, snaps = _parent_and_child(datasets, tmp_path)
    be = backend()
    top, nested = be.clone(snaps, TXN)
    zfs("snapshot", f"{nested.name}@mine")  # e.g. an auto-snapshot of the clone
    before = names()

    with pytest.raises(StorageError, match=f"{nested.name}@mine, not made by composeguard"):
        be.destroy(top.name)
    with pytest.raises(StorageError, match="not made by composeguard"):
        be.destroy(nested.name)
    assert names() == before and get(top.name, "mounted") == get(nested.name, "mounted") == "yes"

    zfs("destroy", f"{nested.name}@mine")
    zfs("create", f"{top.name}/extra")  # a child dataset that is no clone of ours
    with pytest.raises(StorageError, match="extra, not made by composeguard"):
        be.destroy(top.name)
    with pytest.raises(StorageError, match="not a clone of a composeguard snapshot"):
        be.destroy(f"{top.name}/extra")
    with pytest.raises(StorageError, match="not a composeguard snapshot"):
        be.destroy(child)  # a live dataset
    assert f"{top.name}/extra" in names() and child in names()
    zfs("destroy", f"{top.name}/extra")

    # children first (reverse order of clone()'s list), as the trial teardown does
    for c in (nested, top):
        be.destroy(c.name)
    for s in snaps:
        be.destroy(s.name)
    assert not [x for x in names() if "composeguard" in x and x.startswith(parent)], names()


def test_encrypted_legacy_and_pool_root_datasets_clone_and_mount(datasets, tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("composeguard-test-passphrase\n")
    crypt = ("-o", "encryption=on", "-o", "keyformat=passphrase", "-o", f"keylocation=file://{key}")
    enc = datasets("enc", {"db.txt": "secret before\n"}, *crypt)
    legacy = datasets("legacy", None, "-o", "mountpoint=legacy")
    mnt = tmp_path / "legacy"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "zfs", legacy, str(mnt)], check=True)
    (mnt / "l.txt").write_text("legacy before\n")
    be = backend()
    ds = [be.dataset_for(get(enc, "mountpoint")), be.dataset_for(str(mnt))]
    root_snap = None
    try:
        snaps = be.snapshot(ds, tags())
        (root_snap,) = be.snapshot([be.dataset_for(os.environ["COMPOSEGUARD_ZFS_MNT"])], tags())

        # one group: the pool's root dataset and two datasets below it (not its children: the
        # clones are no nested datasets, but mounted where they are in the live tree)
        cr, ce, cl = be.clone([*snaps, root_snap], TXN)

        assert cr.name == f"{POOL}/{POOL}.composeguard-failed-{TXN}"
        assert cr.files_at == f"/run/composeguard/trial/{TXN}/{POOL}" and get(cr.name, "mounted") == "yes"
        mnt_root = os.environ["COMPOSEGUARD_ZFS_MNT"]
        assert ce.name == f"{enc}.composeguard-failed-{TXN}"
        assert ce.files_at == os.path.join(cr.files_at, os.path.relpath(get(enc, "mountpoint"), mnt_root))
        assert get(ce.name, "encryptionroot") == enc and get(ce.name, "keystatus") == "available"
        assert get(ce.name, "mounted") == "yes"
        assert (Path(ce.files_at) / "db.txt").read_text() == "secret before\n"
        # legacy, mounted outside the pool's mount: its own /run/... mountpoint
        assert cl.files_at == f"/run/composeguard/trial/{TXN}/{legacy}" and get(cl.name, "mounted") == "yes"
        assert (Path(cl.files_at) / "l.txt").read_text() == "legacy before\n"
        assert backend().clone([root_snap, *snaps], TXN) == [cr, ce, cl]
        for c in (cl, ce, cr):  # children first, as the teardown does
            be.destroy(c.name)
        for s in [*snaps, root_snap]:
            be.destroy(s.name)
        assert not [x for x in names() if "composeguard" in x], names()
        assert get(enc, "keystatus") == "available"
        assert (Path(get(enc, "mountpoint")) / "db.txt").read_text() == "secret before\n"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        if root_snap is not None:
            subprocess.run(
                ["zfs", "destroy", "-r", f"{POOL}/{POOL}.composeguard-failed-{TXN}"], capture_output=True
            )
            subprocess.run(["zfs", "release", "composeguard", root_snap.name], capture_output=True)
            subprocess.run(["zfs", "destroy", root_snap.name], capture_output=True)
