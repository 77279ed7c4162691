"""Creating, renaming and deleting inside data folders without being turned against the machine.

The folders next to a volume (``/volume1/docker`` on a Synology, ``/mnt/user/appdata`` on
Unraid) are often writable by other users or by containers that keep running during a
rollback. Anything composeguard does there as root goes through directory file descriptors:

* a folder is opened component by component with ``O_NOFOLLOW`` (:func:`open_dir`), so a
  symlink planted on the way is refused, and a folder renamed away afterwards does not move
  what composeguard works on;
* its own working folders (staging, moved-aside) are made with ``mkdirat`` mode 0700; one that
  already exists is used again only if root owns it and nobody else can enter it, i.e. it can
  only be composeguard's own from a run that was killed (:func:`private_dir`);
* names are renamed, swapped (``renameat2``) and deleted relative to those descriptors, and
  deletion never follows a symlink (``shutil.rmtree`` with ``dir_fd``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
import stat

from composeguard.errors import StorageError

log = logging.getLogger("composeguard.safedir")

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
RENAME_EXCHANGE = 2
_libc = None


def open_dir(path: str) -> int:
    """A descriptor of the directory ``path`` (absolute), reached without following any
    symlink on the way. The caller closes it."""
    if not os.path.isabs(path):
        raise StorageError(f"not an absolute path: {path}")
    fd = os.open("/", DIR_FLAGS)
    try:
        for part in os.path.normpath(path).split("/"):
            if not part:
                continue
            try:
                nfd = os.open(part, DIR_FLAGS, dir_fd=fd)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise StorageError(
                        f"{path}: {part} is a symlink or not a folder; composeguard does not follow "
                        f"links in data paths"
                    ) from e
                raise StorageError(f"cannot open {path}: {e.strerror}") from e
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def entry(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of ``name`` in the directory; None when there is no such entry."""
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return None


def is_private(st: os.stat_result) -> bool:
    """A real directory that only root can enter or change: only root (composeguard) made it."""
    return stat.S_ISDIR(st.st_mode) and st.st_uid == 0 and st.st_mode & 0o077 == 0


def private_dir(parent_fd: int, name: str, where: str) -> int:
    """Open composeguard's own working folder ``name`` in the parent, making it (0700) if it
    does not exist. One that exists but is not private (a symlink, another owner, a mode that
    lets others in) was not made by composeguard: refused, nothing is done with it."""
    try:
        os.mkdir(name, 0o700, dir_fd=parent_fd)
        log.debug("mkdir %s (0700)", where)
    except FileExistsError:
        pass
    st = entry(parent_fd, name)
    if st is None or not is_private(st):
        raise StorageError(
            f"{where} is in the way and was not made by composeguard (a symlink, or not a root-only "
            f"folder); move it away, then run `composeguard recover`"
        )
    fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise StorageError(f"{where} changed while it was opened")
    return fd


def remove_private(parent_fd: int, name: str, where: str) -> None:
    """Delete composeguard's own folder ``name`` (and all in it) without following a link.
    A missing one is a no-op; one that is not private is refused."""
    st = entry(parent_fd, name)
    if st is None:
        return
    if not is_private(st):
        raise StorageError(f"not deleting {where}: it is not a folder composeguard made")
    log.debug("rmtree %s", where)
    try:
        shutil.rmtree(name, dir_fd=parent_fd)
    except OSError as e:
        raise StorageError(f"cannot remove {where}: {e.strerror}") from e


def exchange(fd_a: int, name_a: str, fd_b: int, name_b: str, where: str) -> bool:
    """Swap two names atomically (``renameat2(RENAME_EXCHANGE)``); False when the filesystem
    cannot (OpenZFS before 2.2: the caller renames twice)."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        c_int, c_str = ctypes.c_int, ctypes.c_char_p
        _libc.renameat2.argtypes = [c_int, c_str, c_int, c_str, ctypes.c_uint]
        _libc.renameat2.restype = ctypes.c_int
    log.debug("renameat2(%s, RENAME_EXCHANGE)", where)
    if _libc.renameat2(fd_a, os.fsencode(name_a), fd_b, os.fsencode(name_b), RENAME_EXCHANGE) == 0:
        return True
    e = ctypes.get_errno()
    if e in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise StorageError(f"cannot swap {where} with its restored copy: {os.strerror(e)}")


def rename(fd_a: int, name_a: str, fd_b: int, name_b: str, where: str) -> None:
    log.debug("renameat %s", where)
    try:
        os.rename(name_a, name_b, src_dir_fd=fd_a, dst_dir_fd=fd_b)
    except OSError as e:
        raise StorageError(f"cannot move {where}: {e.strerror}") from e
