"""ZFS: one atomic snapshot per pool through libzfs_core, and a rollback that destroys nothing.

Snapshots: ``<dataset>@composeguard-<txn>``, all datasets of one pool in ONE ``lzc_snapshot``
call (one transaction group), with user properties naming the transaction, project, services
and digests, and a persistent hold so that no pruning tool can destroy them.

Restore: ``zfs rollback`` only reaches the newest snapshot, and getting past a snapshot that
sanoid or zfs-auto-snapshot took during the upgrade means destroying it. Instead:

1. clone the pre-upgrade snapshot next to the dataset (``canmount=noauto``, with the
   dataset's locally set properties: recordsize, compression, mountpoint …);
2. promote the clone: it takes over the snapshots up to and including the pre-upgrade one;
3. unmount the live dataset and rename it to ``<dataset>.composeguard-failed-<txn>``: it keeps
   the failed state and every snapshot taken after the pre-upgrade one;
4. rename the clone to the dataset's name and mount it.

Nothing is destroyed; every step checks where it stands, so an interrupted restore can be
run again. libzfs_core has no clone-with-mount, promote-with-remount or rename-with-remount,
so those steps use the ``zfs`` command, which does the mount bookkeeping.

The rest of the backend: the ``zfs`` command, names and keys (zfs_tools.py), the directory-level
restore's part (zfs_paths.py) and the trial's clones (zfs_clone.py).
"""

from __future__ import annotations

import json
import logging

from composeguard import execute
from composeguard.errors import StorageError, last_line
from composeguard.settings import parse_size_or_percent
from composeguard.storage.base import Dataset, Snapshot, SnapshotTags, Unprotected
from composeguard.storage.libzfs_core import ZfsUnavailable, library
from composeguard.storage.mounts import Mount, mount_for, read_mounts
from composeguard.storage.zfs_clone import ZfsClones
from composeguard.storage.zfs_paths import Child, ZfsPathRestore
from composeguard.storage.zfs_tools import (
    HOLD_TAG,
    NOT_COPIED,
    PREFIX,
    PROP,
    exists,
    failed_name,
    get,
    is_own_snapshot,
    kept_by_composeguard,
    load_key,
    local_properties,
    own_mountpoint,
    snapshot_name,
    staging_name,
    zfs,
)

log = logging.getLogger("composeguard.zfs")


class ZfsBackend(ZfsPathRestore, ZfsClones):
    kind = "zfs"

    def __init__(self, mounts: list[Mount]) -> None:
        self.mounts = mounts
        self._tree: dict[str, list[Child]] = {}

    # -- discovery -------------------------------------------------------------------------
    def dataset_for(self, path: str) -> Dataset:
        m = mount_for(path, self.mounts)
        if m is None or m.fstype != "zfs" or "@" in m.source:
            raise Unprotected(f"{path} is not on a ZFS dataset")
        name = m.source
        listed = execute.run(["zfs", "list", "-H", "-o", "name", name], check=False)
        if listed.returncode != 0:
            raise Unprotected(f"the ZFS dataset {name} cannot be listed: {last_line(listed.stderr)}")
        if m.root not in ("", "/"):
            # a bind mount of a folder of the dataset: its snapshots (.zfs) and its mount point
            # are elsewhere, so neither a whole nor a directory restore could be done here
            raise Unprotected(
                f"{path} reaches the ZFS dataset {name} through a bind mount of its folder {m.root}; "
                f"use the path under the dataset's own mount point"
            )
        return Dataset(backend=self.kind, name=name, pool=name.split("/", 1)[0], mountpoint=m.mountpoint)

    def check_location(self, datasets: list[Dataset], project: str) -> None:
        """ZFS snapshots live inside their dataset: nothing to check."""

    def check_free_space(self, datasets: list[Dataset], min_free: str) -> None:
        kind, amount = parse_size_or_percent(min_free)
        for pool in sorted({d.pool for d in datasets}):
            avail = int(get(pool, "available"))
            used = int(get(pool, "used"))
            need = (avail + used) * amount / 100 if kind == "percent" else amount
            if avail < need:
                raise StorageError(
                    f"the ZFS pool {pool} has only {avail >> 20} MiB available "
                    f"(composeguard wants {min_free} free before snapshotting){kept_by_composeguard(pool)}"
                )

    # -- snapshot --------------------------------------------------------------------------
    def snapshot(self, datasets: list[Dataset], tags: SnapshotTags, on_each=None) -> list[Snapshot]:
        """One atomic snapshot per pool for all of its datasets, held and tagged."""
        props = {
            f"{PROP}txn": tags.txn,
            f"{PROP}project": tags.project,
            f"{PROP}services": ",".join(tags.services),
            f"{PROP}old-digests": json.dumps(tags.old_digests, separators=(",", ":")),
            f"{PROP}new-digests": json.dumps(tags.new_digests, separators=(",", ":")),
        }
        out: list[Snapshot] = []
        for pool in sorted({d.pool for d in datasets}):
            group = [d for d in datasets if d.pool == pool]
            local = {d.name: local_properties(d.name) for d in group}
            names = [snapshot_name(d.name, tags.txn) for d in group]
            todo = [n for n in names if not exists(n)]  # a re-run after a crash
            self._snapshot(todo, props)
            self._hold({n: HOLD_TAG for n in todo})
            for d, n in zip(group, names, strict=True):
                snap = Snapshot(d, n, {"local_properties": local[d.name]})
                out.append(snap)
                if on_each:
                    on_each(snap)
        return out

    def find_snapshot(self, dataset: Dataset, project: str, txn: str) -> Snapshot | None:
        name = snapshot_name(dataset.name, txn)
        if not exists(name) or get(name, f"{PROP}txn") != txn:
            return None
        return Snapshot(dataset, name, {"local_properties": local_properties(dataset.name)})

    @staticmethod
    def _snapshot(names: list[str], props: dict[str, str]) -> None:
        if not names:
            return
        try:
            lib = library()
        except ZfsUnavailable as e:
            if "not installed" not in str(e):
                raise
            args = [a for k, v in props.items() for a in ("-o", f"{k}={v}")]
            zfs("snapshot", *args, *names)  # the CLI's multi-snapshot is one lzc_snapshot too
            return
        lib.snapshot(names, props)

    @staticmethod
    def _hold(holds: dict[str, str]) -> None:
        if not holds:
            return
        try:
            library().hold(holds)
        except ZfsUnavailable:
            for snap, tag in holds.items():
                zfs("hold", tag, snap)

    # -- restore ---------------------------------------------------------------------------
    def restore(self, snapshot: Snapshot, txn: str) -> str:
        live = snapshot.dataset.name
        pre = snapshot.name
        staging = staging_name(live, txn)
        failed = failed_name(live, txn)
        local = dict(snapshot.extra.get("local_properties") or {})

        if not exists(failed):
            if not exists(staging):
                if not exists(pre):
                    raise StorageError(f"the pre-upgrade snapshot {pre} no longer exists")
                opts = [
                    a for k, v in sorted(local.items()) if k not in NOT_COPIED for a in ("-o", f"{k}={v}")
                ]
                zfs("clone", "-o", "canmount=noauto", *opts, pre, staging)
            if get(staging, "origin") == pre:
                zfs("promote", staging)
            load_key(staging)
            if exists(live):
                zfs("set", "canmount=noauto", live)
                if get(live, "mounted") == "yes":
                    zfs("unmount", live)
                zfs("rename", live, failed)
        if exists(staging) and not exists(live):
            zfs("rename", staging, live)
        # canmount cannot be inherited: put back the local value, or the default "on".
        zfs("set", f"canmount={local.get('canmount', 'on')}", live)
        load_key(live)
        if (
            get(live, "mounted") != "yes"
            and get(live, "canmount") != "off"
            and get(live, "mountpoint") not in ("none", "legacy")
        ):
            zfs("mount", live)
        if exists(failed):
            own_mountpoint(failed, txn)
        if exists(failed) and get(failed, "readonly") != "on":
            zfs("set", "readonly=on", failed)
        return failed

    # -- cleanup ---------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return exists(name)

    def destroy(self, name: str) -> None:
        """Release composeguard's hold and destroy one of its own snapshots."""
        if "@" not in name and f".{PREFIX}failed-" in name.rsplit("/", 1)[-1]:
            self._destroy_failed_dataset(name)
            return
        if "@" not in name and any(f".{PREFIX}failed-" in p for p in name.split("/")[1:-1]):
            # a trial's clone of a child dataset, inside its parent's clone
            if exists(name) and not is_own_snapshot(get(name, "origin")):
                raise StorageError(
                    f"refusing to destroy {name}: it is not a clone of a composeguard snapshot"
                )
            self._destroy_failed_dataset(name)
            return
        if "@" not in name or not name.split("@", 1)[1].startswith(PREFIX):
            raise StorageError(f"refusing to destroy {name}: not a composeguard snapshot")
        if not exists(name):
            return
        txn = get(name, f"{PROP}txn")
        if not txn or txn == "-":
            raise StorageError(f"refusing to destroy {name}: it carries no composeguard tag")
        # A snapshot someone looked at through .zfs/snapshot is automounted: unmount it first.
        for m in read_mounts():
            if m.fstype == "zfs" and m.source == name:
                execute.run(["umount", m.mountpoint], check=False)
        try:
            lib = library()
            lib.release({name: [HOLD_TAG]})
            lib.destroy_snaps([name], defer=True)
        except ZfsUnavailable:
            zfs("release", HOLD_TAG, name, check=False)
            zfs("destroy", "-d", name)
        if exists(name):
            # Still there: deferred (busy, e.g. mounted by someone); the zfs command unmounts
            # what it can and destroys, or says why not.
            log.debug("%s was only marked for destruction; trying zfs destroy", name)
            zfs("destroy", name)

    @staticmethod
    def _destroy_failed_dataset(name: str) -> None:
        """Destroy the failed state a whole restore kept, or a trial's clone
        (``<dataset>.composeguard-failed-<txn>``), with the trial's clones nested in it (child
        datasets that are clones of composeguard snapshots): never when it holds a snapshot
        composeguard did not make (an auto-snapshot taken during the upgrade, or of a clone) or
        any other child dataset (or a bookmark)."""
        if not exists(name):
            return
        out = zfs("list", "-H", "-r", "-t", "all", "-o", "name,origin", name)
        rows = [tuple(line.split("\t")) for line in out.splitlines() if line.strip()]
        foreign = [
            r
            for r, origin in rows
            if r != name and not (is_own_snapshot(r) if "@" in r else is_own_snapshot(origin))
        ]
        if foreign:
            raise StorageError(f"refusing to destroy {name}: it holds {foreign[0]}, not made by composeguard")
        for snap in (r for r, _ in rows if "@" in r):
            zfs("release", HOLD_TAG, snap, check=False)
        zfs("destroy", "-r", name)
