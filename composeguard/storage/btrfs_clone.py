"""Btrfs for the trial run (upgrade/trial.py): a writable snapshot of each read-only one, next
to it, and keeping a failed trial's clones read-only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from composeguard import execute
from composeguard.errors import CommandError, StorageError, last_line
from composeguard.storage import safedir
from composeguard.storage.base import Clone, Snapshot
from composeguard.storage.btrfs_subvolume import (
    SUBVOLUME_ROOT_INO,
    private_dirs,
    snapshot_at,
    subvolume_info,
)


class BtrfsClones:
    """A part of ``BtrfsBackend`` (storage/btrfs.py): it uses its ``_ensure``, ``_rel``,
    ``_is_copy_of`` and ``_is_subvolume``."""

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
            private_dirs(target.parent, tdir.parent.parent)
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
