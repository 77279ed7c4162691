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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib as lab  # noqa: E402

lab.configure("bench/rollback", run_timeout=1800)

POOL_IMG = lab.LAB / "bench-pool.img"
POOL = lab.LAB / "bench-btrfs"  # --storage zfs: $COMPOSEGUARD_ZFS_MNT, the guest pool's root
STORAGE = "btrfs"  # or "zfs" (--storage)
ZFS_POOL = os.environ.get("COMPOSEGUARD_ZFS_POOL", "")
GOOD, BAD = f"{lab.REGISTRY}/lab/app:v1", f"{lab.REGISTRY}/lab/app:v2"
TARGET_RATIO = 1.2  # exclusive (whole restore): rollback(big) / rollback(small)
TARGET_SHARED_RATIO = 2.0  # shared (directory-level, reflink): rollback(big) / rollback(small)
MIB = 1 << 20
FILE_MAX = 256 * MIB
OTHER = 4 * MIB  # b/ in a shared subvolume: someone else's data
NOTES = "the owner's notes: not a volume of any container\n"
KINDS = ("exclusive", "shared")
# --storage zfs: the guest runs under TCG, several times slower (as tests/lab/labproject.py)
GUEST_HEALTHCHECK = "{interval: 5s, timeout: 30s, start_period: 20s, retries: 3}"


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
            lab.note(f"warning: could not unmount {lab.POOL}: {proc.stderr.strip()}")


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


# -- a project -------------------------------------------------------------------------------
class Project:
    def __init__(self, tmp: Path, prefix: str, label: str, kind: str, size: int, cg: str) -> None:
        self.label, self.kind, self.size, self.cg = label, kind, size, cg
        self.shared = kind == "shared"
        self.name = f"{prefix}{label.lower()}" + ("-shared" if self.shared else "")
        self.dir = tmp / self.name
        self.dir.mkdir()
        self.tmp = tmp
        self.ref = f"{lab.REGISTRY}/{self.name}/app:latest"
        self.subvol = POOL / f"{self.name}-data"
        # the name composeguard gives the dataset: the subvolume's path or the ZFS dataset's
        self.dataset = f"{ZFS_POOL}/{self.subvol.name}" if STORAGE == "zfs" else os.path.realpath(self.subvol)
        self.method = ""  # shared: how composeguard says it restores a/ (reflink, clone, copy)
        # the volume: the subvolume itself, or its directory a/ (beside b/ and notes.txt)
        self.vol = self.subvol / "a" if self.shared else self.subvol
        self.backup_dir = POOL / f"{self.name}-backup"
        self.state: Path | None = None
        self.made_vol = self.tagged = False

    def create(self) -> None:
        if STORAGE == "zfs":
            lab.run(["zfs", "create", "-o", f"mountpoint={self.subvol}", self.dataset])
        else:
            lab.run(["btrfs", "subvolume", "create", str(self.subvol)])
        self.made_vol = True
        beside = f" (beside {human(OTHER)} in b/ and notes.txt)" if self.shared else ""
        lab.note(f"{self.name}: writing {human(self.size)} of data into {self.vol}{beside}")
        t0 = time.perf_counter()
        if self.shared:
            self.vol.mkdir()
            (self.subvol / "b").mkdir()
            fill(self.subvol / "b", OTHER)
            (self.subvol / "notes.txt").write_text(NOTES)
        fill(self.vol, self.size)
        lab.run(["sync", "-f", str(self.subvol)])
        lab.note(f"{self.name}: written in {time.perf_counter() - t0:.1f}s")
        if not self.shared:
            self.backup_dir.mkdir()
        guest = STORAGE == "zfs"
        (self.dir / "compose.yaml").write_text(
            f"name: {self.name}\n"
            "x-composeguard:\n"
            f"  timeout: {240 if guest else 60}\n"
            f"  settle: {10 if guest else 3}\n"
            "services:\n"
            "  app:\n"
            f"    image: {self.ref}\n"
            f'    volumes: ["{self.vol}:/data"]\n'
            + (f"    healthcheck: {GUEST_HEALTHCHECK}\n" if guest else "")
        )

    def publish(self, source: str, keep_local: str | None = None) -> None:
        lab.run(["docker", "tag", source, self.ref])
        self.tagged = True
        lab.run(["docker", "push", "-q", self.ref])
        if keep_local:
            lab.run(["docker", "tag", keep_local, self.ref])

    def reset(self) -> dict[str, str]:
        """v1 healthy on the (restored) data; a fresh composeguard state dir (no pins)."""
        self.publish(GOOD)
        files = lab.compose_files(self.name, self.state)
        lab.run(["docker", "compose", *files, "down", "-t", "1"], cwd=self.dir)
        if self.state and self.state.exists():
            shutil.rmtree(self.state)
        self.drop_snapshots()
        self.state = Path(tempfile.mkdtemp(prefix=f"{self.name}-state-", dir=self.tmp))
        wait = "600" if STORAGE == "zfs" else "120"
        lab.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", wait], cwd=self.dir)
        have = du(self.vol)
        if have != self.size:
            raise RuntimeError(f"{self.vol} holds {have} bytes, expected {self.size}")
        return {**lab.clean_env(), "COMPOSEGUARD_STATE_DIR": str(self.state)}

    def drop_snapshots(self) -> None:
        if STORAGE == "zfs":
            zfs_clear(self.dataset)
        else:
            lab.delete_subvolumes(POOL / ".composeguard-snapshots" / self.name)

    def check_plan(self, env: dict[str, str]) -> None:
        """Stop unless composeguard will restore this project's data the way its row says:
        "whole" (exclusive), or by "paths", a/ only, with reflink (shared; on ZFS clone or
        copy)."""
        proc = lab.run([self.cg, "plan", "--json"], cwd=self.dir, env=env)
        try:
            doc = json.loads(proc.stdout)
        except ValueError as e:
            raise RuntimeError(f"{self.name}: `composeguard plan --json` printed no JSON ({e})") from e
        changes = [c.get("service") for c in doc.get("changes") or []]
        datasets = doc.get("datasets") or []
        ds = datasets[0] if len(datasets) == 1 else {}
        if self.shared:
            methods = ("clone", "copy") if STORAGE == "zfs" else ("reflink",)
            want = f"restore 'paths' of {self.vol} only, by {' or '.join(methods)}"
            ok = (
                ds.get("restore") == "paths"
                and ds.get("paths") == [os.path.realpath(self.vol)]
                and ds.get("method") in methods
            )
        else:
            want, ok = "restore 'whole'", ds.get("restore") == "whole"
        if changes != ["app"] or ds.get("name") != self.dataset or not ok:
            raise RuntimeError(
                f"{self.name}: WRONG RESTORE: the {self.kind} row needs one dataset {self.dataset} "
                f"with {want}, but `composeguard plan --json` (v2 in the registry) says changes "
                f"{changes}, datasets {json.dumps(datasets)}; not measuring it"
            )
        self.method = ds.get("method", "") if self.shared else ""

    def data_state(self) -> dict[str, dict[str, tuple[object, ...]]]:
        out = {"data": tree_state(self.vol, untouched=False)}
        if self.shared:
            out["others"] = {
                **tree_state(self.subvol / "b", untouched=True),
                **tree_state(self.subvol / "notes.txt", untouched=True),
            }
        return out

    def check_data(self, before: dict[str, dict[str, tuple[object, ...]]]) -> None:
        """After the rollback: the data as before the upgrade; in a shared subvolume, b/ and
        notes.txt not even rewritten, and nothing of composeguard's left beside them."""
        after = self.data_state()
        for what, why in (
            ("data", f"{self.vol} is not as it was before the upgrade"),
            ("others", f"the rollback of {self.vol} touched what else is in {self.subvol}"),
        ):
            diff = tree_diff(before[what], after[what]) if what in before else []
            if diff:
                more = f" (and {len(diff) - 10} more)" if len(diff) > 10 else ""
                raise RuntimeError(f"{self.name}: {why}: " + "; ".join(diff[:10]) + more)
        if self.shared:
            entries = sorted(os.listdir(self.subvol))
            if entries != ["a", "b", "notes.txt"]:
                raise RuntimeError(
                    f"{self.name}: after the rollback {self.subvol} holds {entries}, "
                    "expected a, b and notes.txt only"
                )

    def check_progress(self, msgs: list[str], stderr: str) -> None:
        """composeguard's own lines say which restore it did: the one this row is about."""
        if self.shared:
            want = f"{STORAGE}:{self.dataset} (shared: restores a by {self.method}"
            for line in (f"to snapshot: {want}", f"restoring {want}"):
                if not any(line in m for m in msgs):
                    raise RuntimeError(f"{self.name}: no progress line with {line!r} in:\n{stderr}")
        elif any("(shared:" in m or m.startswith("restoring ") for m in msgs):
            raise RuntimeError(f"{self.name}: a directory-level restore, expected a whole one:\n{stderr}")

    def guarded(self) -> dict[str, float]:
        env = self.reset()
        self.publish(BAD, keep_local=GOOD)
        self.check_plan(env)
        before = self.data_state()
        t0 = time.perf_counter()
        proc = lab.run([self.cg, "up", "-d", "--pull", "always"], cwd=self.dir, env=env, check=False)
        total = time.perf_counter() - t0
        if proc.returncode != 3:
            raise RuntimeError(
                f"{self.name}: composeguard up exited {proc.returncode}, expected 3 "
                f"(rolled back):\n{proc.stderr.strip()[-3000:]}"
            )
        failed = healthy = restored = None
        msgs = []
        for line in proc.stderr.splitlines():
            m = re.match(r"^composeguard \[\s*([\d.]+)s\] (.*)$", line)
            if not m:
                continue
            t, msg = float(m.group(1)), m.group(2).strip()
            msgs.append(msg)
            if msg.startswith("app: FAILED") and failed is None:
                failed = t
            elif msg.startswith("restored ") and failed is not None:
                restored = t
            elif msg.startswith("app: ok") and failed is not None:
                healthy = t
        if failed is None or healthy is None or restored is None:
            raise RuntimeError(f"{self.name}: progress lines not found in:\n{proc.stderr}")
        self.check_progress(msgs, proc.stderr)
        have = du(self.vol)
        if have != self.size:
            raise RuntimeError(f"{self.name}: after the rollback {self.vol} holds {have} bytes")
        self.check_data(before)
        # The snapshots (pre-upgrade and failed state) hold the old extents: drop them now so
        # the tar round that follows has the room it needs.
        self.drop_snapshots()
        wait_for_room(2 * self.size + (256 << 20))
        return {"total": total, "rollback": healthy - failed, "restore": restored - failed}

    def tar(self) -> dict[str, float]:
        archive = self.backup_dir / "backup.tar"
        t0 = time.perf_counter()
        lab.run(["tar", "-C", str(self.vol), "-cf", str(archive), "."])
        lab.run(["sync", str(archive)])  # fsync: a backup is only one once it is on disk
        backup = time.perf_counter() - t0
        damage(self.vol)
        t0 = time.perf_counter()
        for p in self.vol.iterdir():
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
        lab.run(["tar", "-C", str(self.vol), "-xf", str(archive)])
        lab.run(["sync", "-f", str(self.vol)])
        restore = time.perf_counter() - t0
        archive.unlink()
        have = du(self.vol)
        if have != self.size:
            raise RuntimeError(f"{self.name}: after the tar restore {self.vol} holds {have} bytes")
        return {"backup": backup, "restore": restore}

    def destroy(self) -> None:
        if (self.dir / "compose.yaml").exists():
            lab.remove_project(self.name, self.dir, lab.compose_files(self.name, self.state))
        self.drop_snapshots()
        shutil.rmtree(self.backup_dir, ignore_errors=True)
        if self.made_vol and STORAGE == "zfs":
            zfs_clear(self.dataset, itself=True)
        elif self.made_vol and self.subvol.exists():
            lab.run(["btrfs", "subvolume", "delete", str(self.subvol)], check=False)
        # a half-done whole restore of composeguard's would leave a staging subvolume next to
        # it (a directory-level one leaves its staging directory inside, deleted with it)
        for p in POOL.glob(f".{self.subvol.name}.composeguard-restore-*"):
            lab.run(["btrfs", "subvolume", "delete", str(p)], check=False)
        if self.tagged:
            lab.untag_repository(self.ref.rsplit(":", 1)[0])


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
    global POOL, STORAGE
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

    STORAGE = opts.storage
    if STORAGE == "zfs":
        mnt = os.environ.get("COMPOSEGUARD_ZFS_MNT", "")
        if not ZFS_POOL or not mnt or not os.path.ismount(mnt):
            lab.fail(
                "--storage zfs runs inside the OpenZFS guest, on its pool: "
                "lab/zfs-guest.sh --docker .venv/bin/python bench/rollback.py --storage zfs --big 200M"
            )
        POOL = Path(mnt)

    cg = lab.find_composeguard(opts.composeguard)
    tools = ("zfs", "zpool") if STORAGE == "zfs" else ("btrfs", "mkfs.btrfs", "mount", "umount", "losetup")
    lab.check_lab(
        tools=("docker", "tar", *tools), root_for="loop mount, Btrfs subvolumes, docker", images=(GOOD, BAD)
    )
    signal.signal(signal.SIGTERM, lab.on_sigterm)
    mounted = pool_up(opts.pool_size, need) if STORAGE == "btrfs" else False
    free = wait_for_room(need)
    if free < need and STORAGE == "zfs":
        lab.fail(
            f"the ZFS pool {ZFS_POOL} has {human(free)} free, the bench needs about {human(need)}: "
            "give the guest a bigger one (COMPOSEGUARD_ZFS_POOL_SIZE=8G) or pass a smaller --big"
        )
    if free < need:
        if mounted:
            pool_down()
        lab.fail(
            f"the bench pool {lab.POOL} has {human(free)} free, the bench needs about "
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
            pool_down()
        if opts.remove_pool and STORAGE == "btrfs" and not os.path.ismount(POOL):
            POOL_IMG.unlink(missing_ok=True)

    elapsed = time.monotonic() - started
    print(f"composeguard: {cg}")
    print(
        f"rounds: {opts.rounds} measured (+{opts.warmup} warm-up), sizes and variants alternating; "
        f"run took {elapsed / 60:.1f} min; load average {load0:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    method = next(p.method for p in projects if p.shared)  # Btrfs: reflink; ZFS: clone or copy
    if STORAGE == "zfs":
        version = lab.run(["zfs", "version"], check=False).stdout.split()[:1]  # zfs-2.1.11-1+deb12u1
        where = f"ZFS pool {ZFS_POOL} at {lab.POOL} ({' '.join(version)})"
        unit, whole = "dataset", "clone + promote + rename"
    else:
        where, unit, whole = f"Btrfs on a loop image ({POOL_IMG})", "subvolume", "snapshot + rename"
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
    if STORAGE == "btrfs":
        print(
            "ZFS, not in this run: without block cloning (OpenZFS < 2.3, e.g. Debian 12's 2.1) a shared "
            "dataset's directory is restored by a byte copy, whose time grows with the data "
            "(--storage zfs in the OpenZFS guest measures it)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
