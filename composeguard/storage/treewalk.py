"""The tree copier: a depth-first walk by open directory descriptors that copies each entry by kind.

:class:`TreeCopier` is one ``copy_tree`` / ``copy_entries`` call of
:mod:`composeguard.storage.treecopy`: the walk (an explicit stack, two descriptors open per
level, every name opened relative to its directory with ``O_NOFOLLOW``), hardlinks within the
tree, regular files (cloned with ``FICLONE``, or ``copy_file_range`` over the data segments
only, through user space where that cannot work), symlinks, FIFOs and device nodes, and the
counters (:class:`CopyStats`). The metadata half (attributes, ACLs, no-copy-on-write, the
directories' owner, mode and times) is :class:`~composeguard.storage.treemeta.MetadataCopier`.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from composeguard.storage.treemeta import FICLONE, MetadataCopier, TreeCopyError, proc_path, shown

log = logging.getLogger("composeguard.treecopy")  # one logger for all of the tree copy

# copy_file_range cannot do this pair of files (or at all here): copy through user space.
_CFR_FALLBACK = {errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}
_CHUNK = 1 << 20
_CLONE_HINTS = {
    errno.EXDEV: " (source and copy must be on the same mounted filesystem)",
    errno.EOPNOTSUPP: " (this filesystem cannot clone files: reflink needs Btrfs or XFS)",
    errno.ENOTTY: " (this filesystem cannot clone files: reflink needs Btrfs or XFS)",
}

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SRC_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class CopyStats:
    files: int = 0  # regular files copied (every name: a hardlink's second name counts too)
    dirs: int = 0  # including the top directory
    other: int = 0  # symlinks, fifos, devices
    bytes: int = 0  # logical bytes of regular files (sum of st_size; a hardlinked inode once)


def join_path(rel: bytes, name: bytes) -> bytes:
    return rel + b"/" + name if rel else name


class TreeCopier(MetadataCopier):
    """One ``copy_tree`` call: the open descriptors, the hardlinks seen, the counters."""

    def __init__(self, src: str, dst: str, method: str) -> None:
        self.src, self.dst, self.method = src, dst, method
        self.stats = CopyStats()
        self.links: dict[tuple[int, int], bytes] = {}  # (st_dev, st_ino) of a source -> its copy
        self.noatime = True  # O_NOATIME: reading the source leaves its atimes alone (owner/root)
        self.cfr = True  # copy_file_range works between these two filesystems
        self.dst_root_fd = -1
        self.dst_dev_ino = (-1, -1)

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
                raise TreeCopyError(f"cannot copy {shown(self.src)} into {shown(self.dst)}: it is inside it")
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
        path = join_path(rel, name)
        try:
            st = os.stat(name, dir_fd=s_fd, follow_symlinks=False)
        except OSError as e:
            raise self.fail("read", path, e) from e
        mode = st.st_mode
        if stat.S_ISSOCK(mode):
            log.debug("skipping the socket %s (a runtime object)", shown(path))
            return
        if stat.S_ISDIR(mode):
            try:
                os.mkdir(name, 0o700, dir_fd=d_fd)
                new_d = os.open(name, DIR_FLAGS, dir_fd=d_fd)
            except OSError as e:
                raise self.fail("create", path, e, "dst") from e
            try:
                new_s = self.open_src(name, DIR_FLAGS, s_fd)
                now = os.fstat(new_s)
            except OSError as e:
                os.close(new_d)
                raise self.fail("open the directory", path, e) from e
            if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                os.close(new_d)
                os.close(new_s)
                raise TreeCopyError(f"{shown(self.src)}/{shown(path)} changed while it was copied")
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
            raise TreeCopyError(f"cannot copy {shown(self.src)}/{shown(path)}: unknown file type {mode:o}")
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
            raise self.fail(f"hardlink {shown(first)} as", path, e, "dst") from e
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
                raise TreeCopyError(f"{shown(self.src)}/{shown(path)} changed while it was copied")
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
                            f"cannot clone {shown(self.src)}/{shown(path)} (reflink): {e.strerror}{hint}"
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
                raise TreeCopyError(f"{shown(self.src)}/{shown(path)} got shorter while it was copied")
            off += n
        while off < end:
            data = os.pread(fin, min(_CHUNK, end - off), off)
            if not data:
                raise TreeCopyError(f"{shown(self.src)}/{shown(path)} got shorter while it was copied")
            view = memoryview(data)
            while view:
                n = os.pwrite(fout, view, off)
                view = view[n:]
                off += n

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
        self.copy_xattrs(proc_path(s_fd, name), proc_path(d_fd, name), path, follow=False, tolerant=True)
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
        self.copy_xattrs(proc_path(s_fd, name), proc_path(d_fd, name), path, follow=False)
        try:
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=d_fd, follow_symlinks=False)
        except OSError as e:
            raise self.fail("set the times of", path, e, "dst") from e


def _close_level(s_fd: int, d_fd: int, rel: bytes) -> None:
    if rel:  # the top two belong to copy_tree
        os.close(s_fd)
        os.close(d_fd)
