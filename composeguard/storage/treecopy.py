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

This module has the entry points (``copy_tree``, ``copy_entry``, ``copy_entries``,
``tree_usage``, ``remove_tree``) and the top directories; the walk and the copy of each entry
are :mod:`composeguard.storage.treewalk`, the metadata :mod:`composeguard.storage.treemeta`.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import shutil
import stat
import time

from composeguard.storage.treemeta import TreeCopyError, drop_inherited_acl, shown
from composeguard.storage.treewalk import DIR_FLAGS, CopyStats, TreeCopier, join_path

log = logging.getLogger("composeguard.treecopy")  # one logger for all of the tree copy


def _syncfs(fd: int) -> None:
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    if libc.syncfs(fd) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def _real_dir(path: str, failing: str, refusing: str, missing_ok: bool = False) -> os.stat_result | None:
    """lstat of ``path``, which must be a directory and not a symlink (``failing``/``refusing``
    start the error line); None for a missing one when ``missing_ok``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError as e:
        if missing_ok:
            return None
        raise TreeCopyError(f"{failing} {shown(path)}: {e.strerror}") from e
    except OSError as e:
        raise TreeCopyError(f"{failing} {shown(path)}: {e.strerror}") from e
    if stat.S_ISLNK(st.st_mode):
        raise TreeCopyError(f"{refusing} {shown(path)}: it is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise TreeCopyError(f"{refusing} {shown(path)}: not a directory")
    return st


def _open_top(src: str) -> tuple[int, os.stat_result]:
    st = _real_dir(src, "cannot copy", "cannot copy")
    assert st is not None
    try:
        try:
            fd = os.open(src, DIR_FLAGS | os.O_NOATIME)
        except PermissionError:
            fd = os.open(src, DIR_FLAGS)
    except OSError as e:
        raise TreeCopyError(f"cannot open {shown(src)}: {e.strerror}") from e
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise TreeCopyError(f"{shown(src)} changed while it was opened")
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
        raise TreeCopyError(f"cannot copy into {shown(dst)}: not a name for a new directory")
    src_fd, src_st = _open_top(src)
    copier = TreeCopier(src, dst, method)
    try:
        try:
            parent_fd = os.open(parent or ".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise TreeCopyError(f"cannot copy into {shown(dst)}: {shown(parent)}: {e.strerror}") from e
        try:
            try:
                os.mkdir(base, 0o700, dir_fd=parent_fd)
            except FileExistsError as e:
                raise TreeCopyError(f"cannot copy into {shown(dst)}: it already exists") from e
            except OSError as e:
                raise TreeCopyError(f"cannot create {shown(dst)}: {e.strerror}") from e
            try:
                _fill(copier, src_fd, src_st, base, parent_fd)
            except BaseException:
                try:  # by descriptor: the name is looked up in the parent we made it in
                    shutil.rmtree(base, dir_fd=parent_fd)
                except OSError as e:
                    log.warning("could not remove the half-made copy %s: %s", shown(dst), e)
                raise
        finally:
            os.close(parent_fd)
    finally:
        os.close(src_fd)
    s = copier.stats
    log.debug(
        "copy_tree %s -> %s (method=%s): %d files, %d dirs, %d other, %d bytes in %.2fs",
        shown(src), shown(dst), method, s.files, s.dirs, s.other, s.bytes, time.monotonic() - start,
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
            raise TreeCopyError(f"cannot copy {shown(bname)}: not an entry name")
    src_fd, _ = _open_top(src_dir)
    copier = TreeCopier(src_dir, dst_dir, method)
    try:
        try:
            dst_fd = os.dup(dst_dir_fd) if dst_dir_fd is not None else os.open(dst_dir, DIR_FLAGS)
        except OSError as e:
            raise TreeCopyError(f"cannot open {shown(dst_dir)}: {e.strerror}") from e
        try:
            st = os.fstat(dst_fd)
            copier.dst_root_fd, copier.dst_dev_ino = dst_fd, (st.st_dev, st.st_ino)
            for bname in bnames:
                copier.walk(lambda stack, b=bname: copier.entry(stack, src_fd, dst_fd, b"", b))
            try:
                _syncfs(dst_fd)
            except OSError as e:
                raise TreeCopyError(f"cannot flush the copy in {shown(dst_dir)} to disk: {e.strerror}") from e
        finally:
            os.close(dst_fd)
    finally:
        os.close(src_fd)
    return copier.stats


def _fill(copier: TreeCopier, src_fd: int, src_st: os.stat_result, base: str, parent_fd: int) -> None:
    try:
        dst_fd = os.open(base, DIR_FLAGS, dir_fd=parent_fd)
    except OSError as e:
        raise TreeCopyError(f"cannot open the new {shown(copier.dst)}: {e.strerror}") from e
    try:
        drop_inherited_acl(dst_fd, copier.dst)
        copier.run(src_fd, src_st, dst_fd)
        try:
            _syncfs(dst_fd)  # the caller swaps the copy in next: it must be on disk first
        except OSError as e:
            raise TreeCopyError(f"cannot flush the copy {shown(copier.dst)} to disk: {e.strerror}") from e
    finally:
        os.close(dst_fd)


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
                        stack.append((os.open(name, DIR_FLAGS, dir_fd=d_fd), join_path(rel, name)))
                    elif stat.S_ISREG(st.st_mode):
                        key = (st.st_dev, st.st_ino)
                        if st.st_nlink > 1:
                            if key in seen:
                                continue
                            seen.add(key)
                        used += st.st_blocks * 512
            except OSError as e:
                raise TreeCopyError(f"cannot measure {shown(src)}/{shown(rel)}: {e.strerror}") from e
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
        raise TreeCopyError(f"cannot remove {shown(path)} safely: this platform's rmtree follows symlinks")
    if _real_dir(path, "cannot remove", "refusing to remove", missing_ok=True) is None:
        return
    try:
        shutil.rmtree(path)
    except OSError as e:
        where = shown(e.filename) if e.filename else shown(path)
        raise TreeCopyError(f"cannot remove {shown(path)}: {where}: {e.strerror}") from e
    log.debug("removed %s", shown(path))
