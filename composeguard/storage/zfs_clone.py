"""ZFS for the trial run (upgrade/trial.py): a mounted, writable ``zfs clone`` of each
snapshot, in the live tree's shape, and keeping a failed trial's clones read-only."""

from __future__ import annotations

import logging
import os
import stat

from composeguard.errors import StorageError
from composeguard.storage.base import Clone, Snapshot
from composeguard.storage.usage import is_inside
from composeguard.storage.zfs_tools import (
    NOT_COPIED,
    exists,
    failed_name,
    get,
    load_key,
    snapshot_name,
    zfs,
)

log = logging.getLogger("composeguard.zfs")

# A trial's clone gets its own mountpoint (below TRIAL_BASE) and must be writable; it is not
# shared over NFS/SMB under the live dataset's export settings either.
NOT_COPIED_TO_CLONE = NOT_COPIED | {"mountpoint", "readonly", "sharenfs", "sharesmb", "com.sun:auto-snapshot"}
TRIAL_BASE = "/run/composeguard/trial"


def _private_run_dir(path: str) -> None:
    """Make ``path`` (below /run/composeguard) and its missing parents 0700; what exists must be
    a real folder only root can change (the clones are mounted there as root)."""
    base = os.path.dirname(TRIAL_BASE)
    rel = os.path.relpath(path, base)
    if rel.startswith(".."):
        raise StorageError(f"{path} is not below {base}")
    q = base
    for part in [".", *rel.split("/")]:
        q = os.path.normpath(os.path.join(q, part))
        try:
            st = os.lstat(q)
        except FileNotFoundError:
            log.debug("mkdir %s (0700)", q)
            os.mkdir(q, 0o700)
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise StorageError(
                f"{q} is not a folder only root can change; composeguard mounts trial clones there"
            )


class ZfsClones:
    """A part of ``ZfsBackend`` (storage/zfs.py)."""

    # -- trial runs ------------------------------------------------------------------------
    def clone(self, snapshots: list[Snapshot], txn: str) -> list[Clone]:
        """A ``zfs clone`` of each snapshot, mounted. A dataset whose parent is in the group is
        cloned inside its parent's clone (``<parent clone>/<name>``), so the clones mirror the
        live tree; any other is ``<dataset>.composeguard-failed-<txn>`` (the pool's root
        dataset: ``<pool>/<pool>.composeguard-failed-<txn>``), mounted at
        ``/run/composeguard/trial/<txn>/<dataset>`` (also for a legacy/none mountpoint). A
        dataset mounted inside another of the group at another place than its name gives (a
        local mountpoint, or a grandchild whose parent is not in the group) gets an explicit
        mountpoint at the same place inside that one's clone. The clones take the live
        dataset's local properties (as at the snapshot) except NOT_COPIED_TO_CLONE; a clone of
        an encrypted snapshot shares its key (loaded: the live dataset is mounted). A clone
        already there (a re-run) is used as it is when it is a clone of the snapshot; anything
        else at its name is refused."""
        group = sorted(snapshots, key=lambda s: s.dataset.name.count("/"))  # parents first
        live = {s.dataset.name: s.dataset for s in group}
        made: dict[str, Clone] = {}  # live dataset name -> its clone
        out: list[Clone] = []
        for snap in group:
            d = snap.dataset
            if snap.name != snapshot_name(d.name, txn):
                raise StorageError(f"{snap.name} is not the snapshot of {d.name} of the transaction {txn}")
            parent = d.name.rsplit("/", 1)[0]
            # the nearest dataset of the group this one is mounted inside (by the live mounts)
            holder = next(
                (
                    a
                    for a in sorted(made, key=lambda a: len(live[a].mountpoint), reverse=True)
                    if is_inside(d.mountpoint, live[a].mountpoint)
                ),
                None,
            )
            if parent in made:
                name = f"{made[parent].name}/{d.name.rsplit('/', 1)[1]}"
                mountpoint = os.path.join(made[parent].files_at, d.name.rsplit("/", 1)[1])  # inherited
            else:  # the pool's root dataset has no parent to clone next to: clone it into itself
                name = failed_name(d.name if "/" in d.name else f"{d.name}/{d.name}", txn)
                mountpoint = os.path.join(TRIAL_BASE, txn, d.name)
            if holder is not None:
                mountpoint = os.path.join(
                    made[holder].files_at, os.path.relpath(d.mountpoint, live[holder].mountpoint)
                )
            if exists(name):
                origin = get(name, "origin")
                if origin != snap.name:
                    raise StorageError(
                        f"{name} is in the way and is not composeguard's clone of {snap.name} "
                        f"(its origin is {origin})"
                    )
            else:
                local = dict(snap.extra.get("local_properties") or {})
                opts = [
                    a
                    for k, v in sorted(local.items())
                    if k not in NOT_COPIED_TO_CLONE
                    for a in ("-o", f"{k}={v}")
                ]
                inherit = parent in made and mountpoint == os.path.join(
                    made[parent].files_at, d.name.rsplit("/", 1)[1]
                )
                if not inherit:
                    opts += ["-o", f"mountpoint={mountpoint}"]
                if parent not in made:
                    _private_run_dir(os.path.join(TRIAL_BASE, txn))
                # zfs-auto-snapshot would snapshot a trial's clone while it is probed
                opts += ["-o", "com.sun:auto-snapshot=false"]
                zfs("clone", "-o", "canmount=on", *opts, snap.name, name)
            load_key(name)
            if get(name, "mounted") != "yes":
                zfs("mount", name)
            c = Clone(d, name, get(name, "mountpoint"))
            made[d.name] = c
            out.append(c)
        return out

    def keep_clone(self, clone: Clone) -> None:
        """``zfs set readonly=on`` (its nested clones inherit it)."""
        if not exists(clone.name):
            raise StorageError(f"the trial's clone {clone.name} no longer exists")
        if get(clone.name, "readonly") != "on":
            zfs("set", "readonly=on", clone.name)
