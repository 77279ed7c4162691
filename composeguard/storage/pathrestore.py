"""Directory-level restore: put back the unit's volume paths of a SHARED dataset, and nothing else.

The dataset was snapshotted whole before the upgrade. On rollback (the unit's containers are
stopped; every other container keeps running):

1. the failed state of the whole dataset is kept as a second snapshot (``failed``), so nothing
   the new version wrote is destroyed, and moving a directory aside later loses nothing;
2. each unit path P is rebuilt from the pre-upgrade snapshot in a staging directory next to it
   on the same dataset (``copy_tree``: reflink on Btrfs, ``copy_file_range`` on ZFS, which
   clones blocks where OpenZFS has block cloning), with owners, modes, times, xattrs, ACLs,
   hardlinks, symlinks and holes;
3. the staging directory takes P's place: ``renameat2(RENAME_EXCHANGE)`` where the filesystem
   offers it (Btrfs; ZFS >= 2.2), else two renames (the unit is stopped, nobody looks);
4. once the old version runs again, the moved-aside failed directory is deleted (it is in
   the ``failed`` snapshot).

A P that cannot be renamed (the root of its dataset, e.g. a ``subvol=`` mount point or a ZFS
dataset with children) is restored entry by entry instead: the snapshot's copy is staged
inside P and each of P's entries is swapped for its copy; entries the new version created
are moved aside.

Every step is recorded in the journal before the next one, and each one first checks where it
stands (by inode numbers and names), so ``recover`` can run the whole restore again after a
kill at any point and get the same result.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import stat
from collections.abc import Callable
from typing import Any, Protocol

from composeguard.errors import StorageError
from composeguard.faults import pause_point
from composeguard.storage.base import Dataset, Snapshot
from composeguard.storage.mounts import read_mounts
from composeguard.storage.treecopy import copy_entry, copy_tree, remove_tree
from composeguard.storage.usage import RESERVED_ROOT_NAMES, is_inside, own_name

log = logging.getLogger("composeguard.pathrestore")

RENAME_EXCHANGE = 2
AT_FDCWD = -100


class PathBackend(Protocol):
    def snapshot_path(self, snapshot: Snapshot, path: str) -> str:
        """Where the live ``path`` (inside the snapshot's dataset) is readable in ``snapshot``."""

    def snapshot_failed(self, dataset: Dataset, project: str, txn: str) -> tuple[str, str]:
        """Keep the dataset's current (failed) state as a snapshot; idempotent. Returns (the
        snapshot's name, the directory its files are seen at)."""

    def done_reading(self, snapshot: Snapshot) -> None:
        """Release whatever reading the snapshot needed (ZFS: the .zfs automount)."""


def exchange(a: str, b: str) -> bool:
    """Swap two names atomically; False when the filesystem cannot (then the caller renames)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fn = libc.renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    log.debug("renameat2(%s, %s, RENAME_EXCHANGE)", a, b)
    if fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise StorageError(f"cannot swap {b} with its restored copy: {os.strerror(e)}")


def _ino(path: str) -> int | None:
    try:
        return os.lstat(path).st_ino
    except FileNotFoundError:
        return None


def staging_of(path: str, txn: str) -> str:
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.composeguard-restore-{txn}")


def old_of(path: str, txn: str) -> str:
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.composeguard-old-{txn}")


def _rename(a: str, b: str) -> None:
    log.debug("rename %s -> %s", a, b)
    os.rename(a, b)


def restore_paths(
    backend: PathBackend,
    snapshot: Snapshot,
    record: dict[str, Any],
    project: str,
    txn: str,
    save: Callable[[], None],
) -> list[str]:
    """Restore ``record["paths"]`` of ``snapshot``'s dataset. ``record`` is this dataset's
    entry in the journal: progress is written into it and ``save`` persists it. Returns where
    the failed state of each path is kept."""
    d = snapshot.dataset
    if not record.get("failed"):
        name, seen_at = backend.snapshot_failed(d, project, txn)
        record["failed"], record["failed_root"] = name, seen_at
        save()
    pause_point("failed-snapshotted")
    progress = record.setdefault("progress", {})
    method = "reflink" if record.get("method") == "reflink" else "copy"
    root = record["root"]
    child_mounts = list(record.get("child_mounts") or [])
    try:
        for path in record["paths"]:
            src = backend.snapshot_path(snapshot, path)
            state = progress.setdefault(path, {})
            if path == root or os.path.ismount(path):
                _restore_entries(src, path, txn, method, state, save, set(child_mounts))
            else:
                _restore_dir(src, path, txn, method, state, save)
    finally:
        backend.done_reading(snapshot)
    kept_at = record.get("failed_root") or record["failed"]
    return [os.path.join(kept_at, os.path.relpath(p, root)) for p in record["paths"]]


def _restore_dir(
    src: str, path: str, txn: str, method: str, state: dict[str, Any], save: Callable[[], None]
) -> None:
    """Restore ``path`` (a directory, or a single bind-mounted file) by swapping in a copy.

    ``staging`` and ``old`` are private folders next to ``path`` holding one entry of
    ``path``'s name: the restored copy, and (after the swap) the failed one. The swap is one
    ``RENAME_EXCHANGE`` where the filesystem has it, else two renames."""
    staging, old = staging_of(path, txn), old_of(path, txn)
    name = os.path.basename(path)
    copy, aside = os.path.join(staging, name), os.path.join(old, name)
    if state.get("swapped"):
        return
    copy_ino = state.get("staging_ino")
    if copy_ino is not None and _ino(path) == copy_ino:
        state["swapped"] = True  # killed right after the swap
        save()
        return
    if not os.path.lexists(src):
        # P did not exist before the upgrade: the restored state is "no P"
        if os.path.lexists(path):
            _private_dir(old)
            _rename(path, aside)
        state["swapped"] = True
        save()
        return
    if copy_ino is None or _ino(copy) != copy_ino:
        if os.path.lexists(staging):
            remove_tree(staging)  # a half-made copy from a killed run: make it again
        _private_dir(staging)
        stats = copy_entry(os.path.dirname(src), os.path.basename(src), staging, method=method)
        log.info("restored copy of %s: %d files, %d bytes (%s)", path, stats.files, stats.bytes, method)
        state["staging_ino"] = _ino(copy)
        save()
        pause_point("dir-copied")
    if os.path.lexists(path):
        if not exchange(copy, path):  # after an exchange the failed entry is in staging
            _private_dir(old)
            _rename(path, aside)
            _rename(copy, path)
    else:
        _rename(copy, path)
    state["swapped"] = True
    save()
    pause_point("dir-swapped")


def _private_dir(path: str) -> None:
    if not os.path.isdir(path) or os.path.islink(path):
        os.mkdir(path, 0o700)


def _restore_entries(
    src: str,
    path: str,
    txn: str,
    method: str,
    state: dict[str, Any],
    save: Callable[[], None],
    child_mounts: set[str],
) -> None:
    """``path`` cannot be renamed (it is a mount point): swap each of its entries instead."""
    staging = os.path.join(path, f".composeguard-restore-{txn}")
    old = os.path.join(path, f".composeguard-old-{txn}")
    if state.get("swapped"):
        return

    def ours(name: str) -> bool:
        p = os.path.join(path, name)
        return name in RESERVED_ROOT_NAMES or own_name(name) or p in child_mounts

    if not state.get("copied"):
        if os.path.lexists(staging):
            remove_tree(staging)
        copy_tree(src, staging, method=method)
        for name in os.listdir(staging):  # a child dataset's mount point is an empty dir here
            if ours(name):
                p = os.path.join(staging, name)
                if os.path.isdir(p) and not os.path.islink(p):
                    remove_tree(p)
                else:
                    os.unlink(p)
        state["copied"] = True
        save()
        pause_point("dir-copied")
    if not os.path.isdir(old):
        os.mkdir(old, 0o700)
    wanted = sorted(n for n in os.listdir(src) if not ours(n))
    first = True
    for name in wanted:
        s = os.path.join(staging, name)
        if not os.path.lexists(s):
            continue  # already moved in
        live = os.path.join(path, name)
        if os.path.lexists(live):
            _rename(live, os.path.join(old, name))
        _rename(s, live)
        if first:
            save()
            pause_point("dir-swapped")
            first = False
    for name in sorted(os.listdir(path)):
        if name not in wanted and not ours(name):
            _rename(os.path.join(path, name), os.path.join(old, name))  # made by the failed version
    _copy_dir_metadata(src, path)
    st = os.lstat(src)
    state["times"] = [st.st_atime_ns, st.st_mtime_ns]  # put back again after the cleanup
    state["swapped"] = True
    save()


def _copy_dir_metadata(src: str, dst: str) -> None:
    """The restored root keeps its inode: give it the owner, mode, xattrs and times it had in
    the snapshot (``src``)."""
    st = os.lstat(src)
    os.chown(dst, st.st_uid, st.st_gid, follow_symlinks=False)
    os.chmod(dst, stat.S_IMODE(st.st_mode))
    for name in os.listxattr(dst):
        if name not in os.listxattr(src):
            os.removexattr(dst, name)
    for name in os.listxattr(src):
        os.setxattr(dst, name, os.getxattr(src, name))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def cleanup(record: dict[str, Any], txn: str) -> None:
    """Delete the moved-aside failed directories and empty staging folders (the failed
    state is in the ``failed`` snapshot). Never crosses into a mount below them."""
    mounts = [m.mountpoint for m in read_mounts()]
    for path in record.get("paths") or []:
        root_mode = path == record.get("root") or os.path.ismount(path)
        targets = (
            [os.path.join(path, f".composeguard-{kind}-{txn}") for kind in ("old", "restore")]
            if root_mode
            else [old_of(path, txn), staging_of(path, txn)]
        )
        for t in targets:
            if not os.path.lexists(t):
                continue
            below = [m for m in mounts if is_inside(m, t)]
            if below:
                raise StorageError(f"not deleting {t}: {below[0]} is mounted below it")
            remove_tree(t)
        times = (record.get("progress") or {}).get(path, {}).get("times")
        if root_mode and times:  # deleting in it changed the restored root's times
            os.utime(path, ns=(times[0], times[1]))
