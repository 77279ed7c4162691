"""copy_tree on the lab's real Btrfs pool: a directory restored from a read-only snapshot.

The rich tree of tests/treecompare.py, with everything only root can make (owners, a
symlink's owner, setuid/setgid/sticky, a POSIX ACL and a default ACL via setfacl, trusted.*
xattrs, a char device) and Btrfs's chattr +C, is snapshotted read-only and one directory of
the snapshot copied back into the live subvolume. The copy must equal the snapshot field by
field, and its data must be shared with the snapshot (cloned), not duplicated.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from composeguard.storage.treecopy import copy_tree, remove_tree
from tests.lab.labproject import POOL, output, unavailable
from tests.treecompare import MiB, assert_same_tree, build_tree, snapshot_tree

pytestmark = pytest.mark.lab

BIG = 64 * MiB


@pytest.fixture
def subvolume() -> Iterator[tuple[Path, list[Path]]]:
    """A fresh subvolume POOL/tc-<random>, and a list the test adds its snapshots to; all of
    them deleted afterwards."""
    if not os.path.ismount(POOL):
        unavailable(f"the lab's Btrfs pool is not mounted at {POOL} (run lab/lab.sh up)")
    if not shutil.which("setfacl"):
        unavailable("setfacl is missing (Debian package acl; lab/install-packages.sh installs it)")
    sv = POOL / f"tc-{secrets.token_hex(4)}"
    output("btrfs", "subvolume", "create", sv)
    snaps: list[Path] = []
    try:
        yield sv, snaps
    finally:
        for s in snaps:
            if s.exists():
                subprocess.run(["btrfs", "property", "set", "-ts", s, "ro", "false"], capture_output=True)
                subprocess.run(["btrfs", "subvolume", "delete", s], capture_output=True)
        subprocess.run(["btrfs", "subvolume", "delete", str(sv)], capture_output=True)
        assert not sv.exists() and not any(s.exists() for s in snaps), "cleanup left subvolumes behind"


def _extents(path: Path) -> list[tuple[int, int, int]]:
    """(logical start, physical start, length) of every extent, from ``filefrag -v`` (FIEMAP)."""
    out = output("filefrag", "-v", "-b4096", path)
    ext = []
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+(\d+)\.\.\s*(\d+):\s+(\d+)\.\.\s*(\d+):\s+(\d+):", line)
        if m:
            ext.append((int(m[1]), int(m[3]), int(m[5])))
    return ext


def _du(path: Path) -> tuple[int, int, int]:
    """(total, exclusive, set shared) bytes of ``btrfs filesystem du -s --raw``."""
    last = output("btrfs", "filesystem", "du", "-s", "--raw", path).strip().splitlines()[-1]
    total, exclusive, shared = (int(x) for x in last.split()[:3])
    return total, exclusive, shared


@pytest.mark.parametrize("method", ["reflink", "copy"])
def test_restore_a_directory_from_a_readonly_snapshot(subvolume, method: str) -> None:
    sv, snaps = subvolume
    outside = sv / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not part of the restored directory\n")
    info = build_tree(sv / "dir", outside=str(outside), privileged=True, nocow=True, big=BIG)
    want = {"holes": True, "user_xattrs": True, "acl": True, "nocow": True, "symlink_xattr": True}
    assert info == want, info
    snap = POOL / f"{sv.name}-pre"
    output("btrfs", "subvolume", "snapshot", "-r", sv, snap)
    snaps.append(snap)
    src = snap / "dir"
    outside_before = snapshot_tree(outside)
    before = snapshot_tree(src, symlink_atime=True)  # read-only: reading moves no atime
    dst = sv / ".restore-x"

    stats = copy_tree(str(src), str(dst), method=method)

    copy = snapshot_tree(dst, symlink_atime=True)  # the copy's first reader
    assert_same_tree(before, copy)
    assert_same_tree(before, snapshot_tree(src, symlink_atime=True))
    assert_same_tree(outside_before, snapshot_tree(outside))

    # What the privileged part made really is in the copy (not just equally absent in both).
    assert (copy[b"a/f640"]["uid"], copy[b"a/f640"]["gid"]) == (1234, 5678)
    assert (copy[b"dangling"]["uid"], copy[b"dangling"]["gid"]) == (1234, 5678)
    assert copy[b"dangling"]["xattrs"] == {"trusted.on-symlink": b"x"}
    assert copy[b"a/suid"]["mode"] == "0o6755" and copy[b"setgid-dir/sgid-file"]["mode"] == "0o2755"
    assert copy[b"setgid-dir"]["mode"] == "0o2775" and copy[b"sticky-dir"]["mode"] == "0o1777"
    assert copy[b"null"]["type"] == "chr" and copy[b"null"]["rdev"] == (1, 3)
    assert copy[b"fifo"]["xattrs"] == {"trusted.on-fifo": b"fifo attr"}
    assert copy[b"a/f640"]["xattrs"]["trusted.composeguard"] == b"trusted value"
    assert "system.posix_acl_access" in copy[b"a/f640"]["xattrs"]
    assert "system.posix_acl_default" in copy[b"a/b"]["xattrs"]
    assert "system.posix_acl_access" in copy[b"a/b/inherits-acl"]["xattrs"]
    assert "user:1234:rwx" in output("getfacl", "-n", "-c", dst / "a" / "f640").split()
    assert "default:group:5678:r-x" in output("getfacl", "-n", "-c", dst / "a" / "b").split()
    assert copy[b"nocow-file"]["nocow"] and copy[b"nocow-dir"]["nocow"] and copy[b"nocow-dir/db"]["nocow"]
    assert not copy[b"nocow-dir/cow-in-nocow"]["nocow"]
    assert len(copy[b"sparse.bin"]["data"]) == 3
    assert stats.bytes >= BIG and stats.other >= 7

    # The data is shared with the snapshot, not duplicated (copy_tree ran syncfs already).
    src_ext, dst_ext = _extents(src / "big.bin"), _extents(dst / "big.bin")
    assert src_ext and src_ext == dst_ext, f"big.bin extents differ: {src_ext[:3]} vs {dst_ext[:3]}"
    total, exclusive, shared = _du(dst)
    assert total >= BIG and shared >= BIG, (total, exclusive, shared)
    assert exclusive < MiB, f"{exclusive} bytes of the copy are not shared with the snapshot"

    remove_tree(str(dst))
    assert not os.path.lexists(dst)
    assert_same_tree(outside_before, snapshot_tree(outside))
    assert (sv / "dir" / "big.bin").stat().st_size == BIG
