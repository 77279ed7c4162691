#!/usr/bin/env python3
"""Rollback time against the size of the data: a failing guarded upgrade with 10 MB and with
4 GB of the service's data, restored whole (an exclusive subvolume) and restored directory by
directory (a shared subvolume), and for comparison what people do by hand today (a tar backup
before the upgrade and a tar restore after it failed).

Four throwaway one-service projects (two per size) on the lab's app image:
  exclusive: the volume is a subvolume of its own. composeguard restores it whole (a snapshot
             and a rename, O(1)).
  shared:    the volume is a DIRECTORY a/ inside a subvolume that also holds b/ (4 MiB of
             someone else's data) and notes.txt, the Synology layout. composeguard restores
             only a/: a reflink copy (FICLONE) from the pre-upgrade snapshot into a staging
             directory, swapped in by rename; the cost grows with the extents, not the bytes.
The data lives on a separate, bigger Btrfs loop pool made for this bench
(/var/lib/composeguard-lab/bench-pool.img, --pool-size, sparse, mounted at .../bench-btrfs; the lab's
own pool has 2 GiB), filled with real, incompressible bytes (random 1 MiB blocks written with
os.write, not sparse), in files of at most 256 MiB.

Each round, for each size and variant (alternating which goes first):
  guarded: v1 runs healthy; the registry tag moves to v2 (which rewrites /data, then fails
           its healthcheck); `composeguard plan --json` must say the dataset is restored
           "whole" (exclusive) or by "paths" with "reflink" (shared), else the bench stops;
           `composeguard up -d --pull always` is timed (expect exit 3).
           "rollback" = from composeguard's `app: FAILED` progress line to its
           `app: ok: healthy` line after the restore (composeguard's own clock).
           Afterwards the data must be as before the upgrade (types, modes, owners, sizes
           and mtimes of every entry, sha256 of the first, middle and last MiB of every
           file), and in the shared subvolume b/ and notes.txt untouched (also inode numbers,
           ctimes, the sha256 of every byte) and nothing else left beside them; else the
           bench stops.
  tar:     (exclusive projects only: tar does not care) `tar -C vol -cf backup.tar .` + fsync
           of the archive, timed ("backup"); then the same damage v2 does; then
           `rm -rf vol/* && tar -C vol -xf backup.tar` + sync, timed ("restore").
The first --warmup rounds are discarded. A run that lost dockerd (other lab users restart it)
is made again. Prints a table and the big/small ratios.

    bench/rollback.py [--rounds 3] [--warmup 1] [--small 10M] [--big 4G] [--pool-size 20G]
    lab/zfs-guest.sh --docker .venv/bin/python bench/rollback.py --storage zfs --big 200M

Needs the lab (bash lab/lab.sh up), root, and free space for the pool image (about four
times --big plus 1 GiB really written). Standard library only. Removes what it made at the end,
also on Ctrl-C; the pool image is kept (unmounted) for the next run unless --remove-pool.

--storage zfs runs the same inside the OpenZFS guest (lab/zfs-guest.sh --docker; give it room
with COMPOSEGUARD_ZFS_POOL_SIZE): the datasets are made in $COMPOSEGUARD_ZFS_POOL, mounted below
$COMPOSEGUARD_ZFS_MNT. There composeguard restores a shared dataset's directory by "clone"
(copy_file_range with block cloning, OpenZFS >= 2.3) or by "copy" (a byte copy: OpenZFS < 2.3,
e.g. Debian 12's 2.1), whichever `plan` says; the target for shared is for reflink/clone only.
The guest runs under TCG, several times slower: the service gets the lab tests' slower
healthcheck and timeouts there, so compare its rows with each other, not with Btrfs figures.

Here: the options, the rounds and the table. One project, its guarded run and its tar round:
bench/rollback_project.py; the pool: bench/rollback_pool.py; the data: bench/rollback_data.py.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as lab  # noqa: E402
import rollback_pool as pool  # noqa: E402
from rollback_data import human, parse_size  # noqa: E402
from rollback_project import BAD, GOOD, OTHER, Project  # noqa: E402

lab.configure("bench/rollback", run_timeout=1800)

TARGET_RATIO = 1.2  # exclusive (whole restore): rollback(big) / rollback(small)
TARGET_SHARED_RATIO = 2.0  # shared (directory-level, reflink): rollback(big) / rollback(small)
KINDS = ("exclusive", "shared")


def med(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f}"


def measure(p: Project, tries: int = 3) -> tuple[dict[str, float], dict[str, float] | None]:
    """One guarded run (and tar for an exclusive project). Other lab users restart dockerd:
    a run that lost dockerd is made again (it starts from v1 on restored data), up to ``tries``."""
    attempt = 1
    while True:
        try:
            g = p.guarded()
            return g, (None if p.shared else p.tar())
        except RuntimeError as e:
            lost = "cannot connect to the docker daemon" in str(e).lower()
            if not lost or attempt == tries:
                raise
            lab.note(f"{p.name}: dockerd went away ({str(e).splitlines()[0]}); waiting for it, then again")
            if not lab.wait_for_docker(180):
                raise
            attempt += 1


def main() -> int:
    ap = lab.arguments(__doc__, rounds=3, warmup=1)
    ap.add_argument("--small", type=parse_size, default=parse_size("10M"), help="default 10M")
    ap.add_argument("--big", type=parse_size, default=parse_size("4G"), help="default 4G")
    ap.add_argument(
        "--pool-size",
        type=parse_size,
        default=parse_size("20G"),
        help="size of the bench pool image (default 20G; grown when smaller)",
    )
    ap.add_argument("--remove-pool", action="store_true", help="delete the pool image at the end")
    ap.add_argument(
        "--storage",
        choices=("btrfs", "zfs"),
        default="btrfs",
        help="zfs: inside the OpenZFS guest only (lab/zfs-guest.sh --docker), on its pool",
    )
    opts = ap.parse_args()
    if opts.rounds < 1 or opts.warmup < 0 or not 0 < opts.small < opts.big:
        lab.fail("--rounds >= 1, --warmup >= 0, 0 < --small < --big")
    # per size: the exclusive data, its tar archive and, while a tar restore runs before Btrfs
    # has reclaimed the removed files, the restored copy; the shared data and b/ beside it;
    # plus Btrfs metadata
    need = 4 * (opts.small + opts.big) + 2 * OTHER + (512 << 20)
    if need > opts.pool_size * 0.9:
        lab.fail(
            f"--pool-size {human(opts.pool_size)} is too small for --big {human(opts.big)} "
            f"(needs about {human(need / 0.9)})"
        )

    pool.STORAGE = opts.storage
    if pool.STORAGE == "zfs":
        mnt = os.environ.get("COMPOSEGUARD_ZFS_MNT", "")
        if not pool.ZFS_POOL or not mnt or not os.path.ismount(mnt):
            lab.fail(
                "--storage zfs runs inside the OpenZFS guest, on its pool: "
                "lab/zfs-guest.sh --docker .venv/bin/python bench/rollback.py --storage zfs --big 200M"
            )
        pool.POOL = Path(mnt)

    cg = lab.find_composeguard(opts.composeguard)
    btrfs_tools = ("btrfs", "mkfs.btrfs", "mount", "umount", "losetup")
    tools = ("zfs", "zpool") if pool.STORAGE == "zfs" else btrfs_tools
    lab.check_lab(
        tools=("docker", "tar", *tools), root_for="loop mount, Btrfs subvolumes, docker", images=(GOOD, BAD)
    )
    signal.signal(signal.SIGTERM, lab.on_sigterm)
    mounted = pool.pool_up(opts.pool_size, need) if pool.STORAGE == "btrfs" else False
    free = pool.wait_for_room(need)
    if free < need and pool.STORAGE == "zfs":
        lab.fail(
            f"the ZFS pool {pool.ZFS_POOL} has {human(free)} free, the bench needs about {human(need)}: "
            "give the guest a bigger one (COMPOSEGUARD_ZFS_POOL_SIZE=8G) or pass a smaller --big"
        )
    if free < need:
        if mounted:
            pool.pool_down()
        lab.fail(
            f"the bench pool {pool.POOL} has {human(free)} free, the bench needs about "
            f"{human(need)}: pass --remove-pool once (it is made again with --pool-size) or "
            "a smaller --big"
        )

    prefix = f"bench{secrets.token_hex(3)}"
    tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    started = time.monotonic()
    load0 = os.getloadavg()[0]
    projects: list[Project] = []
    res: dict[str, dict[str, list[dict[str, float]]]] = {}
    try:
        for label, size in (("small", opts.small), ("big", opts.big)):
            for kind in KINDS:
                p = Project(tmp, prefix, label, kind, size, cg)
                projects.append(p)
                p.create()
                res[p.name] = {"guarded": [], "tar": []}
        for i in range(opts.warmup + opts.rounds):
            order = projects if i % 2 == 0 else projects[::-1]
            tag = "warm-up" if i < opts.warmup else f"round {i - opts.warmup + 1}"
            for p in order:
                g, t = measure(p)
                lab.note(
                    f"  {tag:<8} {human(p.size):>9} {p.kind:<9}: rollback {g['rollback']:5.2f}s "
                    f"(restore {g['restore']:.2f}s), guarded total {g['total']:5.2f}s"
                    + (f"; tar backup {t['backup']:6.2f}s, tar restore {t['restore']:6.2f}s" if t else "")
                )
                if i >= opts.warmup:
                    res[p.name]["guarded"].append(g)
                    if t:
                        res[p.name]["tar"].append(t)
    except (KeyboardInterrupt, RuntimeError) as e:
        return lab.exit_status(e)
    finally:
        for p in projects:
            p.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
        if mounted:
            pool.pool_down()
        if opts.remove_pool and pool.STORAGE == "btrfs" and not os.path.ismount(pool.POOL):
            pool.POOL_IMG.unlink(missing_ok=True)

    elapsed = time.monotonic() - started
    print(f"composeguard: {cg}")
    print(
        f"rounds: {opts.rounds} measured (+{opts.warmup} warm-up), sizes and variants alternating; "
        f"run took {elapsed / 60:.1f} min; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    method = next(p.method for p in projects if p.shared)  # Btrfs: reflink; ZFS: clone or copy
    if pool.STORAGE == "zfs":
        version = lab.run(["zfs", "version"], check=False).stdout.split()[:1]  # zfs-2.1.11-1+deb12u1
        where = f"ZFS pool {pool.ZFS_POOL} at {pool.POOL} ({' '.join(version)})"
        unit, whole = "dataset", "clone + promote + rename"
    else:
        where, unit, whole = f"Btrfs on a loop image ({pool.POOL_IMG})", "subvolume", "snapshot + rename"
    how = {"reflink": "reflink copy", "clone": "block-clone copy", "copy": "byte copy"}.get(method, method)
    print(f"pool: {where}; data: incompressible files of <= 256 MiB")
    print(f"exclusive = the volume is a {unit} of its own: restored whole ({whole})")
    print(
        f"shared    = the volume is a/ in a {unit} that also holds b/ ({human(OTHER)}) and notes.txt: "
        f"a/ restored by {how} + rename"
    )
    print(
        "rollback = composeguard's `app: FAILED` line -> its `app: ok: healthy` line "
        "(restore = FAILED -> `restored`)"
    )
    print("tar backup = tar -cf + fsync; tar restore = rm -rf + tar -xf + sync (on the exclusive data)")
    print()
    print(
        f"{'data':>9}  {'restore':<20}  {'rollback s':>10} {'(min-max)':>11}  {'restore s':>9}  "
        f"{'guarded total s':>15}  {'tar backup s':>12} {'(min-max)':>13}  "
        f"{'tar restore s':>13} {'(min-max)':>13}"
    )
    for p in projects:
        g, t = res[p.name]["guarded"], res[p.name]["tar"]
        rb = [x["rollback"] for x in g]
        row = (
            f"{human(p.size):>9}  {f'shared: a/, {method}' if p.shared else 'exclusive: whole':<20}  "
            f"{med(rb):>10} {lab.spread(rb):>11}  "
            f"{med([x['restore'] for x in g]):>9}  {med([x['total'] for x in g]):>15}"
        )
        if t:
            row += (
                f"  {med([x['backup'] for x in t]):>12} {lab.spread([x['backup'] for x in t]):>13}  "
                f"{med([x['restore'] for x in t]):>13} {lab.spread([x['restore'] for x in t]):>13}"
            )
        print(row)
    by = {(p.label, p.kind): res[p.name] for p in projects}

    def rollback(label: str, kind: str) -> float:
        return statistics.median(x["rollback"] for x in by[label, kind]["guarded"])

    tar_small = statistics.median(x["backup"] + x["restore"] for x in by["small", "exclusive"]["tar"])
    tar_big = statistics.median(x["backup"] + x["restore"] for x in by["big", "exclusive"]["tar"])
    tar_restore_big = statistics.median(x["restore"] for x in by["big", "exclusive"]["tar"])
    ratio = rollback("big", "exclusive") / rollback("small", "exclusive")
    shared_ratio = rollback("big", "shared") / rollback("small", "shared")
    big, small = human(opts.big), human(opts.small)
    print()
    print(f"exclusive: rollback({big}) / rollback({small}):         {ratio:.2f}x")
    print(f"shared ({method}): rollback({big}) / rollback({small}):  {shared_ratio:.2f}x")
    print(
        f"tar restore({big}) / shared ({method}) rollback({big}):  "
        f"{tar_restore_big / rollback('big', 'shared'):.1f}x"
    )
    print(f"tar backup+restore({big}) / ({small}):   {tar_big / tar_small:.2f}x")
    print(
        f"tar backup+restore({big}) / exclusive rollback({big}): "
        f"{tar_big / rollback('big', 'exclusive'):.1f}x"
    )
    targets = [("exclusive", ratio, TARGET_RATIO)]
    if method != "copy":  # a byte copy grows with the data: no target
        targets.append((f"shared ({method})", shared_ratio, TARGET_SHARED_RATIO))
    for what, r, target in targets:
        verdict = "OK" if r <= target else "NOT MET"
        print(f"target: {what} rollback({big}) <= {target:g}x rollback({small})  -> {verdict}")
    if pool.STORAGE == "btrfs":
        print(
            "ZFS, not in this run: without block cloning (OpenZFS < 2.3, e.g. Debian 12's 2.1) a shared "
            "dataset's directory is restored by a byte copy, whose time grows with the data "
            "(--storage zfs in the OpenZFS guest measures it)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
