"""copy_tree on real OpenZFS (inside the guest): a directory restored from a snapshot's
``.zfs/snapshot/<name>`` folder with method="copy" (copy_file_range; block cloning where the
OpenZFS version has it, else the kernel or read/write copies), compared field by field.

One test function: the guest runs under TCG emulation and is slow.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from composeguard.storage.treecopy import copy_tree, remove_tree
from tests.treecompare import assert_same_tree, build_tree, snapshot_tree
from tests.zfs.guest import GUEST_ONLY, POOL, get, zfs

pytestmark = GUEST_ONLY


@pytest.fixture
def dataset() -> Iterator[tuple[str, Path, list[Path]]]:
    """A fresh dataset POOL/tc<random>/data with POSIX ACLs and xattrs in the dnode, and a list
    of automounted snapshot folders to unmount; everything destroyed afterwards."""
    parent = f"{POOL}/tc{secrets.token_hex(3)}"
    zfs("create", parent)
    ds = f"{parent}/data"
    automounts: list[Path] = []
    try:
        zfs("create", "-o", "acltype=posixacl", "-o", "xattr=sa", ds)
        yield ds, Path(get(ds, "mountpoint")), automounts
    finally:
        for p in automounts:
            subprocess.run(["umount", str(p)], capture_output=True)
        subprocess.run(["zfs", "destroy", "-R", "-f", parent], capture_output=True)


def test_copy_of_a_snapshot_directory_is_exact(dataset) -> None:
    ds, mp, automounts = dataset
    outside = mp / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not part of the restored directory\n")
    info = build_tree(mp / "dir", outside=str(outside), privileged=True)
    if info["acl"] is not True:  # acltype=posixacl should make ACLs work; if not, say so and go on
        assert "Operation not supported" in info["acl"], info["acl"]
    zfs("snapshot", f"{ds}@pre")
    snapdir = mp / ".zfs" / "snapshot" / "pre"
    automounts.append(snapdir)
    src = snapdir / "dir"
    before = snapshot_tree(src, symlink_atime=True)  # a snapshot: reading moves no atime
    dst = mp / ".restore-x"

    stats = copy_tree(str(src), str(dst), method="copy")

    # A file with dirty data reports no holes (SEEK_HOLE) until its transaction group is
    # written: sync the pool before comparing the data/hole maps.
    subprocess.run(["zpool", "sync", POOL], check=True)
    copy = snapshot_tree(dst, symlink_atime=True)
    assert_same_tree(before, copy)
    assert_same_tree(before, snapshot_tree(src, symlink_atime=True))

    assert (copy[b"a/f640"]["uid"], copy[b"a/f640"]["gid"]) == (1234, 5678)
    assert (copy[b"dangling"]["uid"], copy[b"dangling"]["gid"]) == (1234, 5678)
    assert copy[b"a/suid"]["mode"] == "0o6755" and copy[b"sticky-dir"]["mode"] == "0o1777"
    assert copy[b"setgid-dir"]["mode"] == "0o2775"
    assert copy[b"null"]["type"] == "chr" and copy[b"null"]["rdev"] == (1, 3)
    assert copy[b"fifo"]["type"] == "fifo"
    assert copy[b"a/f640"]["xattrs"]["trusted.composeguard"] == b"trusted value"
    assert copy[b"a/f640"]["xattrs"]["user.comment"] == b"a user attribute"
    assert copy[b"a/hl1"]["link"] == copy[b"hl3"]["link"] == copy[b"other/hl2"]["link"] == b"a/hl1"
    if info["acl"] is True:
        assert "system.posix_acl_access" in copy[b"a/f640"]["xattrs"]
        assert "system.posix_acl_default" in copy[b"a/b"]["xattrs"]
    if info["holes"]:
        assert copy[b"sparse.bin"]["data"] == before[b"sparse.bin"]["data"]
        assert os.stat(dst / "sparse.bin").st_blocks * 512 < 2 << 20, "the sparse file was filled in"
    assert stats.files > 10 and stats.dirs > 120

    if os.path.ismount(snapdir):  # release the automount before the dataset is destroyed
        subprocess.run(["umount", str(snapdir)], check=True)
    automounts.remove(snapdir)
    remove_tree(str(dst))
    assert not os.path.lexists(dst)
    assert (outside / "secret").read_text() == "not part of the restored directory\n"
