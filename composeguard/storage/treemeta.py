"""Metadata for the tree copy (see :mod:`composeguard.storage.treecopy`), and what its parts share.

:class:`MetadataCopier` is the half of the copier (:class:`~composeguard.storage.treewalk.TreeCopier`)
that copies no data: every extended attribute of an entry and none it lacks (POSIX ACLs are the
``system.posix_acl_*`` attributes), Btrfs's no-copy-on-write flag (``chattr +C``) before any
data is written, and a directory's owner, mode, attributes and times once its content is
complete. ``drop_inherited_acl`` keeps a new top directory from passing on the default ACL of
the folder it is made in.

Shared by all of the tree copy: its error (:class:`TreeCopyError`, whose message names the
path: ``MetadataCopier.fail``), ``shown`` (a path for a one-line message) and ``proc_path``
(an entry of an open directory for the calls that take no ``dir_fd``).
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import struct

from composeguard.errors import StorageError

log = logging.getLogger("composeguard.treecopy")  # one logger for all of the tree copy

FICLONE = 0x40049409  # _IOW(0x94, 9, int): clone a whole file (Btrfs reflink, ZFS block cloning)
FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long); the kernel reads and writes an int
FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000  # chattr +C (Btrfs): cloning needs it equal on source and copy

ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")


class TreeCopyError(StorageError):
    """A tree could not be copied or removed; the message names the path."""


def shown(path: bytes | str) -> str:
    """A path for a one-line message: odd bytes and newlines escaped."""
    if isinstance(path, str):
        path = os.fsencode(path)
    return path.decode("utf-8", "backslashreplace").replace("\n", "\\n").replace("\r", "\\r")


def proc_path(dir_fd: int, name: bytes) -> bytes:
    """A path to the entry ``name`` of the open directory ``dir_fd`` for the calls that have no
    ``dir_fd`` form (the xattr calls): ``/proc/self/fd/N`` is the directory itself, whatever
    path it was opened by, and only ``name`` is looked up in it."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


class MetadataCopier:
    """The metadata half of :class:`~composeguard.storage.treewalk.TreeCopier`, which sets
    ``src`` and ``dst`` (the two top paths, named in messages)."""

    src: str
    dst: str

    # -- errors --------------------------------------------------------------------------------
    def fail(self, what: str, rel: bytes, e: OSError, side: str = "src") -> TreeCopyError:
        root = self.src if side == "src" else self.dst
        where = os.path.join(shown(root), shown(rel)) if rel else shown(root)
        detail = e.strerror or str(e)
        return TreeCopyError(f"cannot {what} {where}: {detail}")

    # -- no-copy-on-write, directories ---------------------------------------------------------
    def copy_nocow(self, fin: int, fout: int, rel: bytes) -> None:
        """Btrfs ``chattr +C`` (no copy-on-write, often set for databases) must match before
        any data is written: it can only change on an empty file, and cloning refuses a pair
        that differs. A new entry may have inherited it from the folder the copy is made in."""
        want = _flags(fin) & FS_NOCOW_FL
        have = _flags(fout)
        if (have & FS_NOCOW_FL) == want:
            return
        try:
            fcntl.ioctl(fout, FS_IOC_SETFLAGS, struct.pack("i", (have & ~FS_NOCOW_FL) | want) + bytes(4))
        except OSError as e:
            raise self.fail("set the no-copy-on-write flag (chattr +C) of", rel, e, "dst") from e

    def finish_dir(self, s_fd: int, d_fd: int, rel: bytes, st: os.stat_result) -> None:
        """A directory's owner, mode, attributes and times, once its content is complete:
        creating entries changes its mtime, and a default ACL set earlier would have been
        inherited by the entries made in it."""
        try:
            os.fchown(d_fd, st.st_uid, st.st_gid)
            os.fchmod(d_fd, stat.S_IMODE(st.st_mode))
        except OSError as e:
            raise self.fail("set the owner or mode of", rel, e, "dst") from e
        self.copy_xattrs(s_fd, d_fd, rel)
        try:
            os.utime(d_fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as e:
            raise self.fail("set the times of", rel, e, "dst") from e

    # -- extended attributes -------------------------------------------------------------------
    def copy_xattrs(
        self, src: int | bytes, dst: int | bytes, rel: bytes, *, follow: bool = True, tolerant: bool = False
    ) -> None:
        """Every attribute of ``src`` on ``dst``, and none that ``src`` lacks (an entry can
        inherit an ACL or a Btrfs property from the folder it is made in). ``tolerant``: the
        target cannot hold them (symlinks) — skip what it refuses."""
        try:
            names = os.listxattr(src, follow_symlinks=follow)
            values = {n: os.getxattr(src, n, follow_symlinks=follow) for n in names}
        except OSError as e:
            if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
                raise self.fail("read the extended attributes of", rel, e) from e
            values = {}
        for n, v in values.items():
            try:
                os.setxattr(dst, n, v, follow_symlinks=follow)
            except OSError as e:
                if tolerant and e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
                    log.debug("%s: extended attribute %s not kept: %s", shown(rel), n, e.strerror)
                    continue
                raise self.fail(f"set the extended attribute {n} on", rel, e, "dst") from e
        try:
            extra = [n for n in os.listxattr(dst, follow_symlinks=follow) if n not in values]
        except OSError as e:
            if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
                return
            raise self.fail("read the extended attributes of", rel, e, "dst") from e
        for n in extra:
            try:
                os.removexattr(dst, n, follow_symlinks=follow)
            except OSError as e:
                if n.startswith("security.") or e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    continue  # e.g. an SELinux label the system gives every new file
                raise self.fail(f"remove the inherited extended attribute {n} from", rel, e, "dst") from e


def _flags(fd: int) -> int:
    """The inode flags (chattr), 0 where the filesystem has none."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0]
    except OSError:
        return 0


def drop_inherited_acl(fd: int, dst: str) -> None:
    """A new directory inherits the default ACL of the folder it is made in; entries made in it
    would inherit it in turn. The copy's own ACLs are set at the end, from the source."""
    for n in ACL_XATTRS:
        try:
            os.removexattr(fd, n)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                msg = f"cannot remove the inherited ACL {n} of {shown(dst)}: {e.strerror}"
                raise TreeCopyError(msg) from e
