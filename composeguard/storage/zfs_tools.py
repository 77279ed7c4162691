"""The ``zfs`` command and what composeguard reads and names with it: properties, existence
(libzfs_core first), the names of its snapshots, restores and failed states, what those hold
in a pool, and the encryption key a promote leaves unloaded (``load_key``)."""

from __future__ import annotations

from composeguard import execute
from composeguard.errors import CommandError, StorageError, last_line
from composeguard.storage.libzfs_core import ZfsUnavailable, library

PREFIX = "composeguard-"
HOLD_TAG = "composeguard"
PROP = "composeguard:"  # user-property namespace
# Properties a clone cannot take or that composeguard sets itself. A clone of an encrypted
# snapshot shares its origin's key: ZFS refuses any encryption property on it ("Encryption
# properties must inherit from origin dataset"); promote moves the encryption root (and its
# keylocation) to the clone when the origin was one (see ZfsBackend.restore).
ENCRYPTION_PROPS = {"encryption", "keyformat", "keylocation", "pbkdf2iters", "pbkdf2salt", "encryptionroot"}
NOT_COPIED = {"canmount", "origin"} | ENCRYPTION_PROPS


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


def own_mountpoint(failed: str, txn: str) -> None:
    """The failed dataset keeps a mountpoint set on the live one: give it one of its own, so that
    `zfs mount` (to look at it) can never mount it over the live path."""
    if zfs("get", "-H", "-o", "source", "mountpoint", failed).strip() != "local":
        return  # inherited: the rename gave it a path of its own (<parent's>/<new name>)
    mp, own = get(failed, "mountpoint"), f".{PREFIX}failed-{txn}"
    if mp not in ("none", "legacy") and not mp.endswith(own):
        zfs("set", f"mountpoint={mp.rstrip('/')}{own}", failed)


def load_key(name: str) -> None:
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


def snapshot_name(dataset: str, txn: str) -> str:
    return f"{dataset}@{PREFIX}{txn}"


def failed_name(dataset: str, txn: str) -> str:
    return f"{dataset}.{PREFIX}failed-{txn}"


def staging_name(dataset: str, txn: str) -> str:
    return f"{dataset}.{PREFIX}restore-{txn}"
