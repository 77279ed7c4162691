"""The data of bench/rollback.py: sizes (parsed from the command line, shown in lines), the
incompressible files the service's volume is filled with, what the failing v2 does to them,
and the state of a tree before and after a rollback, compared entry by entry. Standard
library only.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import stat
from pathlib import Path

MIB = 1 << 20
FILE_MAX = 256 * MIB


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.I)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r}: a size like 10M or 4G")
    mult = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}[m.group(2).upper()]
    return int(float(m.group(1)) * mult)


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" or n >= 10 else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)

def fill(path: Path, total: int) -> None:
    """``total`` bytes of incompressible data in files of at most FILE_MAX, fsynced."""
    block = bytearray(os.urandom(MIB))
    i, left = 0, total
    while left > 0:
        size = min(left, FILE_MAX)
        fd = os.open(path / f"table{i:03d}.db", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            done = 0
            while done < size:
                n = min(MIB, size - done)
                # a fresh first 8 bytes per block: no two blocks are alike
                block[:8] = (i * total + done).to_bytes(8, "little")
                os.write(fd, block[:n])
                done += n
            os.fsync(fd)
        finally:
            os.close(fd)
        left -= size
        i += 1


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def damage(vol: Path) -> None:
    """What the v2 image does to /data: every file rewritten, a schema marker written."""
    for p in vol.iterdir():
        if p.is_file():
            p.write_text("migrated by v2\n")
    (vol / "SCHEMA").write_text("schema: v2\n")


def digest(path: Path, size: int, whole: bool) -> str:
    """sha256 of every byte (``whole``, or a file of at most 3 MiB), else of its first,
    middle and last MiB: a cheap sample that still catches a file put back wrong."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if whole or size <= 3 * MIB:
            for chunk in iter(lambda: f.read(MIB), b""):
                h.update(chunk)
        else:
            for offset in (0, size // 2 - size // 2 % MIB, size - MIB):
                f.seek(offset)
                h.update(f.read(MIB))
    return h.hexdigest()


def tree_state(top: Path, *, untouched: bool) -> dict[str, tuple[object, ...]]:
    """``top`` and every entry below it, by path relative to top's parent: type, mode, owner;
    for files size, mtime and a sampled sha256. ``untouched`` (data nobody may have written,
    not even by putting the same bytes back): also inode, mtime, ctime and every byte."""
    entries = [top]
    if top.is_dir() and not top.is_symlink():
        for dirpath, dirnames, filenames in os.walk(top):
            entries += [Path(dirpath, n) for n in sorted(dirnames + filenames)]
    out: dict[str, tuple[object, ...]] = {}
    for p in entries:
        st = os.lstat(p)
        row: tuple[object, ...] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
        if stat.S_ISREG(st.st_mode):
            row += (st.st_size, st.st_mtime_ns, digest(p, st.st_size, untouched))
        elif stat.S_ISLNK(st.st_mode):
            row += (os.readlink(p),)
        if untouched:
            row += (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)
        out[str(p.relative_to(top.parent))] = row
    return out


def tree_diff(before: dict[str, tuple[object, ...]], after: dict[str, tuple[object, ...]]) -> list[str]:
    out = []
    for k in sorted(before.keys() | after.keys()):
        if k not in after:
            out.append(f"{k}: gone")
        elif k not in before:
            out.append(f"{k}: new")
        elif before[k] != after[k]:
            out.append(f"{k}: {before[k]} -> {after[k]}")
    return out
