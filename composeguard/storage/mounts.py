"""Parse ``/proc/self/mountinfo`` and find the mount that holds a path."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

_OCTAL = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as ``\\040``-style octal."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


@dataclass(frozen=True)
class Mount:
    mount_id: int
    parent_id: int
    dev: str  # MAJ:MIN
    root: str  # the path inside the filesystem that is mounted here
    mountpoint: str
    options: str
    fstype: str
    source: str
    super_options: str


def parse_mountinfo(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        if not line.strip():
            continue
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        lf = left.split(" ")
        rf = right.split(" ")
        if len(lf) < 6 or len(rf) < 2:
            continue
        mounts.append(
            Mount(
                mount_id=int(lf[0]),
                parent_id=int(lf[1]),
                dev=lf[2],
                root=unescape(lf[3]),
                mountpoint=unescape(lf[4]),
                options=lf[5],
                fstype=rf[0],
                source=unescape(rf[1]),
                super_options=rf[2] if len(rf) > 2 else "",
            )
        )
    return mounts


def read_mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return parse_mountinfo(f.read())


def mount_for(path: str, mounts: list[Mount]) -> Mount | None:
    """The mount that holds ``path`` (already a real path): longest mountpoint prefix,
    and among equal mountpoints the last one (it is mounted over the earlier ones)."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mountpoint
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mountpoint):
                best = m
    return best


def real_path(path: str) -> str:
    return os.path.realpath(path)


def paths_overlap(a: str, b: str) -> bool:
    """Whether one of two absolute real paths is the other or lies inside it."""
    a, b = a.rstrip("/") or "/", b.rstrip("/") or "/"
    if a == b or a == "/" or b == "/":
        return True
    return a.startswith(b + "/") or b.startswith(a + "/")
