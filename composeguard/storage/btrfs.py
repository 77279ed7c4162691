"""Btrfs: read-only snapshots of subvolumes, restore by an atomic rename-exchange.

Btrfs has no in-place rollback. A restore makes a writable snapshot of the pre-upgrade
snapshot next to the live subvolume and swaps the two names with ``renameat2(RENAME_EXCHANGE)``,
so at every instant the path holds either the failed state or the restored one. The failed
state is then moved next to the pre-upgrade snapshot and made read-only: nothing the new
version wrote is destroyed. Each step checks where it stands first, so a restore interrupted
by a crash can simply be run again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import struct
import urllib.parse
from pathlib import Path

from composeguard import execute
from composeguard.errors import CommandError, ConfigError, StorageError, last_line
from composeguard.settings import parse_size_or_percent
from composeguard.state import write_atomic
from composeguard.storage import safedir
from composeguard.storage.base import Clone, Dataset, Snapshot, SnapshotTags, Unprotected
from composeguard.storage.mounts import Mount, mount_for, read_mounts
from composeguard.storage.probecopy import OLD_KERNEL, clone_probe, restore_target_dir

log = logging.getLogger("composeguard.btrfs")

SUBVOLUME_ROOT_INO = 256  # BTRFS_FIRST_FREE_OBJECTID: the root directory of every subvolume
TAGS_FILE = "composeguard.json"
TOP_BASE = "/run/composeguard/btrfs"  # top-level mounts of filesystems with subvol= data


# linux/btrfs.h: struct btrfs_ioctl_vol_args_v2 (fd, transid, flags, 4 x u64, name[4040]) and
# struct btrfs_ioctl_vol_args (fd, name[4088]) are both 4096 bytes.
BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417  # _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
BTRFS_IOC_SNAP_DESTROY = 0x5000940F  # _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E  # _IOW(0x94, 14, struct btrfs_ioctl_vol_args)


def snapshot_at(source: str, dir_fd: int, name: str, where: str) -> None:
    """A writable snapshot of the subvolume ``source`` made as ``name`` in the directory
    ``dir_fd``, by ioctl: the new name is made in that very directory and never through a
    link (EEXIST when anything has the name), unlike ``btrfs subvolume snapshot SRC PATH``,
    which would put the snapshot INSIDE a folder or link planted at PATH."""
    bname = os.fsencode(name)
    if not bname or b"/" in bname or len(bname) > 4039:
        raise StorageError(f"cannot make {where}: bad name")
    src_fd = safedir.open_dir(source)
    try:
        args = bytearray(4096)
        struct.pack_into("=q", args, 0, src_fd)
        args[56 : 56 + len(bname)] = bname
        log.debug("ioctl BTRFS_IOC_SNAP_CREATE_V2 %s -> %s", source, where)
        fcntl.ioctl(dir_fd, BTRFS_IOC_SNAP_CREATE_V2, args)
    except OSError as e:
        raise StorageError(f"cannot copy the snapshot {source} to {where}: {e.strerror}") from e
    finally:
        os.close(src_fd)


def _vol_args_ioctl(dir_fd: int, request: int, name: str, failing: str) -> None:
    """An ioctl taking struct btrfs_ioctl_vol_args (the name of an entry of ``dir_fd``)."""
    bname = os.fsencode(name)
    if not bname or b"/" in bname or len(bname) > 4087:
        raise StorageError(f"{failing}: bad name")
    args = bytearray(4096)
    args[8 : 8 + len(bname)] = bname
    log.debug("ioctl 0x%x %s", request, failing)
    try:
        fcntl.ioctl(dir_fd, request, args)
    except OSError as e:
        raise StorageError(f"{failing}: {e.strerror}") from e


def destroy_at(dir_fd: int, name: str, where: str) -> None:
    """Delete the subvolume ``name`` of the directory ``dir_fd`` (looked up there, never
    through a link)."""
    _vol_args_ioctl(dir_fd, BTRFS_IOC_SNAP_DESTROY, name, f"cannot delete {where}")


def create_at(dir_fd: int, name: str, where: str) -> None:
    """Create the empty subvolume ``name`` in the directory ``dir_fd`` (EEXIST when anything
    has the name; never through a link)."""
    _vol_args_ioctl(dir_fd, BTRFS_IOC_SUBVOL_CREATE, name, f"cannot create the subvolume {where}")


def subvolume_info(path: str) -> dict[str, str]:
    """Fields of ``btrfs subvolume show`` (UUID, Parent UUID, Subvolume ID, Flags …)."""
    out = execute.run(["btrfs", "subvolume", "show", path]).stdout
    info: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        key, sep, value = line.strip().partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


class BtrfsBackend:
    kind = "btrfs"

    def __init__(self, mounts: list[Mount], snapshot_dir: str = ".composeguard-snapshots") -> None:
        self.mounts = mounts
        self.snapshot_dir = snapshot_dir
        self._listing: dict[str, list[tuple[int, int, str]]] = {}  # mountpoint -> subvolumes

    # -- discovery -------------------------------------------------------------------------
    def dataset_for(self, path: str) -> Dataset:
        m = mount_for(path, self.mounts)
        if m is None or m.fstype != "btrfs":
            raise Unprotected(f"{path} is not on Btrfs")
        p = Path(path)
        if not p.is_dir():
            p = p.parent
        while os.stat(p).st_ino != SUBVOLUME_ROOT_INO and str(p) != m.mountpoint:
            p = p.parent
        if str(p) == m.mountpoint and m.root != "/":
            # A subvolume mounted with subvol= (a data directory in fstab, or the OS root `@`):
            # snapshots cannot live inside it, so it is reached through a top-level mount of
            # the same filesystem, and restored at the directories of the unit (see
            # whole_refused): a mounted subvolume cannot be swapped in place.
            top = self.top_mount(m.source)
            name = os.path.join(top, m.root.lstrip("/"))
            return Dataset(backend=self.kind, name=name, pool=m.source, mountpoint=top, root=str(p))
        if str(p) == m.mountpoint or os.stat(p).st_ino != SUBVOLUME_ROOT_INO:
            raise Unprotected(
                f"{path} is not in a subvolume of its own on the Btrfs filesystem at {m.mountpoint} "
                f"(make it one: btrfs subvolume create)"
            )
        return Dataset(backend=self.kind, name=str(p), pool=m.source, mountpoint=m.mountpoint)

    def descendants(self, d: Dataset, inside: list[str]) -> list[Dataset]:
        """Nested subvolumes are not part of a snapshot (see ``nested``): none to add."""
        return []

    def whole_refused(self, d: Dataset) -> str:
        if d.root:
            return f"it is mounted with subvol= at {d.root}, so it cannot be swapped in place"
        return ""

    def top_mount(self, source: str) -> str:
        """The top level (subvolid=5) of the Btrfs filesystem on ``source``, mounted under
        /run/composeguard/btrfs (root only), mounted now if it is not (e.g. after a reboot)."""
        top = os.path.join(TOP_BASE, urllib.parse.quote(source, safe=""))
        if not any(m.mountpoint == top and m.fstype == "btrfs" for m in self.mounts):
            if not any(m.mountpoint == top and m.fstype == "btrfs" for m in read_mounts()):
                _private_dirs(Path(top), Path(TOP_BASE).parent)
                try:
                    execute.run(["mount", "-t", "btrfs", "-o", "subvolid=5", source, top])
                except CommandError as e:
                    raise StorageError(
                        f"cannot mount the top level of the Btrfs filesystem {source}: {last_line(e.stderr)}"
                    ) from e
            self.mounts = read_mounts()
        return top

    def _ensure(self, path: str | Path) -> None:
        """Mount the top level a recorded path goes through, if it is one (after a reboot)."""
        rel = os.path.relpath(str(path), TOP_BASE)
        if not rel.startswith(".."):
            self.top_mount(urllib.parse.unquote(rel.split("/", 1)[0]))

    def nested(self, d: Dataset) -> list[str]:
        """Subvolumes below ``d`` (a snapshot of ``d`` leaves them out: they show up in it as
        empty directories). One ``btrfs subvolume list`` per filesystem for all the
        project's subvolumes (not one per subvolume: on a pool with hundreds of snapshots
        each call reads them all)."""
        m = mount_for(d.name, self.mounts)
        if m is None:
            return []
        entries = self._list(m)
        rel = os.path.normpath(os.path.join(m.root.lstrip("/"), os.path.relpath(d.name, m.mountpoint)))
        out = []
        for _, _, path in entries:
            if path.startswith(rel + "/"):
                inside = os.path.relpath(path, m.root.lstrip("/") or ".")
                out.append(os.path.normpath(os.path.join(m.mountpoint, inside)))
        if not any(path == rel for _, _, path in entries):  # not listed as expected: ask directly
            listed = execute.run(["btrfs", "subvolume", "list", "-o", d.name]).stdout
            out += [ln.split(" path ", 1)[1] for ln in listed.splitlines() if " path " in ln]
        return sorted(set(out))

    def _list(self, m: Mount) -> list[tuple[int, int, str]]:
        if m.mountpoint not in self._listing:
            out = execute.run(["btrfs", "subvolume", "list", m.mountpoint]).stdout
            entries = []
            for line in out.splitlines():
                parts = line.split(" ", 8)  # ID <id> gen <gen> top level <id> path <path>
                if len(parts) == 9 and parts[0] == "ID" and parts[7] == "path":
                    entries.append((int(parts[1]), int(parts[6]), parts[8]))
            self._listing[m.mountpoint] = entries
        return self._listing[m.mountpoint]

    # -- directory-level restore (storage/pathrestore.py) ----------------------------------
    def copy_method(self, d: Dataset) -> str:
        return "reflink"  # FICLONE: metadata only, the data is shared with the snapshot

    def prove_copy(self, d: Dataset, paths: list[str], method: str) -> tuple[str, str]:
        """Reflink a probe file from where the snapshot will be read (the snapshot folder, or
        the mount it will be made in) into each folder the restore writes: across two mounts
        (a ``subvol=`` mount restored from the top level) Linux before 5.18 says EXDEV."""
        self._ensure(d.name)
        src = self.snapshot_base(d)
        while not src.is_dir() and src != src.parent:
            src = src.parent
        for dst in sorted({restore_target_dir(p, d.files_at) for p in paths}):
            why = clone_probe(str(src), dst, exdev_hint=OLD_KERNEL)
            if why:
                return "copy", f"a reflink from {src} to {dst} failed ({why}): a byte copy instead"
        return method, f"reflinked a probe file from {src} to each folder the restore writes"

    def free_bytes(self, d: Dataset) -> int:
        st = os.statvfs(d.files_at)
        return st.f_bavail * st.f_frsize

    def snapshot_path(self, snapshot: Snapshot, path: str) -> str:
        self._ensure(snapshot.name)
        return os.path.join(snapshot.name, os.path.relpath(path, snapshot.dataset.files_at))

    def snapshot_failed(self, d: Dataset, project: str, txn: str) -> tuple[str, str]:
        """The failed state of a shared subvolume, kept read-only where a whole restore would
        keep it (``<txn>/failed/<subvolume>``)."""
        self._ensure(d.name)
        target = self.txn_dir(d, project, txn) / "failed" / self._rel(d)
        if not self._is_subvolume(target):
            _private_dirs(target.parent, self.snapshot_base(d))
            try:
                execute.run(["btrfs", "subvolume", "snapshot", "-r", d.name, str(target)])
            except CommandError as e:
                raise StorageError(
                    f"cannot snapshot the failed state of {d.name}: {last_line(e.stderr)}"
                ) from e
        return str(target), str(target)

    def done_reading(self, snapshot: Snapshot) -> None:
        """Nothing to release: a Btrfs snapshot is a directory."""

    @staticmethod
    def _is_subvolume(p: Path) -> bool:
        try:
            st = os.lstat(p)
        except FileNotFoundError:
            return False
        return st.st_ino == SUBVOLUME_ROOT_INO and stat.S_ISDIR(st.st_mode)

    def check_free_space(self, datasets: list[Dataset], min_free: str) -> None:
        kind, amount = parse_size_or_percent(min_free)
        for mp in sorted({d.mountpoint for d in datasets}):
            st = os.statvfs(mp)
            free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
            need = total * amount / 100 if kind == "percent" else amount
            if free < need:
                raise StorageError(
                    f"the Btrfs filesystem at {mp} has only {free >> 20} MiB free "
                    f"(composeguard wants {min_free} free before snapshotting)"
                )

    def check_location(self, datasets: list[Dataset], project: str) -> None:
        """The snapshot folder must be on the same filesystem and only root may change it
        (checked before anything stops)."""
        for d in datasets:
            try:
                _check_private(self.txn_dir(d, project, "check"), self.snapshot_base(d))
                self._check_same_fs(self.txn_dir(d, project, "check"), d)
            except StorageError as e:
                raise ConfigError(f"{e} (x-composeguard.btrfs_snapshot_dir); nothing was changed") from e

    # -- paths -----------------------------------------------------------------------------
    def snapshot_base(self, dataset: Dataset) -> Path:
        base = Path(self.snapshot_dir)
        return base if base.is_absolute() else Path(dataset.mountpoint) / base

    def txn_dir(self, dataset: Dataset, tags_project: str, txn: str) -> Path:
        return self.snapshot_base(dataset) / tags_project / txn

    @staticmethod
    def _rel(dataset: Dataset) -> str:
        return os.path.relpath(dataset.name, dataset.mountpoint)

    # -- snapshot --------------------------------------------------------------------------
    def snapshot(self, datasets: list[Dataset], tags: SnapshotTags, on_each=None) -> list[Snapshot]:
        """One read-only snapshot per subvolume. Btrfs cannot make them atomic with each other;
        the caller stops the changing services first so the set is consistent."""
        snaps = []
        for d in datasets:
            self._ensure(d.name)
            tdir = self.txn_dir(d, tags.project, tags.txn)
            target = tdir / "pre" / self._rel(d)
            self._check_same_fs(tdir, d)
            _private_dirs(target.parent, self.snapshot_base(d))
            self._write_tags(tdir, tags)
            if not target.exists():
                try:
                    execute.run(["btrfs", "subvolume", "snapshot", "-r", d.name, str(target)])
                except CommandError as e:
                    raise StorageError(f"cannot snapshot {d.name}: {last_line(e.stderr)}") from e
            snap = Snapshot(d, str(target))
            snaps.append(snap)
            if on_each:
                on_each(snap)
        return snaps

    def find_snapshot(self, dataset: Dataset, project: str, txn: str) -> Snapshot | None:
        self._ensure(dataset.name)
        target = self.txn_dir(dataset, project, txn) / "pre" / self._rel(dataset)
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return None
        if st.st_ino != SUBVOLUME_ROOT_INO or not stat.S_ISDIR(st.st_mode):
            return None
        return Snapshot(dataset, str(target))

    def _check_same_fs(self, tdir: Path, d: Dataset) -> None:
        existing = tdir
        while not existing.exists():
            existing = existing.parent
        m = mount_for(os.path.realpath(existing), self.mounts)
        if m is None or m.source != d.pool or m.fstype != "btrfs":
            raise StorageError(f"the snapshot folder {tdir} is not on the same Btrfs filesystem as {d.name}")

    @staticmethod
    def _write_tags(tdir: Path, tags: SnapshotTags) -> None:
        f = tdir / TAGS_FILE
        if f.exists():
            return
        data = {
            "composeguard": 1,
            "txn": tags.txn,
            "project": tags.project,
            "services": list(tags.services),
            "old_digests": tags.old_digests,
            "new_digests": tags.new_digests,
        }
        write_atomic(f, json.dumps(data, indent=2) + "\n")  # O_EXCL|O_NOFOLLOW temp file

    # -- restore ---------------------------------------------------------------------------
    def restore(self, snapshot: Snapshot, txn: str) -> str:
        """Swap a writable copy of ``snapshot`` in for the live subvolume. The folder holding
        the live subvolume may be writable by others (a shared docker folder): the copy is
        made, checked, swapped and moved through descriptors of that folder, and a name in
        the way that is not composeguard's own copy is refused, never deleted."""
        d = snapshot.dataset
        self._ensure(d.name)
        live = Path(d.name)
        txn_dir = Path(snapshot.name).parents[len(Path(self._rel(d)).parts)]  # .../<txn>
        failed = txn_dir / "failed" / self._rel(d)
        sname = f".{live.name}.composeguard-restore-{txn}"
        staging = live.parent / sname
        pre_uuid = subvolume_info(snapshot.name)["UUID"]
        pfd = safedir.open_dir(str(live.parent))
        try:
            here = f"/proc/{os.getpid()}/fd/{pfd}"  # the folder we hold, whatever it is called now

            def copy_of_pre(name: str) -> bool:
                st = safedir.entry(pfd, name)
                return (
                    st is not None
                    and stat.S_ISDIR(st.st_mode)
                    and st.st_ino == SUBVOLUME_ROOT_INO
                    and self._is_copy_of(f"{here}/{name}", pre_uuid)
                )

            live_st = safedir.entry(pfd, live.name)
            if live_st is not None and stat.S_ISLNK(live_st.st_mode):
                raise StorageError(f"{live} is now a symlink; not restoring through it")
            if failed.exists() and copy_of_pre(live.name):
                return str(failed)  # already restored (a re-run after a crash)
            if safedir.entry(pfd, sname) is not None:
                if not copy_of_pre(sname):
                    raise StorageError(
                        f"{staging} is in the way and is not composeguard's copy of {snapshot.name}; "
                        f"move it away, then run `composeguard recover`"
                    )
                if copy_of_pre(live.name):
                    self._keep_failed(pfd, sname, staging, failed, txn_dir)  # swapped; finish the move
                    return str(failed)
                destroy_at(pfd, sname, str(staging))  # a half-made copy: make it again
            snapshot_at(snapshot.name, pfd, sname, str(staging))
            if safedir.entry(pfd, live.name) is not None:
                if not safedir.exchange(pfd, sname, pfd, live.name, str(live)):
                    raise StorageError(f"cannot swap {live} with its restored copy: RENAME_EXCHANGE refused")
                self._keep_failed(pfd, sname, staging, failed, txn_dir)
            else:  # the live subvolume vanished: put the restored copy in its place
                safedir.rename(pfd, sname, pfd, live.name, f"the restored copy to {live}")
        finally:
            os.close(pfd)
        return str(failed)

    @staticmethod
    def _is_copy_of(path: str, uuid: str) -> bool:
        try:
            return subvolume_info(path).get("Parent UUID") == uuid
        except CommandError:
            return False

    def _keep_failed(self, pfd: int, sname: str, staging: Path, failed: Path, txn_dir: Path) -> None:
        _private_dirs(failed.parent, txn_dir.parent.parent)
        ffd = safedir.open_dir(str(failed.parent))
        try:
            safedir.rename(pfd, sname, ffd, failed.name, f"{staging} to {failed}")
        finally:
            os.close(ffd)
        execute.run(["btrfs", "property", "set", "-ts", str(failed), "ro", "true"])

    # -- trial runs ------------------------------------------------------------------------
    def clone(self, snapshots: list[Snapshot], txn: str) -> list[Clone]:
        """A writable snapshot of each read-only one, at ``<txn dir>/trial/<subvolume>`` next to
        its ``pre/`` (the same filesystem: O(1), and in the folder only root can change). Made
        by ioctl through a descriptor of its parent folder, like ``restore()``: the exact name
        is made there or EEXIST, where ``btrfs subvolume snapshot SRC DST`` would make it INSIDE
        whatever folder is at DST. A subvolume already there is returned as it is when it is a
        snapshot of the same read-only one (a re-run after a kill; the ioctl makes a snapshot
        whole or not at all), refused otherwise."""
        out = []
        for snap in snapshots:
            d = snap.dataset
            self._ensure(snap.name)
            tdir = self._txn_dir_of(snap)
            if tdir.name != txn:
                raise StorageError(f"{snap.name} is not a snapshot of the transaction {txn}")
            target = tdir / "trial" / self._rel(d)
            _private_dirs(target.parent, tdir.parent.parent)
            pre_uuid = subvolume_info(snap.name)["UUID"]
            pfd = safedir.open_dir(str(target.parent))
            try:
                st = safedir.entry(pfd, target.name)
                if st is None:
                    snapshot_at(snap.name, pfd, target.name, str(target))
                elif not (
                    stat.S_ISDIR(st.st_mode)
                    and st.st_ino == SUBVOLUME_ROOT_INO
                    and self._is_copy_of(f"/proc/{os.getpid()}/fd/{pfd}/{target.name}", pre_uuid)
                ):
                    raise StorageError(
                        f"{target} is in the way and is not composeguard's clone of {snap.name}"
                    )
            finally:
                os.close(pfd)
            out.append(Clone(d, str(target), str(target)))
        return out

    def keep_clone(self, clone: Clone) -> None:
        """Make the clone read-only (``btrfs property set -ts PATH ro true``)."""
        self._ensure(clone.name)
        if not self._is_subvolume(Path(clone.name)):
            raise StorageError(f"the trial's clone {clone.name} is not a subvolume (any more)")
        try:
            execute.run(["btrfs", "property", "set", "-ts", clone.name, "ro", "true"])
        except CommandError as e:
            raise StorageError(f"cannot make {clone.name} read-only: {last_line(e.stderr)}") from e

    def _txn_dir_of(self, snap: Snapshot) -> Path:
        """``<snapshot folder>/<project>/<txn>`` of a snapshot at ``<txn dir>/pre/<subvolume>``."""
        return Path(snap.name).parents[len(Path(self._rel(snap.dataset)).parts)]

    # -- cleanup ---------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        self._ensure(name)
        return os.path.lexists(name)

    def destroy(self, name: str) -> None:
        self._ensure(name)
        p = Path(name)
        if not p.exists():
            return
        if os.lstat(p).st_ino != SUBVOLUME_ROOT_INO or not stat.S_ISDIR(os.lstat(p).st_mode):
            raise StorageError(f"refusing to delete {name}: it is not a subvolume")
        if not _in_txn_dir(p):
            raise StorageError(
                f"refusing to delete {name}: it is not in a composeguard snapshot folder "
                f"(<folder>/<project>/<txn>/pre|failed|trial/..., next to a {TAGS_FILE})"
            )
        self._delete(name)

    @staticmethod
    def _delete(name: str) -> None:
        try:
            execute.run(["btrfs", "subvolume", "delete", name])
        except CommandError as e:
            if e.returncode and "No such file" in e.stderr:
                return
            raise StorageError(f"cannot delete {name}: {last_line(e.stderr)}") from e


def _in_txn_dir(p: Path) -> bool:
    """Whether ``p`` is where composeguard keeps a subvolume: below ``pre``, ``failed`` or
    ``trial`` of a transaction folder (the one holding the tags file ``snapshot()`` writes)."""
    return any(
        q.name in ("pre", "failed", "trial") and (q.parent / TAGS_FILE).is_file()
        for q in Path(os.path.normpath(p)).parents
    )


def _private_dirs(p: Path, base: Path) -> None:
    """Create ``p`` and its missing parents up from ``base`` 0700: snapshot trees hold data
    whose own folder may have been private. What exists from ``base`` down must be a real
    folder that only root can change: composeguard writes there as root, and a folder another
    user could change would let them redirect it (a symlink, a planted tags file)."""
    for q in _check_private(p, base):
        log.debug("mkdir %s (0700)", q)
        os.mkdir(q, 0o700)


def _check_private(p: Path, base: Path) -> list[Path]:
    """Check the folders from ``base`` down to ``p`` that exist; return the missing ones, top
    first."""
    p, base = Path(os.path.normpath(p)), Path(os.path.normpath(base))
    if p != base and base not in p.parents:
        raise StorageError(f"{p} is not inside the snapshot folder {base}")
    chain = [base, *reversed([q for q in p.parents if base in q.parents]), p] if p != base else [base]
    for i, q in enumerate(chain):
        try:
            st = os.lstat(q)
        except FileNotFoundError:
            return chain[i:]
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise StorageError(
                f"{q} is not a folder only root can change (a symlink, another owner, or writable "
                f"by others); composeguard keeps snapshots only in such a folder"
            )
    return []
