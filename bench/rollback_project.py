"""One throwaway one-service project of bench/rollback.py, on the lab's app image, over its own
subvolume or dataset: made and filled (``exclusive``: the volume is the subvolume;
``shared``: it is a/ beside b/ and notes.txt), the guarded failing upgrade timed and its
restore checked (``guarded``), the backup and restore by hand timed (``tar``), and removed
again (``destroy``). Standard library only.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

import benchlib as lab
import rollback_pool as pool
from rollback_data import MIB, damage, du, fill, human, tree_diff, tree_state

GOOD, BAD = f"{lab.REGISTRY}/lab/app:v1", f"{lab.REGISTRY}/lab/app:v2"
OTHER = 4 * MIB  # b/ in a shared subvolume: someone else's data
NOTES = "the owner's notes: not a volume of any container\n"
# --storage zfs: the guest runs under TCG, several times slower (as tests/lab/labproject.py)
GUEST_HEALTHCHECK = "{interval: 5s, timeout: 30s, start_period: 20s, retries: 3}"


class Project:
    def __init__(self, tmp: Path, prefix: str, label: str, kind: str, size: int, cg: str) -> None:
        self.label, self.kind, self.size, self.cg = label, kind, size, cg
        self.shared = kind == "shared"
        self.name = f"{prefix}{label.lower()}" + ("-shared" if self.shared else "")
        self.dir = tmp / self.name
        self.dir.mkdir()
        self.tmp = tmp
        self.ref = f"{lab.REGISTRY}/{self.name}/app:latest"
        self.subvol = pool.POOL / f"{self.name}-data"
        # the name composeguard gives the dataset: the subvolume's path or the ZFS dataset's
        self.dataset = (
            f"{pool.ZFS_POOL}/{self.subvol.name}" if pool.STORAGE == "zfs" else os.path.realpath(self.subvol)
        )
        self.method = ""  # shared: how composeguard says it restores a/ (reflink, clone, copy)
        # the volume: the subvolume itself, or its directory a/ (beside b/ and notes.txt)
        self.vol = self.subvol / "a" if self.shared else self.subvol
        self.backup_dir = pool.POOL / f"{self.name}-backup"
        self.state: Path | None = None
        self.made_vol = self.tagged = False

    def create(self) -> None:
        if pool.STORAGE == "zfs":
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
        guest = pool.STORAGE == "zfs"
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
        wait = "600" if pool.STORAGE == "zfs" else "120"
        lab.run(["docker", "compose", "up", "-d", "--wait", "--wait-timeout", wait], cwd=self.dir)
        have = du(self.vol)
        if have != self.size:
            raise RuntimeError(f"{self.vol} holds {have} bytes, expected {self.size}")
        return {**lab.clean_env(), "COMPOSEGUARD_STATE_DIR": str(self.state)}

    def drop_snapshots(self) -> None:
        if pool.STORAGE == "zfs":
            pool.zfs_clear(self.dataset)
        else:
            lab.delete_subvolumes(pool.POOL / ".composeguard-snapshots" / self.name)

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
            methods = ("clone", "copy") if pool.STORAGE == "zfs" else ("reflink",)
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
            want = f"{pool.STORAGE}:{self.dataset} (shared: restores a by {self.method}"
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
        proc, total = lab.timed_guarded_up(self.cg, self.dir, env, 3, f"{self.name} (to be rolled back)")
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
        pool.wait_for_room(2 * self.size + (256 << 20))
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
        if self.made_vol and pool.STORAGE == "zfs":
            pool.zfs_clear(self.dataset, itself=True)
        elif self.made_vol and self.subvol.exists():
            lab.run(["btrfs", "subvolume", "delete", str(self.subvol)], check=False)
        # a half-done whole restore of composeguard's would leave a staging subvolume next to
        # it (a directory-level one leaves its staging directory inside, deleted with it)
        for p in pool.POOL.glob(f".{self.subvol.name}.composeguard-restore-*"):
            lab.run(["btrfs", "subvolume", "delete", str(p)], check=False)
        if self.tagged:
            lab.untag_repository(self.ref.rsplit(":", 1)[0])
