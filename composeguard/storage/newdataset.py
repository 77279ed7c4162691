"""Make a ZFS dataset or a Btrfs subvolume at exactly a data path (``provision``), tagged as
composeguard's, and take it away again when a provision is undone.

The tag is what makes the undo safe: only a dataset carrying THIS provision's id is ever
destroyed (ZFS: the user property ``composeguard:provisioned``; Btrfs: the root-only xattr
``trusted.composeguard.provisioned`` on the subvolume's root, invisible to containers).
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat

from composeguard.errors import StorageError
from composeguard.storage import safedir
from composeguard.storage.base import Dataset
from composeguard.storage.btrfs_subvolume import SUBVOLUME_ROOT_INO, create_at, destroy_at
from composeguard.storage.zfs import exists as zfs_exists
from composeguard.storage.zfs import get as zfs_get
from composeguard.storage.zfs import zfs

log = logging.getLogger("composeguard.newdataset")

ZFS_TAG = "composeguard:provisioned"
BTRFS_TAG = "trusted.composeguard.provisioned"
_ZFS_NAME_PART = re.compile(r"[^A-Za-z0-9_.:-]")


def new_name(parent: Dataset, path: str) -> tuple[str, bool]:
    """The name the new dataset gets, and whether it needs its own ``mountpoint`` (a ZFS child
    inherits ``<parent mountpoint>/<name>``: right for a folder directly in the parent, not for
    one deeper down, whose intermediate folders are not datasets). Btrfs: the path itself."""
    if parent.backend == "btrfs":
        return path, False
    rel = os.path.relpath(path, parent.files_at)
    child = _ZFS_NAME_PART.sub("_", rel.replace("/", "_"))
    return f"{parent.name}/{child}", "/" in rel or child != rel


def create(parent: Dataset, path: str, name: str, properties: dict[str, str], txn: str) -> None:
    """Create the dataset ``name`` whose files are at ``path`` (which must not exist), with
    ``properties`` set at creation (a record size applies only to blocks written after it is
    set) and the tag."""
    if parent.backend == "zfs":
        _, own_mountpoint = new_name(parent, path)
        props = {**properties, ZFS_TAG: txn, **({"mountpoint": path} if own_mountpoint else {})}
        args = [a for k, v in props.items() for a in ("-o", f"{k}={v}")]
        zfs("create", *args, name)
        mounted_at = os.path.realpath(zfs_get(name, "mountpoint"))
        if mounted_at != os.path.realpath(path) or not os.path.ismount(path):
            raise StorageError(f"the new dataset {name} is not mounted at {path}")
        return
    parent_dir, base = os.path.split(path)
    dfd = safedir.open_dir(parent_dir)
    try:
        create_at(dfd, base, path)
        fd = os.open(base, safedir.DIR_FLAGS, dir_fd=dfd)
        try:
            os.setxattr(fd, BTRFS_TAG, txn.encode())
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def created_by(parent: Dataset, path: str, name: str, txn: str) -> bool:
    """Whether ``name`` exists and is the one provision ``txn`` made."""
    if parent.backend == "zfs":
        return zfs_exists(name) and zfs_get(name, ZFS_TAG) == txn
    parent_dir, base = os.path.split(path)
    try:
        dfd = safedir.open_dir(parent_dir)
    except StorageError:
        return False
    try:
        st = safedir.entry(dfd, base)
        if st is None or not stat.S_ISDIR(st.st_mode) or st.st_ino != SUBVOLUME_ROOT_INO:
            return False
        fd = os.open(base, safedir.DIR_FLAGS, dir_fd=dfd)
        try:
            return os.getxattr(fd, BTRFS_TAG) == txn.encode()
        except OSError as e:
            if e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                return False
            raise
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def destroy(parent: Dataset, path: str, name: str, txn: str) -> None:
    """Take away the dataset provision ``txn`` made (and whatever was copied into it: the
    original is still beside it). A dataset without the tag is never touched."""
    if not created_by(parent, path, name, txn):
        raise StorageError(f"{name} is not the dataset this provision ({txn}) made; it was left alone")
    if parent.backend == "zfs":
        zfs("destroy", name)
        if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
            os.rmdir(path)  # the empty mount point ZFS leaves behind in the parent
        return
    parent_dir, base = os.path.split(path)
    dfd = safedir.open_dir(parent_dir)
    try:
        destroy_at(dfd, base, path)
    finally:
        os.close(dfd)


def is_root(parent_backend: str, path: str) -> bool:
    """Whether ``path`` is already the root of a dataset or subvolume of its own."""
    st = os.lstat(path)
    if parent_backend == "btrfs":
        return st.st_ino == SUBVOLUME_ROOT_INO
    return os.path.ismount(path)

