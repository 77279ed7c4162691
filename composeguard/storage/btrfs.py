"""Btrfs: read-only snapshots of subvolumes, restore by an atomic rename-exchange.

Btrfs has no in-place rollback. A restore makes a writable snapshot of the pre-upgrade
snapshot next to the live subvolume and swaps the two names with ``renameat2(RENAME_EXCHANGE)``,
so at every instant the path holds either the failed state or the restored one. The failed
state is then moved next to the pre-upgrade snapshot and made read-only: nothing the new
version wrote is destroyed. Each step checks where it stands first, so a restore interrupted
by a crash can simply be run again.

The rest of the backend: subvolumes by ioctl and the root-only folders (btrfs_subvolume.py), the
directory-level restore's part (btrfs_paths.py) and the trial's clones (btrfs_clone.py).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import urllib.parse
from pathlib import Path

from composeguard import execute
from composeguard.errors import CommandError, ConfigError, StorageError, last_line
from composeguard.settings import parse_size_or_percent
from composeguard.state import write_atomic
from composeguard.storage import safedir
from composeguard.storage.base import Dataset, Snapshot, SnapshotTags, Unprotected
from composeguard.storage.btrfs_clone import BtrfsClones
from composeguard.storage.btrfs_paths import BtrfsPathRestore
from composeguard.storage.btrfs_subvolume import (
    SUBVOLUME_ROOT_INO,
    check_private,
    destroy_at,
    private_dirs,
    readonly_snapshot_at,
    snapshot_at,
    subvolume_info,
)
from composeguard.storage.mounts import Mount, mount_for, read_mounts

log = logging.getLogger("composeguard.btrfs")

TAGS_FILE = "composeguard.json"
TOP_BASE = "/run/composeguard/btrfs"  # top-level mounts of filesystems with subvol= data


class BtrfsBackend(BtrfsPathRestore, BtrfsClones):
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
                private_dirs(Path(top), Path(TOP_BASE).parent)
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
                check_private(self.txn_dir(d, project, "check"), self.snapshot_base(d))
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
            private_dirs(target.parent, self.snapshot_base(d))
            self._write_tags(tdir, tags)
            if not target.exists():
                pfd = safedir.open_dir(str(target.parent))
                try:
                    readonly_snapshot_at(d.name, pfd, target.name)
                finally:
                    os.close(pfd)
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
        private_dirs(failed.parent, txn_dir.parent.parent)
        ffd = safedir.open_dir(str(failed.parent))
        try:
            safedir.rename(pfd, sname, ffd, failed.name, f"{staging} to {failed}")
        finally:
            os.close(ffd)
        execute.run(["btrfs", "property", "set", "-ts", str(failed), "ro", "true"])

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
