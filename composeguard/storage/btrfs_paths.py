"""Btrfs for the directory-level restore (storage/pathrestore.py): copy back by reflink,
proven with a probe file, read the snapshot as a folder, keep the failed state read-only."""

from __future__ import annotations

import os

from composeguard import execute
from composeguard.errors import CommandError, StorageError, last_line
from composeguard.storage.base import Dataset, Snapshot
from composeguard.storage.btrfs_subvolume import (
    private_dirs,
)
from composeguard.storage.probecopy import OLD_KERNEL, clone_probe, restore_target_dir


class BtrfsPathRestore:
    """A part of ``BtrfsBackend`` (storage/btrfs.py): it uses its ``_ensure``, ``snapshot_base``,
    ``txn_dir``, ``_rel`` and ``_is_subvolume``."""

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
            private_dirs(target.parent, self.snapshot_base(d))
            try:
                execute.run(["btrfs", "subvolume", "snapshot", "-r", d.name, str(target)])
            except CommandError as e:
                raise StorageError(
                    f"cannot snapshot the failed state of {d.name}: {last_line(e.stderr)}"
                ) from e
        return str(target), str(target)

    def done_reading(self, snapshot: Snapshot) -> None:
        """Nothing to release: a Btrfs snapshot is a directory."""
