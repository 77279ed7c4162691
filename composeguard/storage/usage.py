"""Who else keeps data in a dataset: the question that decides how a dataset is restored.

A snapshot covers a whole ZFS dataset or Btrfs subvolume, but on most self-hosted machines one
dataset holds many apps (Synology's ``docker`` share, Unraid's ``appdata`` dataset,
``tank/appdata/<app>`` directories, named volumes inside Docker's data-root on the OS root).
Putting the whole dataset back after app A's failed upgrade would silently throw away what
every other app wrote meanwhile. So for each dataset of the rollback unit:

* **exclusive**: every entry in it belongs to the unit's volumes, no other container (of any
  project, running or stopped) mounts anything in it, and it is neither the OS root nor holds
  Docker's data-root. Restored whole (O(1), the failed state kept as a dataset/subvolume).
* **shared**: anything else. Still snapshotted whole (atomic and cheap), but restored only at
  the unit's volume paths (``storage/pathrestore.py``); nothing else in it is touched.
* **conflict**: another container outside the unit uses the unit's own data (the same path, or
  one inside it), or a mount lies below a path that would be restored. Then no restore can put
  the unit back without touching someone else (or a subvolume is nested in the unit's data:
  a snapshot leaves it out): refused before anything changes.

The checks are pure functions of paths, container mounts and a directory listing, so they are
unit-tested with real temporary directories and made-up container lists.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from composeguard.compose.docker import ContainerUse
from composeguard.storage.base import Dataset
from composeguard.storage.mounts import Mount, paths_overlap

# Names composeguard itself creates inside datasets (snapshot folders, staging and old copies
# of a directory restore); they are never "someone else's data".
RESERVED_ROOT_NAMES = {".composeguard-snapshots", ".zfs"}
OWN_MARKERS = (".composeguard-restore-", ".composeguard-old-", ".composeguard-failed-")
MAX_LISTED = 5  # entries named in a reason; the rest are counted


def is_inside(path: str, root: str) -> bool:
    """``path`` is ``root`` or below it (both absolute, normalised)."""
    root = root.rstrip("/") or "/"
    return path == root or root == "/" or path.startswith(root + "/")


def minimal_paths(paths: Iterable[str]) -> list[str]:
    """The paths that are not inside another one of them, sorted: restoring a directory
    restores everything below it."""
    uniq = sorted({os.path.normpath(p) for p in paths})
    out: list[str] = []
    for p in uniq:
        if not any(is_inside(p, q) for q in out):
            out.append(p)
    return out


def own_name(name: str) -> bool:
    return any(m in name for m in OWN_MARKERS)


def uncovered_entries(root: str, unit_paths: list[str], reserved: Iterable[str] = ()) -> list[str]:
    """Entries of the dataset at ``root`` that no unit path covers. Only the directories on
    the way from ``root`` to a unit path are listed (never the unit's own data), so the cost is
    the size of those directories, not of the dataset."""
    reserved_names = RESERVED_ROOT_NAMES | set(reserved)
    if any(u == root for u in unit_paths):
        return []
    out: list[str] = []

    def walk(d: str) -> None:
        try:
            names = sorted(os.listdir(d))
        except FileNotFoundError:
            return
        for name in names:
            if (d == root and name in reserved_names) or own_name(name):
                continue
            p = os.path.join(d, name)
            if any(is_inside(p, u) for u in unit_paths):
                continue  # a unit path itself
            st = os.lstat(p)
            if stat.S_ISDIR(st.st_mode) and any(u.startswith(p + "/") for u in unit_paths):
                walk(p)  # on the way to a unit path: look inside
            else:
                out.append(p)

    walk(root)
    return out


@dataclass
class DatasetUse:
    """How one dataset of the unit is used, and so how it will be restored."""

    dataset: Dataset
    root: str  # the directory the dataset's files are seen at
    unit_paths: list[str]  # the unit's volume paths in it (none inside another)
    others: list[str] = field(default_factory=list)  # why it is shared ([] = exclusive)
    conflicts: list[str] = field(default_factory=list)  # why no restore is possible
    whole_refused: str = ""  # why the backend cannot restore this dataset whole
    method: str = ""  # directory-level: reflink | clone | copy
    proof: str = ""  # how the method was proven possible here (or why it fell back to copy)
    size: int = 0  # directory-level by copy: bytes to copy

    @property
    def exclusive(self) -> bool:
        return not self.others

    @property
    def restore(self) -> str:
        """``whole`` or ``paths``."""
        return "whole" if self.exclusive and not self.whole_refused else "paths"

    def to_json(self) -> dict:
        return {
            "dataset": self.dataset.name,
            "backend": self.dataset.backend,
            "exclusive": self.exclusive,
            "restore": self.restore,
            "paths": self.unit_paths if self.restore == "paths" else [],
            "method": self.method if self.restore == "paths" else "snapshot",
            "proven": self.proof if self.restore == "paths" else "the snapshot is swapped in whole (no copy)",
            "size": self.size,
            "used_by": self.others,
            "conflicts": self.conflicts,
            "whole_refused": self.whole_refused,
        }


def analyse(
    dataset: Dataset,
    root: str,
    unit_paths: list[str],
    others: list[ContainerUse],
    data_root: str | None,
    mounts: list[Mount],
    reserved: Iterable[str] = (),
    dataset_mounts: Iterable[str] = (),
    nested: Iterable[str] = (),
) -> DatasetUse:
    """Classify one dataset. ``others``: every container outside the rollback unit (any
    project). ``dataset_mounts``: mount points that belong to the unit's own snapshot set (a
    ZFS child dataset), which are restored on their own and so are no conflict."""
    use = DatasetUse(dataset, root, minimal_paths(unit_paths))
    paths = use.unit_paths
    if root == "/":
        use.others.append("it is the OS root")
    if data_root and is_inside(os.path.realpath(data_root), root):
        use.others.append(f"it holds Docker's data-root {data_root}")
    def place(path: str, conflict: Callable[[str], str], other: str) -> None:
        """Inside a unit path: a conflict (told that path); elsewhere: another user of the dataset."""
        inside = [u for u in paths if is_inside(path, u)]
        if inside:
            use.conflicts.append(conflict(inside[0]))
        else:
            use.others.append(other)

    for c in others:
        for _, src in c.sources:
            real = os.path.realpath(src)
            if paths_overlap(real, root):
                who = c.describe()
                place(real, lambda u, real=real, who=who: f"{real} is used by {who} as well, and lies in "
                      f"{u}, which a rollback would put back", f"{who} uses {real}")
    entries = uncovered_entries(root, paths, reserved)
    if entries:
        shown = ", ".join(entries[:MAX_LISTED])
        more = f" and {len(entries) - MAX_LISTED} more" if len(entries) > MAX_LISTED else ""
        use.others.append(f"it holds other entries: {shown}{more}")
    for n in nested:
        place(n, lambda u, n=n: f"the subvolume {n} is nested in {u}: a snapshot leaves it out, so a "
              f"rollback could not put it back", f"it holds the nested subvolume {n}")
    own = set(dataset_mounts)
    for m in mounts:
        if "@" in m.source and m.fstype == "zfs":
            continue  # an automounted snapshot under .zfs/snapshot: read-only, ZFS's own
        for u in paths:
            if m.mountpoint != u and is_inside(m.mountpoint, u) and m.mountpoint not in own:
                use.conflicts.append(
                    f"{m.mountpoint} ({m.fstype}) is mounted below {u}; a restore of {u} would carry it away"
                )
    return use
