"""Btrfs subvolumes made and deleted by ioctl through a descriptor of their folder (never
through a link), ``btrfs subvolume show``, and the root-only folders snapshots are kept in."""

from __future__ import annotations

import fcntl
import logging
import os
import stat
import struct
from pathlib import Path

from composeguard import execute
from composeguard.errors import StorageError
from composeguard.storage import safedir

log = logging.getLogger("composeguard.btrfs")

SUBVOLUME_ROOT_INO = 256  # BTRFS_FIRST_FREE_OBJECTID: the root directory of every subvolume

# linux/btrfs.h: struct btrfs_ioctl_vol_args_v2 (fd, transid, flags, 4 x u64, name[4040]) and
# struct btrfs_ioctl_vol_args (fd, name[4088]) are both 4096 bytes.
BTRFS_IOC_SNAP_CREATE_V2 = 0x50009417  # _IOW(0x94, 23, struct btrfs_ioctl_vol_args_v2)
BTRFS_IOC_SNAP_DESTROY = 0x5000940F  # _IOW(0x94, 15, struct btrfs_ioctl_vol_args)
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E  # _IOW(0x94, 14, struct btrfs_ioctl_vol_args)
BTRFS_SUBVOL_RDONLY = 1 << 1  # btrfs_ioctl_vol_args_v2.flags: a read-only snapshot


def snapshot_at(source: str, dir_fd: int, name: str, where: str) -> None:
    """A writable snapshot of the subvolume ``source`` made as ``name`` in the directory
    ``dir_fd``, by ioctl: the new name is made in that very directory and never through a
    link (EEXIST when anything has the name), unlike ``btrfs subvolume snapshot SRC PATH``,
    which would put the snapshot INSIDE a folder or link planted at PATH."""
    src_fd = safedir.open_dir(source)
    try:
        _snap_create(src_fd, dir_fd, name, 0, f"cannot copy the snapshot {source} to {where}")
    finally:
        os.close(src_fd)


def readonly_snapshot_at(source: str, dir_fd: int, name: str) -> None:
    """``btrfs subvolume snapshot -r SOURCE`` as ``name`` in the directory ``dir_fd``: the
    same ioctl, without a process per snapshot (thirty of them took a second on a busy lab, all
    of it downtime). ``source``, the live subvolume, is opened as the CLI opens it."""
    try:
        src_fd = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise StorageError(f"cannot snapshot {source}: {e.strerror}") from e
    try:
        _snap_create(src_fd, dir_fd, name, BTRFS_SUBVOL_RDONLY, f"cannot snapshot {source}")
    finally:
        os.close(src_fd)


def _snap_create(src_fd: int, dir_fd: int, name: str, flags: int, failing: str) -> None:
    """BTRFS_IOC_SNAP_CREATE_V2: struct btrfs_ioctl_vol_args_v2 (fd, transid, flags, …, name at 56)."""
    header = struct.pack("=qQQ", src_fd, 0, flags)
    _name_ioctl(dir_fd, BTRFS_IOC_SNAP_CREATE_V2, header, 56, name, failing)


def _vol_args_ioctl(dir_fd: int, request: int, name: str, failing: str) -> None:
    """An ioctl taking struct btrfs_ioctl_vol_args (fd, then the name of an entry of ``dir_fd``)."""
    _name_ioctl(dir_fd, request, b"", 8, name, failing)


def _name_ioctl(dir_fd: int, request: int, header: bytes, name_at: int, name: str, failing: str) -> None:
    """An ioctl on ``dir_fd`` whose 4096-byte argument is ``header``, then ``name`` at ``name_at``
    (NUL-terminated, one entry of that directory)."""
    bname = os.fsencode(name)
    if not bname or b"/" in bname or len(bname) > 4095 - name_at:
        raise StorageError(f"{failing}: bad name")
    args = bytearray(4096)
    args[: len(header)] = header
    args[name_at : name_at + len(bname)] = bname
    log.debug("ioctl 0x%x %s (%s)", request, name, failing)
    try:
        fcntl.ioctl(dir_fd, request, args)
    except OSError as e:
        raise StorageError(f"{failing}: {e.strerror}") from e


def destroy_at(dir_fd: int, name: str, where: str) -> None:
    """Delete the subvolume ``name`` of the directory ``dir_fd`` (looked up there, never
    through a link)."""
    _vol_args_ioctl(dir_fd, BTRFS_IOC_SNAP_DESTROY, name, f"cannot delete {where}")


def create_at(dir_fd: int, name: str, where: str) -> None:
    """Create the empty subvolume ``name`` in the directory ``dir_fd`` (EEXIST when anything
    has the name; never through a link)."""
    _vol_args_ioctl(dir_fd, BTRFS_IOC_SUBVOL_CREATE, name, f"cannot create the subvolume {where}")


def subvolume_info(path: str) -> dict[str, str]:
    """Fields of ``btrfs subvolume show`` (UUID, Parent UUID, Subvolume ID, Flags …)."""
    out = execute.run(["btrfs", "subvolume", "show", path]).stdout
    info: dict[str, str] = {}
    for line in out.splitlines()[1:]:
        key, sep, value = line.strip().partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def private_dirs(p: Path, base: Path) -> None:
    """Create ``p`` and its missing parents up from ``base`` 0700: snapshot trees hold data
    whose own folder may have been private. What exists from ``base`` down must be a real
    folder that only root can change: composeguard writes there as root, and a folder another
    user could change would let them redirect it (a symlink, a planted tags file)."""
    for q in check_private(p, base):
        log.debug("mkdir %s (0700)", q)
        os.mkdir(q, 0o700)


def check_private(p: Path, base: Path) -> list[Path]:
    """Check the folders from ``base`` down to ``p`` that exist; return the missing ones, top
    first."""
    p, base = Path(os.path.normpath(p)), Path(os.path.normpath(base))
    if p != base and base not in p.parents:
        raise StorageError(f"{p} is not inside the snapshot folder {base}")
    chain = [base, *reversed([q for q in p.parents if base in q.parents]), p] if p != base else [base]
    for i, q in enumerate(chain):
        try:
            st = os.lstat(q)
        except FileNotFoundError:
            return chain[i:]
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
            raise StorageError(
                f"{q} is not a folder only root can change (a symlink, another owner, or writable "
                f"by others); composeguard keeps snapshots only in such a folder"
            )
    return []
