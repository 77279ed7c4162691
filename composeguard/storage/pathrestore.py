"""Directory-level restore: put back the unit's volume paths of a SHARED dataset, and nothing else.

The dataset was snapshotted whole before the upgrade. On rollback (the unit's containers are
stopped; every other container keeps running):

1. the failed state of the whole dataset is kept as a second snapshot (``failed``), so nothing
   the new version wrote is destroyed, and moving a directory aside later loses nothing;
2. each unit path P is rebuilt from the pre-upgrade snapshot in a staging directory next to it
   on the same dataset (``copy_entry``: reflink on Btrfs, ``copy_file_range`` on ZFS, which
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

import logging
import os
import shutil
import stat
from collections.abc import Callable
from typing import Any, Protocol

from composeguard.errors import StorageError
from composeguard.faults import pause_point
from composeguard.storage import safedir
from composeguard.storage.base import Dataset, Snapshot
from composeguard.storage.mounts import read_mounts
from composeguard.storage.treecopy import copy_entries, copy_entry
from composeguard.storage.usage import RESERVED_ROOT_NAMES, is_inside, own_name

log = logging.getLogger("composeguard.pathrestore")

class PathBackend(Protocol):
    def snapshot_path(self, snapshot: Snapshot, path: str) -> str:
        """Where the live ``path`` (inside the snapshot's dataset) is readable in ``snapshot``."""

    def snapshot_failed(self, dataset: Dataset, project: str, txn: str) -> tuple[str, str]:
        """Keep the dataset's current (failed) state as a snapshot; idempotent. Returns (the
        snapshot's name, the directory its files are seen at)."""

    def done_reading(self, snapshot: Snapshot) -> None:
        """Release whatever reading the snapshot needed (ZFS: the .zfs automount)."""


def staging_of(path: str, txn: str) -> str:
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.composeguard-restore-{txn}")


def old_of(path: str, txn: str) -> str:
    parent, name = os.path.split(path)
    return os.path.join(parent, f".{name}.composeguard-old-{txn}")


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
    ``RENAME_EXCHANGE`` where the filesystem has it, else two renames. The folder holding
    ``path`` may be writable by others: everything there goes through descriptors (safedir)."""
    if state.get("swapped"):
        return
    parent, name = os.path.split(path)
    staging, old = staging_of(path, txn), old_of(path, txn)
    sname, oname = os.path.basename(staging), os.path.basename(old)
    pfd = safedir.open_dir(parent)
    try:
        copy_ino = state.get("staging_ino")
        live = safedir.entry(pfd, name)
        if copy_ino is not None and live is not None and live.st_ino == copy_ino:
            state["swapped"] = True  # killed right after the swap
            save()
            return
        if not os.path.lexists(src):
            # P did not exist before the upgrade: the restored state is "no P"
            if live is not None:
                ofd = safedir.private_dir(pfd, oname, old)
                try:
                    safedir.rename(pfd, name, ofd, name, f"{path} to {old}")
                finally:
                    os.close(ofd)
            state["swapped"] = True
            save()
            return
        sfd = safedir.private_dir(pfd, sname, staging)
        try:
            made = safedir.entry(sfd, name)
            if copy_ino is None or made is None or made.st_ino != copy_ino:
                if made is not None:  # a half-made copy from a killed run: make it again
                    _remove_entry(sfd, name, made, os.path.join(staging, name))
                stats = copy_entry(os.path.dirname(src), os.path.basename(src), staging, method=method,
                                   dst_dir_fd=sfd)
                log.info("restored copy of %s: %d files, %d bytes (%s)", path, stats.files, stats.bytes,
                         method)
                state["staging_ino"] = os.lstat(name, dir_fd=sfd).st_ino
                save()
                pause_point("dir-copied")
            if safedir.entry(pfd, name) is None:
                safedir.rename(sfd, name, pfd, name, f"the restored copy to {path}")
            elif not safedir.exchange(sfd, name, pfd, name, path):  # then the failed one is in staging
                ofd = safedir.private_dir(pfd, oname, old)
                try:
                    safedir.rename(pfd, name, ofd, name, f"{path} to {old}")
                finally:
                    os.close(ofd)
                safedir.rename(sfd, name, pfd, name, f"the restored copy to {path}")
        finally:
            os.close(sfd)
    finally:
        os.close(pfd)
    state["swapped"] = True
    save()
    pause_point("dir-swapped")


def _remove_entry(dir_fd: int, name: str, st: os.stat_result, where: str) -> None:
    """Delete ``name`` in one of composeguard's private folders (no link is followed)."""
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        os.unlink(name, dir_fd=dir_fd)
    log.debug("removed %s", where)


def _restore_entries(
    src: str,
    path: str,
    txn: str,
    method: str,
    state: dict[str, Any],
    save: Callable[[], None],
    child_mounts: set[str],
) -> None:
    """``path`` cannot be renamed (it is a mount point): swap each of its entries instead,
    through descriptors of ``path`` and of two private folders in it."""
    if state.get("swapped"):
        return
    sname, oname = f".composeguard-restore-{txn}", f".composeguard-old-{txn}"
    staging, old = os.path.join(path, sname), os.path.join(path, oname)

    def ours(name: str) -> bool:
        p = os.path.join(path, name)
        return name in RESERVED_ROOT_NAMES or own_name(name) or p in child_mounts

    pfd = safedir.open_dir(path)
    try:
        if not state.get("copied"):
            safedir.remove_private(pfd, sname, staging)  # a half-made copy from a killed run
            sfd = safedir.private_dir(pfd, sname, staging)
            try:
                # a child dataset's mount point is an empty folder in the snapshot: not copied
                copy_entries(src, sorted(n for n in os.listdir(src) if not ours(n)), staging,
                             method=method, dst_dir_fd=sfd)
            finally:
                os.close(sfd)
            state["copied"] = True
            save()
            pause_point("dir-copied")
        sfd = safedir.private_dir(pfd, sname, staging)
        ofd = safedir.private_dir(pfd, oname, old)
        try:
            wanted = sorted(n for n in os.listdir(src) if not ours(n))
            first = True
            for name in wanted:
                if safedir.entry(sfd, name) is None:
                    continue  # already moved in
                if safedir.entry(pfd, name) is not None:
                    safedir.rename(pfd, name, ofd, name, f"{os.path.join(path, name)} to {old}")
                safedir.rename(sfd, name, pfd, name, f"the restored {os.path.join(path, name)}")
                if first:
                    save()
                    pause_point("dir-swapped")
                    first = False
            for name in sorted(os.listdir(pfd)):
                if name not in wanted and not ours(name):  # made by the failed version
                    safedir.rename(pfd, name, ofd, name, f"{os.path.join(path, name)} to {old}")
        finally:
            os.close(ofd)
            os.close(sfd)
        copy_dir_metadata(src, pfd)
    finally:
        os.close(pfd)
    st = os.lstat(src)
    state["times"] = [st.st_atime_ns, st.st_mtime_ns]  # put back again after the cleanup
    state["swapped"] = True
    save()


def copy_dir_metadata(src: str, dst_fd: int, keep: tuple[str, ...] = ()) -> None:
    """The restored root keeps its inode: give it the owner, mode, xattrs and times it had in
    the snapshot (``src``), through its descriptor (never through a link). Extended
    attributes named in ``keep`` stay (a provisioned dataset's tag)."""
    st = os.lstat(src)
    os.chown(dst_fd, st.st_uid, st.st_gid)
    os.chmod(dst_fd, stat.S_IMODE(st.st_mode))
    for name in os.listxattr(dst_fd):
        if name not in os.listxattr(src) and name not in keep:
            os.removexattr(dst_fd, name)
    for name in os.listxattr(src):
        os.setxattr(dst_fd, name, os.getxattr(src, name))
    os.utime(dst_fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def cleanup(record: dict[str, Any], txn: str) -> None:
    """Delete the moved-aside failed directories and empty staging folders (the failed
    state is in the ``failed`` snapshot). Never crosses into a mount below them, never
    deletes a folder composeguard did not make, never follows a link."""
    mounts = [m.mountpoint for m in read_mounts()]
    for path in record.get("paths") or []:
        root_mode = path == record.get("root") or os.path.ismount(path)
        if root_mode:
            where, names = path, [f".composeguard-{kind}-{txn}" for kind in ("old", "restore")]
        else:
            where = os.path.dirname(path)
            names = [os.path.basename(old_of(path, txn)), os.path.basename(staging_of(path, txn))]
        fd = safedir.open_dir(where)
        try:
            for n in names:
                t = os.path.join(where, n)
                if safedir.entry(fd, n) is None:
                    continue
                below = [m for m in mounts if is_inside(m, t)]
                if below:
                    raise StorageError(f"not deleting {t}: {below[0]} is mounted below it")
                safedir.remove_private(fd, n, t)
            times = (record.get("progress") or {}).get(path, {}).get("times")
            if root_mode and times:  # deleting in it changed the restored root's times
                os.utime(fd, ns=(times[0], times[1]))
        finally:
            os.close(fd)
