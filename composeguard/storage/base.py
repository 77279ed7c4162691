"""The interface every storage backend implements, and the objects they exchange."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Dataset:
    """A snapshot-able unit of storage: a ZFS dataset or a Btrfs subvolume."""

    backend: str  # "btrfs" | "zfs"
    name: str  # zfs: dataset name; btrfs: the subvolume's absolute path
    pool: str  # zfs: pool name; btrfs: the mount source (one filesystem)
    mountpoint: str  # where the filesystem that holds it is mounted
    # Where its files are seen, when that is not ``name`` (btrfs) or ``mountpoint`` (zfs): a
    # Btrfs subvolume mounted with subvol= is reached through a top-level mount (``name``)
    # but its files are seen at its own mount point (``root``).
    root: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Dataset:
        return cls(**{k: d[k] for k in ("backend", "name", "pool", "mountpoint")}, root=d.get("root") or "")

    @property
    def files_at(self) -> str:
        """The directory the dataset's files are seen at."""
        return self.root or (self.name if self.backend == "btrfs" else self.mountpoint)


@dataclass
class Snapshot:
    dataset: Dataset
    name: str  # zfs: pool/fs@snap; btrfs: absolute path of the read-only snapshot
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset.to_json(), "name": self.name, "extra": self.extra}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Snapshot:
        return cls(Dataset.from_json(d["dataset"]), d["name"], dict(d.get("extra") or {}))


@dataclass
class Clone:
    """A writable O(1) copy of a snapshot, for a trial run (transaction journal field)."""

    dataset: Dataset  # the live dataset it is a copy of
    name: str  # zfs: the clone's dataset name; btrfs: absolute path of the writable snapshot
    files_at: str  # where its files are seen: the directory a container binds

    def to_json(self) -> dict[str, Any]:
        return {"dataset": self.dataset.to_json(), "name": self.name, "files_at": self.files_at}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Clone:
        return cls(Dataset.from_json(d["dataset"]), d["name"], d["files_at"])


@dataclass(frozen=True)
class SnapshotTags:
    """What composeguard writes on its snapshots so that it only ever touches its own."""

    txn: str
    project: str
    services: tuple[str, ...]
    old_digests: dict[str, str]
    new_digests: dict[str, str]


class Unprotected(Exception):
    """The path is not on storage this backend can snapshot; ``str(e)`` says why."""


class Backend(Protocol):
    kind: str

    def dataset_for(self, path: str) -> Dataset:
        """The dataset holding the real path ``path``; raises :class:`Unprotected`."""

    def check_location(self, datasets: list[Dataset], project: str) -> None:
        """Raise ConfigError when the snapshots could not be stored where they would go."""

    def check_free_space(self, datasets: list[Dataset], min_free: str) -> None:
        """Raise StorageError when a pool is too full to snapshot safely."""

    def snapshot(self, datasets: list[Dataset], tags: SnapshotTags, on_each: Any = None) -> list[Snapshot]:
        """Snapshot ``datasets`` (atomically per pool where the storage can)."""

    def find_snapshot(self, dataset: Dataset, project: str, txn: str) -> Snapshot | None:
        """The snapshot transaction ``txn`` made of ``dataset``, if it exists. Used by recover:
        a kill between making a snapshot and journaling it must not leave it behind."""

    def restore(self, snapshot: Snapshot, txn: str) -> str:
        """Put the dataset back to ``snapshot``; keep and return the name of the failed state."""

    # -- what decides between a whole and a directory-level restore (storage/usage.py) ------
    def nested(self, dataset: Dataset) -> list[str]:
        """Paths of storage nested in ``dataset`` that its snapshot leaves out."""

    def descendants(self, dataset: Dataset, inside: list[str]) -> list[Dataset]:
        """Datasets inside ``dataset`` to snapshot with it: ZFS children mounted inside
        ``inside`` (the unit's real volume paths in ``dataset``)."""

    def whole_refused(self, dataset: Dataset) -> str:
        """Why ``dataset`` cannot be restored whole ("" when it can)."""

    def copy_method(self, dataset: Dataset) -> str:
        """How a directory-level restore copies from a snapshot: reflink | clone | copy."""

    def prove_copy(self, dataset: Dataset, paths: list[str], method: str) -> tuple[str, str]:
        """Try ``method`` (from copy_method) between the exact directories a directory-level
        restore of ``paths`` would read and write (``storage/probecopy.py``): (the method to
        use, how it was proven or why it fell back to a byte copy)."""

    def free_bytes(self, dataset: Dataset) -> int:
        """Bytes free for a directory-level restore's copy."""

    # -- trial runs: writable copies of the snapshots ---------------------------------------
    def clone(self, snapshots: list[Snapshot], txn: str) -> list[Clone]:
        """A writable copy of each of ``snapshots`` (one backend's group, as ``snapshot()``
        returned them for the trial's own transaction ``txn``), made in O(1) whatever the size
        (ZFS clones, Btrfs writable snapshots). Idempotent: a clone already there from an
        earlier run of the same ``txn`` (a re-run after a kill) is returned as it is, never made
        twice; something else in its place is refused. Returned parents first (a ZFS child
        dataset's clone is made inside its parent's clone). Each clone is destroyed with
        ``destroy(clone.name)``: children first (reverse order of this list), or only the
        top-level ones, which take their nested clones with them."""

    def keep_clone(self, clone: Clone) -> None:
        """Make ``clone`` read-only: it is kept as the failed state of a trial that failed.
        Idempotent."""

    # -- directory-level restore (storage/pathrestore.py) ----------------------------------
    def snapshot_path(self, snapshot: Snapshot, path: str) -> str:
        """Where the live ``path`` is readable inside ``snapshot``."""

    def snapshot_failed(self, dataset: Dataset, project: str, txn: str) -> tuple[str, str]:
        """Keep the current (failed) state of ``dataset`` as a snapshot: (name, files at)."""

    def done_reading(self, snapshot: Snapshot) -> None:
        """Release what reading ``snapshot`` needed."""

    def destroy(self, name: str) -> None:
        """Destroy a snapshot, kept failed state or trial clone that composeguard made (a clone
        by its ``Clone.name``). Idempotent: gone is done. Refuses anything composeguard did not
        make."""

    def exists(self, name: str) -> bool:
        """Whether a snapshot or kept state still exists."""


def by_backend(datasets: list[Dataset]) -> dict[str, list[Dataset]]:
    """The datasets grouped by backend kind ("btrfs", "zfs"), kinds in a fixed order."""
    out: dict[str, list[Dataset]] = {}
    for d in sorted(datasets, key=lambda d: d.backend):
        out.setdefault(d.backend, []).append(d)
    return out
