"""The ZFS backend and the libzfs_core binding on real OpenZFS (inside the guest)."""

from __future__ import annotations

import errno
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.zfs.guest import GUEST_ONLY, POOL, backend, get, zfs

pytestmark = GUEST_ONLY


def tags(txn: str):
    from composeguard.storage.base import SnapshotTags

    return SnapshotTags(txn=txn, project="proj", services=("app", "db"),
                        old_digests={"app": "sha256:old"}, new_digests={"app": "sha256:new"})


def test_binding_snapshot_exists_names_the_dataset_and_eexist(datasets) -> None:
    from composeguard.storage.libzfs_core import ZfsError, library

    ds = datasets("a")
    library().snapshot([f"{ds}@s1"])
    with pytest.raises(ZfsError) as e:
        library().snapshot([f"{ds}@s1"])
    assert e.value.errors == {f"{ds}@s1": errno.EEXIST}
    assert f"{ds}@s1" in str(e.value) and "EEXIST" in str(e.value)


def test_binding_missing_dataset_is_enoent(datasets) -> None:
    from composeguard.storage.libzfs_core import ZfsError, library

    ds = datasets("a")
    with pytest.raises(ZfsError) as e:
        library().snapshot([f"{ds}-nope@s1"])
    assert e.value.errno == errno.ENOENT
    assert e.value.errors.get(f"{ds}-nope@s1", errno.ENOENT) == errno.ENOENT
    assert not library().exists(f"{ds}-nope")
    assert library().exists(ds)


def test_one_atomic_snapshot_per_pool_with_tags_and_hold(datasets) -> None:
    a = datasets("app", {"f": "a\n"})
    b = datasets("db", {"f": "b\n"})
    snaps = backend().snapshot([backend().dataset_for(get(a, "mountpoint")),
                                backend().dataset_for(get(b, "mountpoint"))], tags("T1"))
    names = [s.name for s in snaps]
    assert names == [f"{a}@composeguard-T1", f"{b}@composeguard-T1"]
    txgs = {get(n, "createtxg") for n in names}
    assert len(txgs) == 1, f"one transaction group for both snapshots, got {txgs}"
    assert get(names[0], "composeguard:txn") == "T1"
    assert get(names[0], "composeguard:project") == "proj"
    assert "composeguard" in zfs("holds", "-H", names[1])
    # What recover adopts after a kill between this one snapshot and the journal saying so
    # (the kill table's between-snapshots point, which runs in the guest only under
    # COMPOSEGUARD_ZFS_FULL=1): each dataset's snapshot of that transaction, none of another.
    for snap in snaps:
        found = backend().find_snapshot(snap.dataset, "proj", "T1")
        assert found is not None and found.name == snap.name
        assert backend().find_snapshot(snap.dataset, "proj", "T2") is None


def test_restore_keeps_foreign_snapshots_failed_state_and_local_properties(datasets) -> None:
    ds = datasets("app", {"db.txt": "before\n"}, "-o", "recordsize=16K", "-o", "compression=off")
    mp = Path(get(ds, "mountpoint"))
    be = backend()
    (snap,) = be.snapshot([be.dataset_for(str(mp))], tags("T2"))
    (mp / "db.txt").write_text("after a bad migration\n")
    (mp / "new.txt").write_text("written by the new version\n")
    zfs("snapshot", f"{ds}@autosnap_03:00")  # a sanoid run during the upgrade

    failed = be.restore(snap, "T2")

    assert (mp / "db.txt").read_text() == "before\n"
    assert not (mp / "new.txt").exists()
    assert get(ds, "mounted") == "yes" and Path(get(ds, "mountpoint")) == mp
    assert zfs("get", "-H", "-o", "value,source", "recordsize", ds).split() == ["16K", "local"]
    assert zfs("get", "-H", "-o", "value,source", "compression", ds).split() == ["off", "local"]
    all_snaps = zfs("list", "-H", "-o", "name", "-t", "snapshot").split()
    assert f"{failed}@autosnap_03:00" in all_snaps, "the foreign snapshot still exists"
    assert f"{ds}@composeguard-T2" in all_snaps
    assert get(failed, "readonly") == "on"
    zfs("mount", failed)
    try:
        assert (Path(get(failed, "mountpoint")) / "db.txt").read_text() == "after a bad migration\n"
    finally:
        zfs("unmount", failed)
    # a second run (recover after a crash) changes nothing
    assert be.restore(snap, "T2") == failed
    assert (mp / "db.txt").read_text() == "before\n"


def test_the_failed_dataset_gets_its_own_mountpoint_and_retention_releases_it(datasets, tmp_path) -> None:
    """A dataset with a local mountpoint (how most guides set one up): the failed state kept by
    a whole restore must not be mountable over the live path, and releasing a rollback (its
    failed dataset first, then the pre-upgrade snapshot it is a clone of) destroys both."""
    live_mp = tmp_path / "live app"
    datasets("app", {"db.txt": "before\n"}, "-o", f"mountpoint={live_mp}")
    be = backend()
    (snap,) = be.snapshot([be.dataset_for(str(live_mp))], tags("T4"))
    (live_mp / "db.txt").write_text("after a bad migration\n")

    failed = be.restore(snap, "T4")

    own = Path(get(failed, "mountpoint"))
    assert own == Path(f"{live_mp}.composeguard-failed-T4")
    assert get(failed, "canmount") == "noauto" and get(failed, "mounted") == "no"
    zfs("mount", failed)  # the README's "zfs mount it to look"
    try:
        assert (own / "db.txt").read_text() == "after a bad migration\n"
        assert (live_mp / "db.txt").read_text() == "before\n"
    finally:
        zfs("unmount", failed)
    assert be.restore(snap, "T4") == failed and Path(get(failed, "mountpoint")) == own  # idempotent

    be.destroy(failed)
    be.destroy(snap.name)
    names = zfs("list", "-H", "-o", "name", "-t", "all").split()
    assert failed not in names and snap.name not in names
    assert (live_mp / "db.txt").read_text() == "before\n"


def test_retention_keeps_a_failed_dataset_holding_a_foreign_snapshot(datasets) -> None:
    from composeguard.errors import StorageError

    ds = datasets("app", {"db.txt": "before\n"})
    be = backend()
    (snap,) = be.snapshot([be.dataset_for(get(ds, "mountpoint"))], tags("T5"))
    zfs("snapshot", f"{ds}@autosnap_03:00")  # taken during the upgrade: moves to the failed dataset
    failed = be.restore(snap, "T5")
    with pytest.raises(StorageError, match="not made by composeguard"):
        be.destroy(failed)
    assert f"{failed}@autosnap_03:00" in zfs("list", "-H", "-o", "name", "-t", "snapshot").split()


def test_destroy_refuses_snapshots_composeguard_did_not_make(datasets) -> None:
    from composeguard.errors import StorageError

    ds = datasets("app")
    zfs("snapshot", f"{ds}@mine")
    zfs("snapshot", f"{ds}@composeguard-fake")  # right prefix, no tag
    with pytest.raises(StorageError):
        backend().destroy(f"{ds}@mine")
    with pytest.raises(StorageError):
        backend().destroy(f"{ds}@composeguard-fake")
    assert f"{ds}@mine" in zfs("list", "-H", "-o", "name", "-t", "snapshot")


def test_retention_destroy_releases_the_hold(datasets) -> None:
    ds = datasets("app")
    be = backend()
    (snap,) = be.snapshot([be.dataset_for(get(ds, "mountpoint"))], tags("T3"))
    be.destroy(snap.name)
    assert snap.name not in zfs("list", "-H", "-o", "name", "-t", "snapshot")


def test_mountpoint_with_spaces_and_child_datasets(datasets, tmp_path: Path) -> None:
    from composeguard.storage.base import Unprotected

    mnt = Path(os.environ["COMPOSEGUARD_ZFS_MNT"]) / "with space é"
    ds = datasets("spaced", None, "-o", f"mountpoint={mnt}")
    assert backend().dataset_for(str(mnt)).name == ds
    parent = datasets("parent")
    zfs("create", f"{parent}/child")
    # A dataset with children is no longer refused (step 7): they are snapshotted with it and
    # restored each on its own; the parent itself cannot be renamed whole, so it is restored
    # directory by directory.
    be = backend()
    found = be.dataset_for(get(parent, "mountpoint"))
    assert found.name == parent
    assert "child datasets" in be.whole_refused(found)
    assert [c.name for c in be.descendants(found, [found.mountpoint])] == [f"{parent}/child"]
    child = be.dataset_for(get(f"{parent}/child", "mountpoint"))
    assert child.name == f"{parent}/child" and be.whole_refused(child) == ""
    with pytest.raises(Unprotected, match="not on a ZFS dataset"):
        be.dataset_for(str(tmp_path))


def test_destroy_a_snapshot_someone_looked_at(datasets) -> None:
    """Reading .zfs/snapshot/<name> automounts the snapshot; retention must still destroy it."""
    ds = datasets("app", {"f": "x\n"})
    be = backend()
    (snap,) = be.snapshot([be.dataset_for(get(ds, "mountpoint"))], tags("T4"))
    seen = Path(get(ds, "mountpoint")) / ".zfs" / "snapshot" / "composeguard-T4" / "f"
    assert seen.read_text() == "x\n"
    be.destroy(snap.name)
    assert snap.name not in zfs("list", "-H", "-o", "name", "-t", "snapshot")


def test_layouts_a_whole_restore_cannot_handle_are_restored_by_directory(datasets, tmp_path: Path) -> None:
    """Step 8, point 13: what passes planning must be restorable. The pool's root dataset and
    a mountpoint=legacy dataset cannot take the clone-promote-rename restore: the plan says
    so (they are then restored directory by directory); a dataset reached through a bind mount
    of one of its folders is refused at plan time with the reason."""
    be = backend()
    pool_root = be.dataset_for(os.environ["COMPOSEGUARD_ZFS_MNT"])
    assert pool_root.name == POOL and "root dataset" in be.whole_refused(pool_root)

    legacy = datasets("legacy")
    zfs("set", "mountpoint=legacy", legacy)
    mnt = tmp_path / "legacy"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "zfs", legacy, str(mnt)], check=True)
    try:
        d = backend().dataset_for(str(mnt))
        assert d.name == legacy and "legacy" in backend().whole_refused(d)
    finally:
        subprocess.run(["umount", str(mnt)], check=True)

    from composeguard.storage.base import Unprotected

    src = datasets("bound", {"x": "1\n"})
    (Path(get(src, "mountpoint")) / "sub").mkdir()
    bound = tmp_path / "bound"
    bound.mkdir()
    subprocess.run(["mount", "--bind", str(Path(get(src, "mountpoint")) / "sub"), str(bound)], check=True)
    try:
        with pytest.raises(Unprotected, match="through a bind mount"):
            backend().dataset_for(str(bound))
    finally:
        subprocess.run(["umount", str(bound)], check=True)


def _crypt(name: str) -> dict[str, str]:
    return {p: get(name, p) for p in ("encryptionroot", "keylocation", "keystatus", "mounted")}


def test_whole_restore_of_encrypted_datasets(datasets, tmp_path: Path) -> None:
    """Step 13, point 3: an encryption root (key in a file) and a dataset that inherits its
    encryption from an encrypted parent are restored whole: same name, the snapshot's data,
    the key usable, the encryption root and keylocation as before; retention then releases
    the failed datasets and the snapshots."""
    key = tmp_path / "key"
    key.write_text("composeguard-test-passphrase\n")
    crypt = ("-o", "encryption=on", "-o", "keyformat=passphrase", "-o", f"keylocation=file://{key}")
    root = datasets("enc", {"db.txt": "before\n"}, *crypt)
    parent = datasets("encparent", None, *crypt)
    inherits = f"{parent}/app"
    zfs("create", inherits)
    (Path(get(inherits, "mountpoint")) / "db.txt").write_text("before\n")
    want = {root: _crypt(root), inherits: _crypt(inherits)}
    assert want[root]["encryptionroot"] == root and want[inherits]["encryptionroot"] == parent

    be = backend()
    snaps = be.snapshot([be.dataset_for(get(n, "mountpoint")) for n in (root, inherits)], tags("T6"))
    for n in (root, inherits):
        (Path(get(n, "mountpoint")) / "db.txt").write_text("after a bad migration\n")

    failed = {s.dataset.name: be.restore(s, "T6") for s in snaps}

    for n in (root, inherits):
        assert (Path(get(n, "mountpoint")) / "db.txt").read_text() == "before\n"
        assert _crypt(n) == want[n], n
        assert get(n, "origin") == "-", f"{n} is no clone any more"
    assert get(failed[root], "keystatus") == "available"
    # retention: the failed datasets first, then the pre-upgrade snapshots they were clones of
    for s in snaps:
        be.destroy(failed[s.dataset.name])
        be.destroy(s.name)
    names = zfs("list", "-H", "-o", "name", "-t", "all").split()
    assert not [n for n in names if "composeguard" in n and n.startswith((root, parent))], names
    for n in (root, inherits):
        assert _crypt(n) == want[n], n
        assert (Path(get(n, "mountpoint")) / "db.txt").read_text() == "before\n"
    # A key that is typed in could not be loaded again after the promote: restored by paths.
    zfs("set", "keylocation=prompt", root)
    assert "keylocation=prompt" in backend().whole_refused(backend().dataset_for(get(root, "mountpoint")))
    assert backend().whole_refused(backend().dataset_for(get(inherits, "mountpoint"))) == ""


def test_children_a_rename_would_carry_away_or_whose_key_is_not_loaded(datasets, tmp_path: Path) -> None:
    """Step 13, point 4: a zvol child (``zfs list -t filesystem`` does not show it) or an
    unmounted child makes a dataset restored by paths, never renamed; a child whose key is not
    loaded, belonging inside the unit's paths, is refused at plan time with the reason."""
    from composeguard.errors import ConfigError

    withvol = datasets("withvol", {"db.txt": "x\n"})
    zfs("create", "-V", "16M", f"{withvol}/disk")
    be = backend()
    d = be.dataset_for(get(withvol, "mountpoint"))
    assert "volume" in be.whole_refused(d) and f"{withvol}/disk" in be.whole_refused(d)
    assert be.descendants(d, [d.mountpoint]) == []

    key = tmp_path / "key"
    key.write_text("composeguard-test-passphrase\n")
    apps = datasets("apps", {"other.txt": "x\n"})
    locked = f"{apps}/locked"
    zfs("create", "-o", "encryption=on", "-o", "keyformat=passphrase", "-o", f"keylocation=file://{key}",
        locked)
    (Path(get(apps, "mountpoint")) / "app").mkdir()
    zfs("unmount", locked)
    zfs("unload-key", locked)
    be = backend()
    d = be.dataset_for(get(apps, "mountpoint"))
    assert "not mounted" in be.whole_refused(d)
    assert be.descendants(d, [f"{d.mountpoint}/app"]) == []  # outside the unit's path: not its data
    with pytest.raises(ConfigError, match="key is not loaded"):
        be.descendants(d, [d.mountpoint])


def test_docker_zfs_driver_layers_are_not_snapshotted_or_held(datasets) -> None:
    """Step 13, point 4: on Docker's zfs storage driver every image layer and container is a
    child dataset of the data-root dataset (mountpoint=legacy, mounted under zfs/graph). An
    app whose named volume is a folder of the data-root snapshots the data-root only: no layer
    gets a composeguard snapshot or hold (so `docker rm` can destroy them), and the directory
    restore of the volume still works. On OpenZFS 2.1 (no block cloning) the restore copies."""
    from composeguard.storage import pathrestore

    root = datasets("docker")
    mp = Path(get(root, "mountpoint"))
    vol = mp / "volumes" / "app_data" / "_data"
    vol.mkdir(parents=True)
    (vol / "db.txt").write_text("before\n")
    layers = [f"{root}/{secrets.token_hex(8)}" for _ in range(2)]
    mounted: list[Path] = []
    try:
        for layer in layers:
            zfs("create", "-o", "mountpoint=legacy", layer)
            at = mp / "zfs" / "graph" / layer.rsplit("/", 1)[1]
            at.mkdir(parents=True)
            subprocess.run(["mount", "-t", "zfs", layer, str(at)], check=True)
            mounted.append(at)
            (at / "layer.txt").write_text("a layer\n")
        be = backend()
        d = be.dataset_for(str(vol))
        assert d.name == root
        below = be.descendants(d, [str(vol)])
        assert below == []
        assert be.descendants(d, [str(mp / "zfs")]) == [  # the mount table, not the property
            type(d)("zfs", layer, d.pool, str(at)) for layer, at in zip(layers, mounted, strict=True)
        ]
        (snap,) = be.snapshot([d, *below], tags("T7"))
        (vol / "db.txt").write_text("after a bad migration\n")
        (vol / "new.txt").write_text("new\n")

        method, why = be.prove_copy(d, [str(vol)], be.copy_method(d))
        assert (method, why) == ("copy", "no block cloning on this pool/module: a byte copy")
        record = {"paths": [str(vol)], "root": d.files_at, "method": method}
        pathrestore.restore_paths(be, snap, record, "proj", "T7", save=lambda: None)
        pathrestore.cleanup(record, "T7")
        assert (vol / "db.txt").read_text() == "before\n" and not (vol / "new.txt").exists()

        snaps = zfs("list", "-H", "-r", "-o", "name", "-t", "snapshot", root).split()
        assert not [s for s in snaps if s.split("@")[0] in layers], snaps
        for layer, at in zip(layers, mounted, strict=True):  # what `docker rm` does
            subprocess.run(["umount", str(at)], check=True)
            zfs("destroy", layer)
        mounted.clear()
        assert not [n for n in zfs("list", "-H", "-o", "name").split() if n in layers]
    finally:
        for at in mounted:
            subprocess.run(["umount", str(at)], capture_output=True)
