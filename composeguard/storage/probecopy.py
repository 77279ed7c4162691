"""Prove, before anything stops, that a directory-level restore can clone its files.

A restore copies from the snapshot (read through one mount) into the live tree (written
through another): on Linux before 5.18 ``FICLONE`` between two mounts of one Btrfs file system
fails with EXDEV (Ubuntu 22.04, Debian 11, openSUSE Leap with ``subvol=`` mounts); on OpenZFS
the module may have block cloning off. Found at 3 a.m. that is an exit 4, so the planner clones
a tiny probe file between the exact pair of directories first and falls back to a byte copy
(checked for free space) when that fails.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Callable

from composeguard.storage.treemeta import FICLONE

log = logging.getLogger("composeguard.probecopy")

PROBE_BYTES = b"composeguard clone probe\n" * 164  # 4100 bytes: more than one 4 KiB block
# The name contains one of usage.py's OWN_MARKERS: a probe left behind by a kill is never
# taken for someone else's data.
PROBE_NAME = ".composeguard-restore-probe-{pid}-{side}"


# What EXDEV means for a Btrfs reflink between two mounts of one filesystem.
OLD_KERNEL = "this kernel cannot clone between these two mounts: Linux before 5.18"


def clone_probe(
    src_dir: str, dst_dir: str, before_clone: Callable[[], object] | None = None, exdev_hint: str = ""
) -> str:
    """Clone a probe file made in ``src_dir`` into ``dst_dir`` with ``FICLONE``; both are
    removed again, and both folders get their times back (a folder of the unit's data must
    look untouched: ``plan`` changes nothing). ``before_clone``: run once the source is
    written and synced (ZFS: ``zpool sync``, as blocks of the open transaction group cannot
    be cloned). Returns "" when the clone worked, else why not (the strerror; ``exdev_hint``
    added to EXDEV)."""
    times = {d: os.stat(d) for d in {src_dir, dst_dir} if os.path.isdir(d)}
    try:
        return _clone(src_dir, dst_dir, before_clone, exdev_hint)
    finally:
        for d, st in times.items():
            try:
                os.utime(d, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            except OSError as e:  # pragma: no cover - the folder went away meanwhile
                log.debug("could not put back the times of %s: %s", d, e.strerror)


def _clone(src_dir: str, dst_dir: str, before_clone: Callable[[], object] | None, exdev_hint: str) -> str:
    src = os.path.join(src_dir, PROBE_NAME.format(pid=os.getpid(), side="src"))
    dst = os.path.join(dst_dir, PROBE_NAME.format(pid=os.getpid(), side="dst"))
    made: list[str] = []
    try:
        fin = os.open(src, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        made.append(src)
        try:
            os.write(fin, PROBE_BYTES)
            os.fsync(fin)
            if before_clone is not None:
                before_clone()
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            made.append(dst)
            try:
                log.debug("ioctl FICLONE %s -> %s (probe)", src, dst)
                fcntl.ioctl(fout, FICLONE, fin)
                if os.fstat(fout).st_size != len(PROBE_BYTES):
                    raise OSError(errno.EIO, "the clone has the wrong size")
            finally:
                os.close(fout)
        finally:
            os.close(fin)
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno == errno.EXDEV and exdev_hint:
            why += f" ({exdev_hint})"
        return why
    finally:
        for p in made:
            try:
                os.unlink(p)
            except OSError as e:  # pragma: no cover - only when the folder changed under us
                log.warning("could not remove the clone probe %s: %s", p, e.strerror)
    return ""


def restore_target_dir(path: str, root: str) -> str:
    """Where a directory-level restore of ``path`` writes its copy: next to it (a staging
    folder in its parent), or inside it when it is the dataset's root or a mount point."""
    if path == root or os.path.ismount(path):
        return path
    return os.path.dirname(path)
