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

log = logging.getLogger("composeguard.probecopy")

FICLONE = 0x40049409  # _IOW(0x94, 9, int)
PROBE_BYTES = b"composeguard clone probe\n" * 164  # 4100 bytes: more than one 4 KiB block
# The name contains one of usage.py's OWN_MARKERS: a probe left behind by a kill is never
# taken for someone else's data.
PROBE_NAME = ".composeguard-restore-probe-{pid}-{side}"


def clone_probe(src_dir: str, dst_dir: str) -> str:
    """Clone a probe file made in ``src_dir`` into ``dst_dir`` with ``FICLONE``; both are
    removed again. Returns "" when the clone worked, else why not (the strerror, with a hint
    for EXDEV)."""
    src = os.path.join(src_dir, PROBE_NAME.format(pid=os.getpid(), side="src"))
    dst = os.path.join(dst_dir, PROBE_NAME.format(pid=os.getpid(), side="dst"))
    made: list[str] = []
    try:
        fin = os.open(src, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        made.append(src)
        try:
            os.write(fin, PROBE_BYTES)
            os.fsync(fin)
            fout = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            made.append(dst)
            try:
                log.debug("ioctl FICLONE %s -> %s (probe)", src, dst)
                fcntl.ioctl(fout, FICLONE, fin)
            finally:
                os.close(fout)
        finally:
            os.close(fin)
    except OSError as e:
        why = e.strerror or str(e)
        if e.errno == errno.EXDEV:
            why += " (this kernel cannot clone between these two mounts: Linux before 5.18)"
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
