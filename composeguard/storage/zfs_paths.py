"""ZFS for the directory-level restore (storage/pathrestore.py): when the whole restore
cannot be used, the child datasets that go with a dataset, how to copy back (block cloning,
proven with a probe file, or a byte copy), and reading a snapshot through ``.zfs/snapshot``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from composeguard import execute
from composeguard.errors import ConfigError, StorageError
from composeguard.storage.base import Dataset, Snapshot
from composeguard.storage.mounts import read_mounts
from composeguard.storage.probecopy import clone_probe, restore_target_dir
from composeguard.storage.usage import is_inside
from composeguard.storage.zfs_tools import (
    HOLD_TAG,
    PREFIX,
    PROP,
    exists,
    get,
    zfs,
)

log = logging.getLogger("composeguard.zfs")


@dataclass(frozen=True)
class Child:
    """A dataset below another one, as ``zfs list -o name,type,mounted,mountpoint,keystatus``
    shows it (a volume says ``-`` for mounted and mountpoint; an unencrypted one for keystatus)."""

    name: str
    type: str
    mounted: str
    mountpoint: str
    keystatus: str


class ZfsPathRestore:
    """A part of ``ZfsBackend`` (storage/zfs.py): it uses its ``kind``, ``mounts``, ``_tree``,
    ``_snapshot`` and ``_hold``."""

    # -- directory-level restore (storage/pathrestore.py) ----------------------------------
    def whole_refused(self, d: Dataset) -> str:
        """Why the clone-promote-rename restore cannot be used: the pool's root dataset has
        no parent to rename in; a child dataset (a filesystem, mounted or not, or a zvol) would
        be carried away with the rename; a ``mountpoint=legacy`` dataset is mounted by fstab,
        which composeguard cannot redo."""
        if "/" not in d.name:
            return "it is the pool's root dataset, which cannot be renamed"
        kids = self._children(d.name)
        volumes = [c.name for c in kids if c.type == "volume"]
        if volumes:
            return f"it has child datasets (the volume {volumes[0]}), which a rename would carry away"
        unmounted = [c.name for c in kids if c.mounted != "yes"]
        if unmounted:
            return f"it has child datasets ({unmounted[0]} is not mounted), which a rename would carry away"
        if kids:
            return "it has child datasets, which a rename would carry away"
        if get(d.name, "mountpoint") == "legacy":
            return "its mountpoint is legacy (mounted by fstab), so a renamed copy would not be mounted"
        if get(d.name, "encryptionroot") == d.name and get(d.name, "keylocation") == "prompt":
            return (
                "it is an encryption root whose key is typed in (keylocation=prompt): the whole "
                "restore's promote unloads the key, which composeguard could not load again"
            )
        return ""

    def _children(self, name: str) -> list[Child]:
        """Every dataset below ``name`` (filesystems and volumes), cached per run."""
        if name not in self._tree:
            out = zfs(
                "list",
                "-H",
                "-r",
                "-t",
                "filesystem,volume",
                "-o",
                "name,type,mounted,mountpoint,keystatus",
                name,
            )
            rows = [Child(*line.split("\t")) for line in out.splitlines() if line.strip()]
            self._tree[name] = [c for c in rows if c.name != name]
        return self._tree[name]

    def descendants(self, d: Dataset, inside: list[str]) -> list[Dataset]:
        """The datasets below ``d`` that are mounted inside ``inside`` (the unit's real volume
        paths in ``d``): the unit's files include theirs, so they are snapshotted with it (in
        the same atomic lzc_snapshot) and restored each on its own. Nothing else: on a host
        using Docker's zfs storage driver the data-root dataset has one child per image layer
        and container, and a hold on their snapshots would stop ``docker rm``/prune.

        Where a child is mounted is read from the mount table: Docker's layers (and fstab
        mounts) say ``legacy`` in the property. A child whose mountpoint lies inside a unit
        path but which is not mounted because its encryption key is not loaded is refused: once
        the key is loaded it would cover the unit's folder with data nobody snapshotted."""
        paths = [os.path.realpath(p) for p in inside]
        out: list[Dataset] = []
        for m in self.mounts:
            n = m.source
            if m.fstype != "zfs" or "@" in n or not n.startswith(d.name + "/") or PREFIX in n:
                continue
            if any(is_inside(m.mountpoint, p) for p in paths) and all(x.name != n for x in out):
                out.append(Dataset(self.kind, n, d.pool, m.mountpoint))
        mounted = {x.name for x in out}
        for c in self._children(d.name):
            if c.type != "filesystem" or c.name in mounted or c.keystatus != "unavailable":
                continue
            within = [p for p in paths if c.mountpoint.startswith("/") and is_inside(c.mountpoint, p)]
            if within:
                raise ConfigError(
                    f"the ZFS dataset {c.name} belongs at {c.mountpoint}, inside the volume path "
                    f"{within[0]}, but is not mounted: its encryption key is not loaded, so composeguard "
                    f"could not restore it (run zfs load-key {c.name} && zfs mount {c.name}, or move it "
                    f"out of the volume)"
                )
        return out

    def nested(self, d: Dataset) -> list[str]:
        """ZFS child datasets are mounts; the mount check covers them."""
        return []

    def copy_method(self, d: Dataset) -> str:
        """``clone`` when copy_file_range can clone blocks from the snapshot (the pool has the
        block_cloning feature and the module enables it: OpenZFS >= 2.3 by default, 2.2.x
        ships it off, 2.1 has none), else ``copy``: a byte copy."""
        try:
            with open("/sys/module/zfs/parameters/zfs_bclone_enabled", encoding="ascii") as f:
                enabled = f.read().strip() == "1"
        except OSError:
            enabled = False
        if not enabled:
            return "copy"
        feature = ["zpool", "get", "-H", "-o", "value", "feature@block_cloning", d.pool]
        proc = execute.run(feature, check=False)
        return "clone" if proc.returncode == 0 and proc.stdout.strip() in ("enabled", "active") else "copy"

    def prove_copy(self, d: Dataset, paths: list[str], method: str) -> tuple[str, str]:
        """(method to use, how it was proven or why it fell back). ``copy_method`` reads the
        module parameter and the pool feature, which do not prove that cloning works on this
        dataset (an encrypted dataset, a module or kernel that falls back): block-clone a
        probe file with FICLONE where the restore will write. OpenZFS >= 2.2 fails FICLONE
        instead of copying when it cannot clone, so a failure means "copy", and preflight's
        free-space check for a byte copy then applies."""
        if method != "clone":
            return method, "no block cloning on this pool/module: a byte copy" if method == "copy" else ""
        where = restore_target_dir(os.path.realpath(paths[0]) if paths else d.files_at, d.files_at)
        # blocks of the open transaction group cannot be cloned (EAGAIN on 2.2): sync first, so
        # that only a real inability to clone fails the probe
        sync = ["zpool", "sync", d.pool]
        why = clone_probe(where, where, before_clone=lambda: execute.run(sync, check=False))
        if why:
            log.info("block cloning failed in %s (%s): the restore will copy", where, why)
            return "copy", f"block cloning failed here ({why}): a byte copy"
        return "clone", f"proved: block-cloned a probe file from {d.name} to {where}"

    def free_bytes(self, d: Dataset) -> int:
        return int(get(d.name, "available"))

    def snapshot_path(self, snapshot: Snapshot, path: str) -> str:
        snap = snapshot.name.split("@", 1)[1]
        rel = os.path.relpath(path, snapshot.dataset.mountpoint)
        root = os.path.join(snapshot.dataset.mountpoint, ".zfs", "snapshot", snap)
        # .zfs/snapshot/<name> is an automount point: stat and lstat do not mount it (Linux >=
        # 4.14), opening it does. Mount it now, so that what the copy lstat()s and then opens
        # is the same directory (the snapshot's root), not the stub and then the mount.
        try:
            os.listdir(root)
        except OSError as e:
            raise StorageError(f"cannot read the snapshot {snapshot.name} at {root}: {e.strerror}") from e
        return os.path.normpath(os.path.join(root, rel))

    def snapshot_failed(self, d: Dataset, project: str, txn: str) -> tuple[str, str]:
        """The failed state of a shared dataset: ``<dataset>@composeguard-failed-<txn>``, tagged
        and held like the pre-upgrade snapshot, read at ``.zfs/snapshot``."""
        snap = f"{PREFIX}failed-{txn}"
        name = f"{d.name}@{snap}"
        if not exists(name):
            self._snapshot([name], {f"{PROP}txn": txn, f"{PROP}project": project, f"{PROP}kind": "failed"})
            self._hold({name: HOLD_TAG})
        return name, os.path.join(d.mountpoint, ".zfs", "snapshot", snap)

    def done_reading(self, snapshot: Snapshot) -> None:
        """Reading through .zfs/snapshot automounted the snapshot: unmount it (a mounted
        snapshot cannot be destroyed by the retention rule)."""
        for m in read_mounts():
            if m.fstype == "zfs" and m.source == snapshot.name:
                execute.run(["umount", m.mountpoint], check=False)
