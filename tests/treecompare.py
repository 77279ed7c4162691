"""Compare two directory trees field by field, and build a tree that exercises every field.

``snapshot_tree`` records, per relative path (bytes; the top directory is ``b""``), everything a
metadata-exact copy (``composeguard.storage.treecopy.copy_tree``) must keep; ``assert_same_tree``
reports the differences readably. ``build_tree`` makes the rich tree the treecopy tests copy
(unit, Btrfs lab and ZFS guest), with the privileged parts (owners, devices, trusted.* and
ACLs via ``setfacl``) only where asked.

About atimes: reading a file or listing a directory may update its atime (relatime), and
``readlink`` may update a symlink's. The walk here opens files and directories with
``O_NOATIME`` (allowed for their owner and for root) and takes every entry's ``lstat`` before
reading it, so the atimes of files and directories are compared. Symlinks have no
``O_NOATIME``: their atime is only compared with ``symlink_atime=True``, for trees that are
read once (a read-only snapshot, a copy read for the first time); the unit test checks the
copy's symlink atimes separately against an ``lstat`` taken before the copy.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct
import subprocess
from collections.abc import Iterable
from typing import Any

from composeguard.storage.treediff import (  # noqa: F401 (the tests import them from here)
    MiB,
    data_map,
    nocow,
    show,
    snapshot_tree,
    tree_differences,
)
from composeguard.storage.treemeta import FS_IOC_GETFLAGS, FS_IOC_SETFLAGS, FS_NOCOW_FL


def assert_same_tree(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]], *,
                     ignore: Iterable[str] = ()) -> None:
    """Fail with the first differences (path: field: first != second), at most 40 lines."""
    diffs = tree_differences(a, b, ignore=ignore)
    if diffs:
        more = f"\n... and {len(diffs) - 40} more" if len(diffs) > 40 else ""
        raise AssertionError(f"the trees differ in {len(diffs)} places:\n" + "\n".join(diffs[:40]) + more)


# -- building ----------------------------------------------------------------------------------
ACL_USER_OBJ, ACL_USER, ACL_GROUP_OBJ, ACL_GROUP, ACL_MASK, ACL_OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
ACL_UNDEFINED_ID = 0xFFFFFFFF


def posix_acl(*entries: tuple[int, int, int]) -> bytes:
    """The value of a system.posix_acl_* xattr: (tag, perm, id) entries, in the kernel's order."""
    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", t, p, i) for t, p, i in entries)


def setnocow(path: bytes) -> bool:
    """chattr +C on an empty file or a directory; False where the filesystem has no such flag."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0]
        fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags | FS_NOCOW_FL) + bytes(4))
        return nocow(fd)
    except OSError:
        return False
    finally:
        os.close(fd)


def _write(path: bytes, data: bytes = b"", mode: int = 0o644) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(path, mode)


def _try_xattr(path: bytes, name: str, value: bytes, follow: bool = True) -> bool:
    try:
        os.setxattr(path, name, value, follow_symlinks=follow)
        return True
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return False
        raise


def _setfacl(*args: bytes | str) -> str | None:
    """Run setfacl; None when it worked, else its error message."""
    r = subprocess.run(["setfacl", *args], capture_output=True)
    return None if r.returncode == 0 else r.stderr.decode(errors="replace").strip()


DEEP = 120
SPARSE_SIZE = 8 * MiB
SPARSE_ISLANDS = ((0, b"head" * 100), (3 * MiB + 123, b"middle island"), (SPARSE_SIZE - 777, b"tail" * 50))


def build_tree(root: str | os.PathLike[str], *, outside: str, privileged: bool = False,
               nocow: bool = False, big: int = 0) -> dict[str, Any]:
    """Make the rich test tree in the new directory ``root``. Returns what the filesystem let
    us make: {"holes": sparse files have holes, "user_xattrs": user.* worked, "acl": setfacl
    worked (privileged only; else the error), "nocow": chattr +C worked}.

    Always: nested dirs, an empty dir, files of modes 0640/0755/0700/04755, a symlink to the
    absolute path ``outside``, a dangling one, one to a directory, a hardlink pair, an 8 MiB
    sparse file with three small data islands, names with a space, UTF-8, a newline and a
    non-UTF-8 byte, a FIFO, user.* xattrs (where supported), a directory 120 levels deep, and
    past atimes/mtimes with nanoseconds on every entry, set children first. ``privileged``
    (root): owners 1234:5678 (also on a symlink), setgid/sticky dirs and a setgid file,
    trusted.* xattrs (also on a symlink), a char device 1:3, an ACL (``setfacl -m
    u:1234:rwx``) and a default ACL (``setfacl -d -m g:5678:rx``). ``nocow``: a chattr +C file
    and dir. ``big``: a file of that many random bytes (for data-sharing checks)."""
    r = os.fsencode(os.fspath(root))
    info: dict[str, Any] = {}
    os.mkdir(r, 0o755)

    def p(*parts: bytes) -> bytes:
        return b"/".join((r, *parts))

    os.makedirs(p(b"a", b"b", b"c"))
    os.mkdir(p(b"empty"))
    os.chmod(p(b"a", b"b"), 0o700)
    _write(p(b"a", b"f640"), b"six four zero\n", 0o640)
    _write(p(b"a", b"b", b"f755"), b"#!/bin/sh\necho hi\n", 0o755)
    _write(p(b"a", b"b", b"c", b"f700"), b"private\n", 0o700)
    _write(p(b"a", b"suid"), b"\x7fELF pretend\n", 0o4755)
    _write(p(b"empty-file"), b"", 0o600)
    os.symlink(os.fsencode(outside), p(b"abs-outside"))
    os.symlink(b"does/not/exist", p(b"dangling"))
    os.symlink(b"a/b", p(b"dir-link"))
    os.symlink(b"../f640", p(b"a", b"b", b"rel-link"))
    _write(p(b"a", b"hl1"), b"hardlinked content\n", 0o644)
    os.mkdir(p(b"other"))
    os.link(p(b"a", b"hl1"), p(b"other", b"hl2"))
    os.link(p(b"a", b"hl1"), p(b"hl3"))

    # Sparse: 8 MiB, three small islands.
    fd = os.open(p(b"sparse.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.ftruncate(fd, SPARSE_SIZE)
        for off, data in SPARSE_ISLANDS:
            os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    info["holes"] = os.stat(p(b"sparse.bin")).st_blocks * 512 < SPARSE_SIZE // 2

    # Odd names.
    os.mkdir(p(b"with space"))
    _write(p(b"with space", b"file with  spaces "), b"spaces\n")
    os.mkdir(p("données é".encode()))
    _write(p("données é".encode(), "ü.txt".encode()), "texte accentué\n".encode())
    _write(p(b"new\nline"), b"newline in the name\n")
    _write(p(b"bad\xff\xfename"), b"not utf-8\n")
    os.mkdir(p(b"bad-dir-\x80"))
    os.symlink(b"../bad\xff\xfename", p(b"bad-dir-\x80", b"link\n\xfe"))

    os.mkfifo(p(b"fifo"))
    os.chmod(p(b"fifo"), 0o620)

    # Deep.
    deep = p(b"deep")
    os.mkdir(deep)
    cur = deep
    for _ in range(DEEP):
        cur += b"/d"
        os.mkdir(cur)
    _write(cur + b"/bottom", b"at the bottom\n")

    if big:
        fd = os.open(p(b"big.bin"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            left = big
            while left:
                n = min(left, 4 * MiB)
                os.write(fd, os.urandom(n))
                left -= n
            os.fsync(fd)
        finally:
            os.close(fd)

    if nocow:
        os.mkdir(p(b"nocow-dir"))
        ok = setnocow(p(b"nocow-dir"))
        _write(p(b"nocow-dir", b"db"), b"inherits +C from its dir\n" * 100)
        _write(p(b"nocow-file"), b"")
        ok = setnocow(p(b"nocow-file")) and ok
        with open(p(b"nocow-file"), "ab") as f:
            f.write(b"+C set while empty\n" * 1000)
        _write(p(b"nocow-dir", b"cow-in-nocow"), b"")  # inherited +C ...
        fd = os.open(p(b"nocow-dir", b"cow-in-nocow"), os.O_RDONLY)
        try:  # ... and taken off again while empty
            flags = struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0]
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, struct.pack("i", flags & ~FS_NOCOW_FL) + bytes(4))
        except OSError:
            ok = False
        finally:
            os.close(fd)
        with open(p(b"nocow-dir", b"cow-in-nocow"), "ab") as f:
            f.write(b"copy on write\n" * 10)
        info["nocow"] = ok

    if privileged:
        os.chown(p(b"a", b"f640"), 1234, 5678)
        os.chown(p(b"a", b"b"), 1234, 5678)
        os.chown(p(b"a", b"hl1"), 1234, 5678)
        os.chown(p(b"dangling"), 1234, 5678, follow_symlinks=False)
        os.chown(p(b"fifo"), 1234, 5678)
        os.mkdir(p(b"setgid-dir"))
        os.chown(p(b"setgid-dir"), 0, 5678)
        os.chmod(p(b"setgid-dir"), 0o2775)
        os.mkdir(p(b"sticky-dir"))
        os.chmod(p(b"sticky-dir"), 0o1777)
        _write(p(b"setgid-dir", b"sgid-file"), b"setgid\n", 0o755)
        os.chown(p(b"setgid-dir", b"sgid-file"), 1234, 5678)
        os.chmod(p(b"setgid-dir", b"sgid-file"), 0o2755)  # after chown, which clears it
        os.chown(p(b"a", b"suid"), 1234, 5678)
        os.chmod(p(b"a", b"suid"), 0o6755)
        os.mknod(p(b"null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        os.chown(p(b"null"), 1234, 5678)
        os.chmod(p(b"null"), 0o640)
        os.setxattr(p(b"a", b"f640"), "trusted.composeguard", b"trusted value")
        os.setxattr(p(b"a"), "trusted.dir", b"\x00binary\xff")
        info["symlink_xattr"] = _try_xattr(p(b"dangling"), "trusted.on-symlink", b"x", follow=False)
        _try_xattr(p(b"fifo"), "trusted.on-fifo", b"fifo attr")
        err = _setfacl("-m", "u:1234:rwx", p(b"a", b"f640"))
        if err is None:
            err = _setfacl("-d", "-m", "g:5678:rx", p(b"a", b"b"))
        if err is None:
            _write(p(b"a", b"b", b"inherits-acl"), b"made after the default ACL\n", 0o640)
        info["acl"] = True if err is None else err

    ux = _try_xattr(p(b"a", b"f640"), "user.comment", b"a user attribute")
    if ux:
        os.setxattr(p(b"a"), "user.dir-attr", b"on a dir")
        os.setxattr(p(b"sparse.bin"), "user.empty", b"")
        os.setxattr(p(b"bad\xff\xfename"), "user.big", bytes(range(256)) * 8)
    info["user_xattrs"] = ux

    set_times(r)
    return info


def set_times(root: bytes) -> None:
    """Distinct past atimes and mtimes with nanoseconds on every entry, children first."""
    n = 0

    def stamp(path: bytes) -> None:
        nonlocal n
        n += 1
        mtime = (1_000_000_000 + n * 7919) * 10**9 + n * 1_234_567 + 89
        atime = mtime + 86_400 * 10**9 + 987_654_321
        os.utime(path, ns=(atime, mtime), follow_symlinks=False)

    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in sorted(filenames + dirnames):
            path = os.path.join(dirpath, name)
            if not os.path.isdir(path) or os.path.islink(path):
                stamp(path)
        stamp(dirpath)
