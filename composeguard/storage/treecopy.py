"""A metadata-exact, symlink-safe copy of one directory tree (directory-level restore).

When several services share one dataset, a rollback must put back only the unit's own
directories: the whole dataset cannot be rolled back without also rolling back neighbours that
kept running. So the directory is rebuilt from the read-only pre-upgrade snapshot, next to the
live one, and then swapped in by the caller.

The copy must be exact, or the restored service finds its data subtly changed: owners, the full
mode (setuid/setgid/sticky), times to the nanosecond, every extended attribute (POSIX ACLs are
the ``system.posix_acl_*`` attributes), hardlinks, symlinks, FIFOs, device nodes and holes.
And it must be safe: a snapshot of a container's volume holds whatever the container wrote,
including symlinks to ``/etc`` or ``/``. Every entry is therefore reached by name relative to
an open directory descriptor with ``O_NOFOLLOW``; no path string through the tree is ever
resolved, so no symlink in the source can make us read or write outside of it.

The data is not copied byte by byte where the filesystem can share it: ``method="reflink"``
clones every file with ``FICLONE`` (Btrfs: the cost grows with extents, not bytes; a failure is
an error, never a silent full copy that could fill the pool), and ``method="copy"`` uses
``copy_file_range`` over the data segments only (OpenZFS with block cloning clones blocks; else
the kernel copies without a round trip through user space), so sparse files stay sparse.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import shutil
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from composeguard.errors import StorageError

log = logging.getLogger("composeguard.treecopy")

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long); the kernel reads and writes an int
FS_IOC_SETFLAGS = 0x40086602
FS_NOCOW_FL = 0x00800000  # chattr +C (Btrfs): cloning needs it equal on source and copy

ACL_XATTRS = ("system.posix_acl_access", "system.posix_acl_default")
# copy_file_range cannot do this pair of files (or at all here): copy through user space.
_CFR_FALLBACK = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_CHUNK = 1 << 20
_CLONE_HINTS = {
    errno.EXDEV: " (source and copy must be on the same mounted filesystem)",
    errno.EOPNOTSUPP: " (this filesystem cannot clone files: reflink needs Btrfs or XFS)",
    errno.ENOTTY: " (this filesystem cannot clone files: reflink needs Btrfs or XFS)",
}

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SRC_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class TreeCopyError(StorageError):
    """A tree could not be copied or removed; the message names the path."""


@dataclass
class CopyStats:
    files: int = 0  # regular files copied (every name: a hardlink's second name counts too)
    dirs: int = 0  # including the top directory
    other: int = 0  # symlinks, fifos, devices
    bytes: int = 0  # logical bytes of regular files (sum of st_size; a hardlinked inode once)


def _show(path: bytes | str) -> str:
    """A path for a one-line message: odd bytes and newlines escaped."""
    if isinstance(path, str):
        path = os.fsencode(path)
    return path.decode("utf-8", "backslashreplace").replace("\n", "\\n").replace("\r", "\\r")


def _join(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


def _proc(dir_fd: int, name: bytes) -> bytes:
    """A path to the entry ``name`` of the open directory ``dir_fd`` for the calls that have no
    ``dir_fd`` form (the xattr calls): ``/proc/self/fd/N`` is the directory itself, whatever
    path it was opened by, and only ``name`` is looked up in it."""
    return b"/proc/self/fd/%d/%s" % (dir_fd, name)


def _syncfs(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.syncfs(fd) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


class _Copier:
    """One ``copy_tree`` call: the open descriptors, the hardlinks seen, the counters."""

    def __init__(self, src: str, dst: str, method: str) -> None:
        self.src, self.dst, self.method = src, dst, method
        self.stats = CopyStats()
        self.links: dict[tuple[int, int], bytes] = {}  # (st_dev, st_ino) of a source -> its copy
        self.noatime = True  # O_NOATIME: reading the source leaves its atimes alone (owner/root)
        self.cfr = True  # copy_file_range works between these two filesystems
        self.dst_root_fd = -1
        self.dst_dev_ino = (-1, -1)

    # -- errors --------------------------------------------------------------------------------
    def fail(self, what: str, rel: bytes, e: OSError, side: str = "src") -> TreeCopyError:
        root = self.src if side == "src" else self.dst
        where = os.path.join(_show(root), _show(rel)) if rel else _show(root)
        detail = e.strerror or str(e)
        return TreeCopyError(f"cannot {what} {where}: {detail}")

    # -- opening -------------------------------------------------------------------------------
    def open_src(self, name: bytes, flags: int, dir_fd: int) -> int:
        if self.noatime:
            try:
                return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
            except PermissionError:
                self.noatime = False  # not the owner and no CAP_FOWNER: atimes may move
        return os.open(name, flags, dir_fd=dir_fd)

    # -- the walk ------------------------------------------------------------------------------
    def run(self, src_fd: int, src_st: os.stat_result, dst_fd: int) -> None:
        """Depth first with an explicit stack (no recursion limit), keeping two descriptors
        per level open. Directories get their metadata after their content (post-order).
        The caller owns (and closes) the two top descriptors."""
        self.dst_root_fd = dst_fd
        st = os.fstat(dst_fd)
        self.dst_dev_ino = (st.st_dev, st.st_ino)
        self.walk(lambda stack: self.push_dir(stack, src_fd, dst_fd, b"", src_st))

    def walk(self, start: Callable[[list], None]) -> None:
        """Run ``start`` (which puts the first level on the stack), then copy all of it; the
        descriptors still on the stack are closed whatever happens."""
        stack: list[tuple[int, int, bytes, os.stat_result, list[bytes]]] = []
        try:
            start(stack)
            self.drain(stack)
        finally:
            for s_fd, d_fd, rel, _, _ in stack:
                _close_level(s_fd, d_fd, rel)

    def drain(self, stack: list) -> None:
        """Copy what the stack holds, closing each level when its directory is complete."""
        while stack:
            s_fd, d_fd, rel, st, names = stack[-1]
            if names:
                self.entry(stack, s_fd, d_fd, rel, names.pop())
                continue
            stack.pop()
            try:
                self.finish_dir(s_fd, d_fd, rel, st)
            finally:
                _close_level(s_fd, d_fd, rel)

    def push_dir(self, stack: list, s_fd: int, d_fd: int, rel: bytes, st: os.stat_result) -> None:
        """Start copying a directory: both descriptors go on the stack (or are closed here)."""
        try:
            if (st.st_dev, st.st_ino) == self.dst_dev_ino:
                raise TreeCopyError(f"cannot copy {_show(self.src)} into {_show(self.dst)}: it is inside it")
            self.copy_nocow(s_fd, d_fd, rel)
            # Sorted, popped from the end: the entries in order (hardlinks to the first name).
            names = sorted((os.fsencode(n) for n in os.listdir(s_fd)), reverse=True)
        except BaseException as e:
            _close_level(s_fd, d_fd, rel)
            if isinstance(e, OSError):
                raise self.fail("read the directory", rel, e) from e
            raise
        stack.append((s_fd, d_fd, rel, st, names))
        self.stats.dirs += 1

    def entry(self, stack: list, s_fd: int, d_fd: int, rel: bytes, name: bytes) -> None:
        path = _join(rel, name)
        try:
            st = os.stat(name, dir_fd=s_fd, follow_symlinks=False)
        except OSError as e:
            raise self.fail("read", path, e) from e
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            log.debug("skipping the socket %s (a runtime object)", _show(path))
            return
        if stat.S_ISDIR(mode):
            try:
                os.mkdir(name, 0o700, dir_fd=d_fd)
                new_d = os.open(name, _DIR_FLAGS, dir_fd=d_fd)
            except OSError as e:
                raise self.fail("create", path, e, "dst") from e
            try:
                new_s = self.open_src(name, _DIR_FLAGS, s_fd)
                now = os.fstat(new_s)
            except OSError as e:
                os.close(new_d)
                raise self.fail("open the directory", path, e) from e
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(new_d)
                os.close(new_s)
                raise TreeCopyError(f"{_show(self.src)}/{_show(path)} changed while it was copied")
            self.push_dir(stack, new_s, new_d, path, st)
            return
        if st.st_nlink > 1 and self.hardlink(st, d_fd, name, path):
            return
        if stat.S_ISREG(mode):
            self.copy_file(s_fd, d_fd, name, path, st)
            self.stats.files += 1
        elif stat.S_ISLNK(mode):
            self.copy_symlink(s_fd, d_fd, name, path, st)
            self.stats.other += 1
        elif stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self.copy_node(s_fd, d_fd, name, path, st)
            self.stats.other += 1
        else:
            raise TreeCopyError(f"cannot copy {_show(self.src)}/{_show(path)}: unknown file type {mode:o}")
        if st.st_nlink > 1:
            self.links[(st.st_dev, st.st_ino)] = path

    def hardlink(self, st: os.stat_result, d_fd: int, name: bytes, path: bytes) -> bool:
        """Link to the copy of an inode already seen. The first copy is named by its path
        relative to the copy's top directory: every directory on it was made by us, in a
        folder nobody else can write to (mode 0700 until the end)."""
        first = self.links.get((st.st_dev, st.st_ino))
        if first is None:
            return False
        try:
            os.link(first, name, src_dir_fd=self.dst_root_fd, dst_dir_fd=d_fd, follow_symlinks=False)
        except OSError as e:
            raise self.fail(f"hardlink {_show(first)} as", path, e, "dst") from e
        if stat.S_ISREG(st.st_mode):
            self.stats.files += 1
        else:
            self.stats.other += 1
        return True

    # -- regular files -------------------------------------------------------------------------
    def copy_file(self, s_fd: int, d_fd: int, name: bytes, path: bytes, st: os.stat_result) -> None:
        try:
            fin = self.open_src(name, _SRC_FILE_FLAGS, s_fd)
        except OSError as e:
            raise self.fail("open", path, e) from e
        try:
            now = os.fstat(fin)
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(now.st_mode):
                raise TreeCopyError(f"{_show(self.src)}/{_show(path)} changed while it was copied")
            try:
                fout = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=d_fd)
            except OSError as e:
                raise self.fail("create", path, e, "dst") from e
            try:
                self.copy_nocow(fin, fout, path)
                if self.method == "reflink":
                    try:
                        fcntl.ioctl(fout, FICLONE, fin)
                    except OSError as e:
                        hint = _CLONE_HINTS.get(e.errno, "")
                        raise TreeCopyError(
                            f"cannot clone {_show(self.src)}/{_show(path)} (reflink): {e.strerror}{hint}"
                        ) from e
                else:
                    self.copy_data(fin, fout, now.st_size, path)
                self.stats.bytes += now.st_size
                try:
                    os.fchown(fout, st.st_uid, st.st_gid)
                    os.fchmod(fout, stat.S_IMODE(st.st_mode))  # after chown: chown clears setuid
                except OSError as e:
                    raise self.fail("set the owner or mode of", path, e, "dst") from e
                self.copy_xattrs(fin, fout, path)  # after chmod: chmod rewrites the ACL mask
                try:
                    os.utime(fout, ns=(st.st_atime_ns, st.st_mtime_ns))
                except OSError as e:
                    raise self.fail("set the times of", path, e, "dst") from e
            finally:
                os.close(fout)
        finally:
            os.close(fin)

    def copy_data(self, fin: int, fout: int, size: int, path: bytes) -> None:
        """The data segments only (SEEK_DATA/SEEK_HOLE), then the size: holes stay holes."""
        off = 0
        try:
            while off < size:
                try:
                    start = os.lseek(fin, off, os.SEEK_DATA)
                except OSError as e:
                    if e.errno == errno.ENXIO:  # only a hole from here to the end
                        break
                    if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                        raise
                    start, end = off, size  # no SEEK_DATA here: all of it is data
                else:
                    end = min(os.lseek(fin, start, os.SEEK_HOLE), size)
                if start >= size:
                    break
                self.copy_range(fin, fout, start, end, path)
                off = end
            os.ftruncate(fout, size)
        except OSError as e:
            raise self.fail("copy the data of", path, e) from e

    def copy_range(self, fin: int, fout: int, off: int, end: int, path: bytes) -> None:
        while off < end and self.cfr:
            try:
                n = os.copy_file_range(fin, fout, end - off, off, off)
            except OSError as e:
                if e.errno not in _CFR_FALLBACK:
                    raise
                log.debug("copy_file_range: %s; copying through user space", e.strerror)
                self.cfr = False
                break
            if n == 0:
                raise TreeCopyError(f"{_show(self.src)}/{_show(path)} got shorter while it was copied")
            off += n
        while off < end:
            data = os.pread(fin, min(_CHUNK, end - off), off)
            if not data:
                raise TreeCopyError(f"{_show(self.src)}/{_show(path)} got shorter while it was copied")
            view = memoryview(data)
            while view:
                n = os.pwrite(fout, view, off)
                view = view[n:]
                off += n

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

    # -- other kinds ---------------------------------------------------------------------------
    def copy_symlink(self, s_fd: int, d_fd: int, name: bytes, path: bytes, st: os.stat_result) -> None:
        try:
            target = os.readlink(name, dir_fd=s_fd)
        except OSError as e:
            raise self.fail("read the symlink", path, e) from e
        try:
            os.symlink(target, name, dir_fd=d_fd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=d_fd, follow_symlinks=False)
        except OSError as e:
            raise self.fail("create the symlink", path, e, "dst") from e
        # user.* attributes are not allowed on symlinks, and some filesystems have none there.
        self.copy_xattrs(_proc(s_fd, name), _proc(d_fd, name), path, follow=False, tolerant=True)
        try:
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=d_fd, follow_symlinks=False)
        except OSError as e:
            raise self.fail("set the times of", path, e, "dst") from e

    def copy_node(self, s_fd: int, d_fd: int, name: bytes, path: bytes, st: os.stat_result) -> None:
        """FIFOs and device nodes: never opened (that could block, or touch a device). The
        name was just made by us in a folder only we can write to, so it is not a symlink."""
        kind = stat.S_IFMT(st.st_mode)
        try:
            os.mknod(name, kind | 0o600, st.st_rdev if kind != stat.S_IFIFO else 0, dir_fd=d_fd)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=d_fd, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=d_fd)
        except OSError as e:
            raise self.fail("create", path, e, "dst") from e
        self.copy_xattrs(_proc(s_fd, name), _proc(d_fd, name), path, follow=False)
        try:
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=d_fd, follow_symlinks=False)
        except OSError as e:
            raise self.fail("set the times of", path, e, "dst") from e

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
                    log.debug("%s: extended attribute %s not kept: %s", _show(rel), n, e.strerror)
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


def _close_level(s_fd: int, d_fd: int, rel: bytes) -> None:
    if rel:  # the top two belong to copy_tree
        os.close(s_fd)
        os.close(d_fd)


def _flags(fd: int) -> int:
    """The inode flags (chattr), 0 where the filesystem has none."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4])[0]
    except OSError:
        return 0


def _real_dir(path: str, failing: str, refusing: str, missing_ok: bool = False) -> os.stat_result | None:
    """lstat of ``path``, which must be a directory and not a symlink (``failing``/``refusing``
    start the error line); None for a missing one when ``missing_ok``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as e:
        if missing_ok:
            return None
        raise TreeCopyError(f"{failing} {_show(path)}: {e.strerror}") from e
    except OSError as e:
        raise TreeCopyError(f"{failing} {_show(path)}: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise TreeCopyError(f"{refusing} {_show(path)}: it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise TreeCopyError(f"{refusing} {_show(path)}: not a directory")
    return st


def _open_top(src: str) -> tuple[int, os.stat_result]:
    st = _real_dir(src, "cannot copy", "cannot copy")
    assert st is not None
    try:
        try:
            fd = os.open(src, _DIR_FLAGS | os.O_NOATIME)
        except PermissionError:
            fd = os.open(src, _DIR_FLAGS)
    except OSError as e:
        raise TreeCopyError(f"cannot open {_show(src)}: {e.strerror}") from e
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise TreeCopyError(f"{_show(src)} changed while it was opened")
    return fd, st


def copy_tree(src: str, dst: str, *, method: str) -> CopyStats:
    """Make the NEW directory ``dst`` (it must not exist; its parent must) an exact copy of the
    directory ``src``.

    ``method="reflink"``: every regular file is cloned with the ``FICLONE`` ioctl (Btrfs; cost
    grows with extents, not bytes); if cloning fails this raises :class:`TreeCopyError`, never
    silently copying bytes. ``method="copy"``: ``os.copy_file_range`` over the data segments
    only (``SEEK_DATA``/``SEEK_HOLE``), then ``ftruncate`` to the size, so sparse files stay
    sparse; on OpenZFS with block cloning enabled that clones blocks, otherwise the kernel copies
    bytes. Read/write is used only if ``copy_file_range`` raises EXDEV/ENOSYS/EOPNOTSUPP/EINVAL.

    ``dst`` is made with mode 0700 and gets its final owner, mode, attributes and times last,
    so a half-made copy is never readable by others. The copy is flushed (``syncfs``) before
    that. If the copy fails, what was made of ``dst`` is removed again and the error raised.
    Sockets are skipped (runtime objects). Kept: the owner, the full mode, atime and mtime in
    nanoseconds, every extended attribute (ACLs included), hardlinks within the tree, symlinks
    as symlinks, FIFOs, device nodes, holes, and Btrfs's no-copy-on-write flag.
    """
    if method not in ("reflink", "copy"):
        raise TreeCopyError(f"unknown tree copy method {method!r} (reflink or copy)")
    start = time.monotonic()
    parent, base = os.path.split(dst.rstrip("/"))
    if base in ("", ".", ".."):
        raise TreeCopyError(f"cannot copy into {_show(dst)}: not a name for a new directory")
    src_fd, src_st = _open_top(src)
    copier = _Copier(src, dst, method)
    try:
        try:
            parent_fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise TreeCopyError(f"cannot copy into {_show(dst)}: {_show(parent)}: {e.strerror}") from e
        try:
            try:
                os.mkdir(base, 0o700, dir_fd=parent_fd)
            except FileExistsError as e:
                raise TreeCopyError(f"cannot copy into {_show(dst)}: it already exists") from e
            except OSError as e:
                raise TreeCopyError(f"cannot create {_show(dst)}: {e.strerror}") from e
            try:
                _fill(copier, src_fd, src_st, base, parent_fd)
            except BaseException:
                try:  # by descriptor: the name is looked up in the parent we made it in
                    shutil.rmtree(base, dir_fd=parent_fd)
                except OSError as e:
                    log.warning("could not remove the half-made copy %s: %s", _show(dst), e)
                raise
        finally:
            os.close(parent_fd)
    finally:
        os.close(src_fd)
    s = copier.stats
    log.debug(
        "copy_tree %s -> %s (method=%s): %d files, %d dirs, %d other, %d bytes in %.2fs",
        _show(src), _show(dst), method, s.files, s.dirs, s.other, s.bytes, time.monotonic() - start,
    )
    return s


def copy_entry(
    src_dir: str, name: str, dst_dir: str, *, method: str, dst_dir_fd: int | None = None
) -> CopyStats:
    """Copy the one entry ``name`` of the directory ``src_dir`` (a regular file, symlink, node,
    or a whole directory tree) into the existing directory ``dst_dir`` under the same name,
    exactly as :func:`copy_tree` copies entries. Used to restore a single bind-mounted file as
    well as a directory: ``dst_dir`` is a fresh private (0700) staging folder next to the
    live path, so the copy can be renamed into place."""
    return copy_entries(src_dir, [name], dst_dir, method=method, dst_dir_fd=dst_dir_fd)


def copy_entries(
    src_dir: str, names: list[str], dst_dir: str, *, method: str, dst_dir_fd: int | None = None
) -> CopyStats:
    """:func:`copy_entry` for several entries, flushed to disk once at the end. ``dst_dir_fd``,
    when given, is the destination (already opened without following links; ``dst_dir`` then
    only names it in messages)."""
    if method not in ("reflink", "copy"):
        raise TreeCopyError(f"unknown tree copy method {method!r} (reflink or copy)")
    bnames = [os.fsencode(n) for n in names]
    for bname in bnames:
        if not bname or b"/" in bname or bname in (b".", b".."):
            raise TreeCopyError(f"cannot copy {_show(bname)}: not an entry name")
    src_fd, _ = _open_top(src_dir)
    copier = _Copier(src_dir, dst_dir, method)
    try:
        try:
            dst_fd = os.dup(dst_dir_fd) if dst_dir_fd is not None else os.open(dst_dir, _DIR_FLAGS)
        except OSError as e:
            raise TreeCopyError(f"cannot open {_show(dst_dir)}: {e.strerror}") from e
        try:
            st = os.fstat(dst_fd)
            copier.dst_root_fd, copier.dst_dev_ino = dst_fd, (st.st_dev, st.st_ino)
            for bname in bnames:
                copier.walk(lambda stack, b=bname: copier.entry(stack, src_fd, dst_fd, b"", b))
            try:
                _syncfs(dst_fd)
            except OSError as e:
                raise TreeCopyError(f"cannot flush the copy in {_show(dst_dir)} to disk: {e.strerror}") from e
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return copier.stats


def _fill(copier: _Copier, src_fd: int, src_st: os.stat_result, base: str, parent_fd: int) -> None:
    try:
        dst_fd = os.open(base, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        raise TreeCopyError(f"cannot open the new {_show(copier.dst)}: {e.strerror}") from e
    try:
        _drop_inherited_acl(dst_fd, copier.dst)
        copier.run(src_fd, src_st, dst_fd)
        try:
            _syncfs(dst_fd)  # the caller swaps the copy in next: it must be on disk first
        except OSError as e:
            raise TreeCopyError(f"cannot flush the copy {_show(copier.dst)} to disk: {e.strerror}") from e
    finally:
        os.close(dst_fd)


def _drop_inherited_acl(fd: int, dst: str) -> None:
    """A new directory inherits the default ACL of the folder it is made in; entries made in it
    would inherit it in turn. The copy's own ACLs are set at the end, from the source."""
    for n in ACL_XATTRS:
        try:
            os.removexattr(fd, n)
        except OSError as e:
            if e.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                msg = f"cannot remove the inherited ACL {n} of {_show(dst)}: {e.strerror}"
                raise TreeCopyError(msg) from e


def tree_usage(src: str) -> tuple[int, int]:
    """(number of entries, bytes allocated) of the tree at ``src``, for the free-space check
    and the progress line. Entries are what :func:`copy_tree` makes (the top directory and
    everything below but sockets: ``files + dirs + other`` of its stats); the bytes are the
    sum of ``st_blocks * 512`` of regular files, each hardlinked inode counted once. Symlinks
    are not followed."""
    fd, _ = _open_top(src)
    entries, used = 1, 0
    seen: set[tuple[int, int]] = set()
    stack = [(fd, b"")]
    try:
        while stack:
            d_fd, rel = stack.pop()
            try:
                names = [os.fsencode(n) for n in os.listdir(d_fd)]
                for name in names:
                    st = os.stat(name, dir_fd=d_fd, follow_symlinks=False)
                    if stat.S_ISSOCK(st.st_mode):
                        continue
                    entries += 1
                    if stat.S_ISDIR(st.st_mode):
                        stack.append((os.open(name, _DIR_FLAGS, dir_fd=d_fd), _join(rel, name)))
                    elif stat.S_ISREG(st.st_mode):
                        key = (st.st_dev, st.st_ino)
                        if st.st_nlink > 1:
                            if key in seen:
                                continue
                            seen.add(key)
                        used += st.st_blocks * 512
            except OSError as e:
                raise TreeCopyError(f"cannot measure {_show(src)}/{_show(rel)}: {e.strerror}") from e
            finally:
                os.close(d_fd)
    finally:
        for d_fd, _ in stack:
            os.close(d_fd)
    return entries, used


def remove_tree(path: str) -> None:
    """Delete the directory tree at ``path`` without ever following a symlink in it. A missing
    path is a no-op; a symlink or a non-directory at ``path`` is refused."""
    if not shutil.rmtree.avoids_symlink_attacks:  # the fd-based rmtree (Linux has it)
        raise TreeCopyError(f"cannot remove {_show(path)} safely: this platform's rmtree follows symlinks")
    if _real_dir(path, "cannot remove", "refusing to remove", missing_ok=True) is None:
        return
    try:
        shutil.rmtree(path)
    except OSError as e:
        where = _show(e.filename) if e.filename else _show(path)
        raise TreeCopyError(f"cannot remove {_show(path)}: {where}: {e.strerror}") from e
    log.debug("removed %s", _show(path))
