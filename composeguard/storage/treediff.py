"""Record every field of a directory tree that a metadata-exact copy must keep, and list where
two such records differ: how ``provision`` verifies the copy it made before it deletes the
original, and what the tests compare restored trees with (tests/treecompare.py).

The walk never follows a symlink: every entry is reached relative to an open directory with
``O_NOFOLLOW``. Files and directories are opened with ``O_NOATIME`` where allowed (their owner,
root), so that recording a tree does not change the atimes it records.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import struct
from collections.abc import Iterable
from typing import Any

from composeguard.storage.treemeta import FS_IOC_GETFLAGS, FS_NOCOW_FL

MiB = 1 << 20

_KIND = {
    stat.S_IFDIR: "dir",
    stat.S_IFREG: "file",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFCHR: "chr",
    stat.S_IFBLK: "blk",
    stat.S_IFSOCK: "sock",
}


def show(path: bytes) -> str:
    return repr(path)[1:] if path else "'' (the top directory)"


# -- snapshot ----------------------------------------------------------------------------------
def _open(name: bytes, flags: int, dir_fd: int | None = None) -> int:
    try:
        return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
    except PermissionError:  # not the owner and not root: the atime may move
        return os.open(name, flags, dir_fd=dir_fd)


def _xattrs(ref: int | bytes, follow: bool) -> dict[str, bytes]:
    try:
        names = os.listxattr(ref, follow_symlinks=follow)
        return {n: os.getxattr(ref, n, follow_symlinks=follow) for n in sorted(names)}
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise


def nocow(fd: int) -> bool:
    try:
        return bool(struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0] & FS_NOCOW_FL)
    except OSError:
        return False


def data_map(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of the data segments of an open file, by SEEK_DATA/SEEK_HOLE."""
    segs: list[tuple[int, int]] = []
    off = 0
    while off < size:
        try:
            start = os.lseek(fd, off, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if start >= end:
            break
        segs.append((start, end - start))
        off = end
    return segs


def _sha256(fd: int) -> str:
    h = hashlib.sha256()
    while chunk := os.read(fd, MiB):
        h.update(chunk)
    return h.hexdigest()


def snapshot_tree(root: str | os.PathLike[str], *, atime: bool = True, symlink_atime: bool = False
                  ) -> dict[bytes, dict[str, Any]]:
    """Every field of every entry below ``root`` that a copy must keep. Never follows a symlink.
    Fields: type, mode (with setuid/setgid/sticky), uid, gid, mtime_ns, atime_ns (files and
    directories; symlinks only with ``symlink_atime``), size (files, symlinks), target
    (symlinks), rdev (devices), xattrs (sorted name -> value; POSIX ACLs are xattrs), sha256 and
    data (the data/hole map) for files, nocow (Btrfs chattr +C) for files and directories, and
    link: for names sharing an inode within the tree, the smallest of those names (a group id
    that is the same in a copy), else None. Directory sizes are not compared (they depend on the
    directory's history on ext4)."""
    top = os.fsencode(os.fspath(root))
    out: dict[bytes, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], list[bytes]] = {}

    def common(st: os.stat_result) -> dict[str, Any]:
        return {
            "type": _KIND[stat.S_IFMT(st.st_mode)],
            "mode": oct(stat.S_IMODE(st.st_mode)),
            "uid": st.st_uid,
            "gid": st.st_gid,
            "mtime_ns": st.st_mtime_ns,
        }

    st = os.lstat(top)
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", os.fsdecode(top))
    fd = _open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    rec = common(st)
    if atime:
        rec["atime_ns"] = st.st_atime_ns
    rec["xattrs"] = _xattrs(fd, True)
    rec["nocow"] = nocow(fd)
    out[b""] = rec
    stack = [(fd, b"")]
    try:
        while stack:
            dfd, rel = stack.pop()
            try:
                for name in sorted(os.fsencode(n) for n in os.listdir(dfd)):
                    path = rel + b"/" + name if rel else name
                    st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
                    rec = common(st)
                    kind = rec["type"]
                    if kind in ("file", "dir") and atime or kind == "symlink" and symlink_atime:
                        rec["atime_ns"] = st.st_atime_ns
                    if kind == "dir":
                        sub = _open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dfd)
                        rec["xattrs"] = _xattrs(sub, True)
                        rec["nocow"] = nocow(sub)
                        stack.append((sub, path))
                    elif kind == "file":
                        f = _open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dfd)
                        try:
                            rec["size"] = st.st_size
                            rec["data"] = data_map(f, st.st_size)
                            rec["sha256"] = _sha256(f)
                            rec["xattrs"] = _xattrs(f, True)
                            rec["nocow"] = nocow(f)
                        finally:
                            os.close(f)
                    else:
                        proc = b"/proc/self/fd/%d/%s" % (dfd, name)
                        rec["xattrs"] = _xattrs(proc, False)
                        if kind == "symlink":
                            rec["target"] = os.readlink(name, dir_fd=dfd)
                            rec["size"] = st.st_size
                        elif kind in ("chr", "blk"):
                            rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
                    if kind != "dir":
                        inodes.setdefault((st.st_dev, st.st_ino), []).append(path)
                    out[path] = rec
            finally:
                os.close(dfd)
    finally:
        for dfd, _ in stack:
            os.close(dfd)
    for paths in inodes.values():
        group = min(paths) if len(paths) > 1 else None
        for p in paths:
            out[p]["link"] = group
    return out


def _fmt(v: Any) -> str:
    s = repr(v)
    return s if len(s) <= 160 else s[:150] + f"... ({len(s)} chars)"


def tree_differences(a: dict[bytes, dict[str, Any]], b: dict[bytes, dict[str, Any]], *,
                     ignore: Iterable[str] = ()) -> list[str]:
    skip = set(ignore)
    diffs: list[str] = []
    for path in sorted(a.keys() | b.keys()):
        if path not in b:
            diffs.append(f"{show(path)}: only in the first tree ({a[path]['type']})")
            continue
        if path not in a:
            diffs.append(f"{show(path)}: only in the second tree ({b[path]['type']})")
            continue
        ra, rb = a[path], b[path]
        for field in sorted((ra.keys() | rb.keys()) - skip):
            va, vb = ra.get(field, "<absent>"), rb.get(field, "<absent>")
            if va != vb:
                diffs.append(f"{show(path)}: {field}: {_fmt(va)} != {_fmt(vb)}")
    return diffs
