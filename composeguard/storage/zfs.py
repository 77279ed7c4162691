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
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass

from composeguard import execute
from composeguard.errors import CommandError, ConfigError, StorageError, last_line
from composeguard.settings import parse_size_or_percent
from composeguard.storage.base import Clone, Dataset, Snapshot, SnapshotTags, Unprotected
from composeguard.storage.libzfs_core import ZfsUnavailable, library
from composeguard.storage.mounts import Mount, mount_for, read_mounts
from composeguard.storage.probecopy import clone_probe, restore_target_dir
from composeguard.storage.usage import is_inside

log = logging.getLogger("composeguard.zfs")

PREFIX = "composeguard-"
HOLD_TAG = "composeguard"
PROP = "composeguard:"  # user-property namespace
# Properties a clone cannot take or that composeguard sets itself. A clone of an encrypted
# snapshot shares its origin's key: ZFS refuses any encryption property on it ("Encryption
# properties must inherit from origin dataset"); promote moves the encryption root (and its
# keylocation) to the clone when the origin was one (see ZfsBackend.restore).
ENCRYPTION_PROPS = {"encryption", "keyformat", "keylocation", "pbkdf2iters", "pbkdf2salt", "encryptionroot"}
NOT_COPIED = {"canmount", "origin"} | ENCRYPTION_PROPS
# A trial's clone gets its own mountpoint (below TRIAL_BASE) and must be writable; it is not
# shared over NFS/SMB under the live dataset's export settings either.
NOT_COPIED_TO_CLONE = NOT_COPIED | {"mountpoint", "readonly", "sharenfs", "sharesmb", "com.sun:auto-snapshot"}
TRIAL_BASE = "/run/composeguard/trial"


def zfs(*args: str, check: bool = True) -> str:
    try:
        return execute.run(["zfs", *args], check=check).stdout or ""
    except CommandError as e:
        raise StorageError(f"zfs {args[0]} failed: {last_line(e.stderr)}") from e


def get(dataset: str, prop: str) -> str:
    return zfs("get", "-H", "-p", "-o", "value", prop, dataset).strip()


def exists(name: str) -> bool:
    try:
        return library().exists(name)
    except ZfsUnavailable:
        return execute.run(["zfs", "list", "-H", "-o", "name", name], check=False).returncode == 0


def local_properties(dataset: str) -> dict[str, str]:
    out = zfs("get", "-H", "-p", "-s", "local", "-o", "property,value", "all", dataset)
    props = {}
    for line in out.splitlines():
        k, _, v = line.partition("\t")
        if k:
            props[k] = v
    return props


def _own_mountpoint(failed: str, txn: str) -> None:
    """The failed dataset keeps a mountpoint set on the live one: give it one of its own, so that
    `zfs mount` (to look at it) can never mount it over the live path."""
    if zfs("get", "-H", "-o", "source", "mountpoint", failed).strip() != "local":
        return  # inherited: the rename gave it a path of its own (<parent's>/<new name>)
    mp, own = get(failed, "mountpoint"), f".{PREFIX}failed-{txn}"
    if mp not in ("none", "legacy") and not mp.endswith(own):
        zfs("set", f"mountpoint={mp.rstrip('/')}{own}", failed)


def _load_key(name: str) -> None:
    """Promoting the clone of an encryption root makes the clone the encryption root (it takes
    the keylocation along, the origin inherits from it), and leaves the key UNLOADED for both
    (seen on OpenZFS 2.1.11: keystatus unavailable, the renamed clone not mountable). Load it
    again from its keylocation; whole_refused keeps ``keylocation=prompt`` away from here."""
    if get(name, "keystatus") != "unavailable":
        return  # "available", or "-": not encrypted
    root = get(name, "encryptionroot")
    if get(root, "keylocation") == "prompt":
        raise StorageError(
            f"the encryption key of {root} is not loaded and is typed in (keylocation=prompt): "
            f"run zfs load-key {root}, then composeguard recover"
        )
    zfs("load-key", root)


def kept_by_composeguard(pool: str) -> str:
    """What composeguard's own kept snapshots and failed datasets hold in ``pool``, for the
    free-space refusal: the space a lower ``retention``/``keep_rollbacks`` would give back."""
    out = zfs("list", "-H", "-p", "-r", "-t", "all", "-o", "name,used", pool, check=False)
    held, count = 0, 0
    for line in out.splitlines():
        name, _, used = line.partition("\t")
        ours = f"@{PREFIX}" in name if "@" in name else f".{PREFIX}failed-" in name.rsplit("/", 1)[-1]
        if ours:
            held, count = held + int(used or 0), count + 1
    if not count:
        return ""
    return (
        f"; composeguard's kept snapshots and failed states hold {held >> 20} MiB of it ({count}): "
        f"lower retention / keep_rollbacks to keep fewer"
    )


def is_own_snapshot(name: str) -> bool:
    """``name`` is a snapshot named by composeguard (``…@composeguard-…``)."""
    return "@" in name and name.split("@", 1)[1].startswith(PREFIX)


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


def snapshot_name(dataset: str, txn: str) -> str:
    return f"{dataset}@{PREFIX}{txn}"


def failed_name(dataset: str, txn: str) -> str:
    return f"{dataset}.{PREFIX}failed-{txn}"


def staging_name(dataset: str, txn: str) -> str:
    return f"{dataset}.{PREFIX}restore-{txn}"


@dataclass(frozen=True)
class Child:
    """A dataset below another one, as ``zfs list -o name,type,mounted,mountpoint,keystatus``
    shows it (a volume says ``-`` for mounted and mountpoint; an unencrypted one for keystatus)."""

    name: str
    type: str
    mounted: str
    mountpoint: str
    keystatus: str


class ZfsBackend:
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
            _load_key(staging)
            if exists(live):
                zfs("set", "canmount=noauto", live)
                if get(live, "mounted") == "yes":
                    zfs("unmount", live)
                zfs("rename", live, failed)
        if exists(staging) and not exists(live):
            zfs("rename", staging, live)
        # canmount cannot be inherited: put back the local value, or the default "on".
        zfs("set", f"canmount={local.get('canmount', 'on')}", live)
        _load_key(live)
        if (
            get(live, "mounted") != "yes"
            and get(live, "canmount") != "off"
            and get(live, "mountpoint") not in ("none", "legacy")
        ):
            zfs("mount", live)
        if exists(failed):
            _own_mountpoint(failed, txn)
        if exists(failed) and get(failed, "readonly") != "on":
            zfs("set", "readonly=on", failed)
        return failed

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
            _load_key(name)
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
