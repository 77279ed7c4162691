"""Where bench/rollback.py keeps its data: the Btrfs bench pool (a loop image made, grown,
mounted and unmounted here) or, with --storage zfs, the OpenZFS guest's pool, and waiting for
the room a deleted subvolume or dataset frees in the background. Standard library only.

``STORAGE`` and ``POOL`` are set by the bench's main() (--storage; inside the guest POOL is
$COMPOSEGUARD_ZFS_MNT): read them as ``rollback_pool.STORAGE`` / ``rollback_pool.POOL``, never
import them by name (that would keep the defaults).
"""

from __future__ import annotations

import os
import time

import benchlib as lab
from rollback_data import human

POOL_IMG = lab.LAB / "bench-pool.img"
POOL = lab.LAB / "bench-btrfs"  # --storage zfs: $COMPOSEGUARD_ZFS_MNT, the guest pool's root
STORAGE = "btrfs"  # or "zfs" (--storage)
ZFS_POOL = os.environ.get("COMPOSEGUARD_ZFS_POOL", "")


# -- the bench pool --------------------------------------------------------------------------
def pool_up(size: int, need: int) -> bool:
    """Mount the bench pool (making it if needed). True when this call mounted it."""
    lab.LAB.mkdir(parents=True, exist_ok=True)
    st = os.statvfs(lab.LAB)
    free = st.f_bavail * st.f_frsize
    allocated = POOL_IMG.stat().st_blocks * 512 if POOL_IMG.exists() else 0
    if free + allocated < need + (1 << 30):
        lab.fail(
            f"not enough room for the bench pool: {lab.LAB} has {human(free)} free (the pool image "
            f"already holds {human(allocated)}), the bench writes about {human(need)} into the "
            "pool image; free some space or pass a smaller --big"
        )
    if not POOL_IMG.exists():
        lab.note(f"creating the bench pool {POOL_IMG} ({human(size)}, sparse)")
        with open(POOL_IMG, "wb") as f:
            f.truncate(size)
        lab.run(["mkfs.btrfs", "-q", str(POOL_IMG)])
    POOL.mkdir(parents=True, exist_ok=True)
    mounted = False
    if not os.path.ismount(POOL):
        lab.run(["mount", "-o", "loop", str(POOL_IMG), str(POOL)])
        mounted = True
    if POOL_IMG.stat().st_size < size:  # made smaller by an earlier run: grow it in place
        lab.note(f"growing the bench pool {POOL_IMG} to {human(size)}")
        with open(POOL_IMG, "r+b") as f:
            f.truncate(size)
        dev = lab.run(["findmnt", "-n", "-o", "SOURCE", str(POOL)]).stdout.strip()
        lab.run(["losetup", "-c", dev])
        lab.run(["btrfs", "filesystem", "resize", "max", str(POOL)])
    # subvolumes deleted by an earlier run are freed by Btrfs in the background: wait for it
    lab.run(["btrfs", "subvolume", "sync", str(POOL)])
    return mounted


def pool_free() -> int:
    st = os.statvfs(POOL)
    return st.f_bavail * st.f_frsize


def wait_for_room(need: int, timeout: float = 120) -> int:
    """Btrfs frees deleted subvolumes and files in the background, after a commit: commit and
    wait until ``need`` bytes are free (or the timeout). Returns the free bytes."""
    deadline = time.monotonic() + timeout
    while True:
        if STORAGE == "zfs":
            lab.run(["zpool", "sync", ZFS_POOL], check=False)
        else:
            lab.run(["btrfs", "subvolume", "sync", str(POOL)], check=False)
            lab.run(["btrfs", "filesystem", "sync", str(POOL)], check=False)
        free = pool_free()
        if free >= need or time.monotonic() > deadline:
            return free
        time.sleep(2)


def pool_down() -> None:
    if os.path.ismount(POOL):
        lab.run(["btrfs", "subvolume", "sync", str(POOL)], check=False)
        lab.run(["btrfs", "filesystem", "sync", str(POOL)], check=False)
        proc = lab.run(["umount", str(POOL)], check=False)
        if proc.returncode != 0:
            lab.note(f"warning: could not unmount {POOL}: {proc.stderr.strip()}")


def zfs_clear(dataset: str, *, itself: bool = False) -> None:
    """composeguard's snapshots of ``dataset`` (held) and the datasets a whole restore leaves
    beside it (the failed state, a clone of the live dataset's snapshot: destroyed first);
    with ``itself`` the dataset too."""
    kinds = "filesystem,snapshot"
    listed = lab.run(["zfs", "list", "-H", "-o", "name", "-t", kinds, "-r", ZFS_POOL], check=False)
    names = listed.stdout.split()
    for n in names:
        if n.startswith(f"{dataset}.composeguard-"):
            lab.run(["zfs", "destroy", "-r", "-f", n], check=False)
    for n in names:
        if n.startswith(f"{dataset}@"):
            lab.run(["zfs", "release", "composeguard", n], check=False)
            lab.run(["zfs", "destroy", n], check=False)
    if itself and dataset in names:
        lab.run(["zfs", "destroy", "-r", "-f", dataset], check=False)
