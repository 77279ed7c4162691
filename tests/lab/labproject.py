"""A throwaway compose project on the real lab: its own registry repository, Btrfs
subvolumes in the lab pool, a private state dir, and helpers to run composeguard on it."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import time
from pathlib import Path

import harness
import pytest
import yaml
from harness import LAB, POOL, REGISTRY, compose_files, delete_subvolumes, remove_project  # noqa: F401

# Inside the OpenZFS guest (lab/zfs-guest.sh --docker) the same scenarios run on ZFS datasets.
STORAGE = os.environ.get("COMPOSEGUARD_LAB_STORAGE", "btrfs")
ZFS_POOL = os.environ.get("COMPOSEGUARD_ZFS_POOL", "cgtest")
ZFS_MNT = Path(os.environ.get("COMPOSEGUARD_ZFS_MNT", "/nonexistent"))


# The guest runs under TCG, several times slower: timings that fit the host would fail there
# for no fault of the image. Same scenarios, slower clock.
FAST = {"timeout": 60, "settle": 3} if STORAGE != "zfs" else {"timeout": 240, "settle": 10}
# The guest needs about four minutes per Docker scenario, so by default it runs the scenarios
# where ZFS does something of its own and leaves the rest (the same code on either storage) to
# the host's Btrfs run; COMPOSEGUARD_ZFS_FULL=1 (lab/test.sh passes it on) runs them all there.
GUEST_FULL = os.environ.get("COMPOSEGUARD_ZFS_FULL") == "1"


def same_on_zfs(why: str) -> pytest.MarkDecorator:
    """Skip in the guest unless COMPOSEGUARD_ZFS_FULL=1: ``why`` says what covers it."""
    return pytest.mark.skipif(
        STORAGE == "zfs" and not GUEST_FULL, reason=f"{why} (COMPOSEGUARD_ZFS_FULL=1 runs it on ZFS)"
    )


GUEST_HEALTHCHECK = {"interval": "5s", "timeout": "30s", "start_period": "20s", "retries": 3}


def app_service(image: str, volume: Path, healthcheck: bool = True, **extra) -> dict:
    """A service of the lab's app image with its data volume at /data."""
    svc = {"image": image, "volumes": [f"{volume}:/data"], **extra}
    if healthcheck and STORAGE == "zfs":
        svc["healthcheck"] = GUEST_HEALTHCHECK
    return svc


def one_line(r: subprocess.CompletedProcess[str], code: int, *needles: str, alone: bool = True) -> str:
    """The contract for an error: exit ``code``, exactly one ``composeguard:`` line holding
    every needle, no traceback. ``alone``: that line is all of stderr."""
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == code, f"exit {r.returncode}, expected {code}; stderr:\n{r.stderr}"
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("composeguard:")]
    assert len(lines) == 1, f"expected one composeguard: line; stderr:\n{r.stderr}"
    line = lines[0]
    assert "internal error" not in line, line
    if alone:
        assert r.stderr.strip() == line, f"stderr must be the one line; stderr:\n{r.stderr}"
    for n in needles:
        assert n in line, f"{n!r} not in {line!r}"
    return line


def zfs(*args: str) -> str:
    return subprocess.run(["zfs", *args], check=True, capture_output=True, text=True).stdout


def composeguard_bin() -> str:
    try:
        return harness.composeguard_binary()
    except LookupError as e:
        pytest.fail(str(e))


def run(args: list[str], check: bool = False, **kw) -> subprocess.CompletedProcess[str]:
    """The harness's run(), which does not check the exit code unless asked: a test looks at it."""
    return harness.run(args, check=check, **kw)


def unavailable(reason: str) -> None:
    """Skip, or fail where the lab is required (CI sets COMPOSEGUARD_REQUIRE_LAB=1)."""
    if os.environ.get("COMPOSEGUARD_REQUIRE_LAB") == "1":
        pytest.fail(f"the lab is required but {reason}")
    pytest.skip(reason)


def output(*args: str | Path) -> str:
    """stdout of a command that must succeed (its stderr in the failure)."""
    r = subprocess.run([str(a) for a in args], capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(map(str, args))} failed: {r.stderr.strip()}"
    return r.stdout


def tree(path: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file below ``path`` (byte-identity check)."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def poll_until(cond, timeout: float, what: str, every: float = 0.2) -> None:  # noqa: ANN001
    """Wait until ``cond()`` is true (an exception from it counts as not yet), at most
    ``timeout`` seconds; then fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception as e:  # noqa: BLE001 - not yet (a container restarting, a lock)
            last = e
        time.sleep(every)
    why = f" (last error: {last})" if last else ""
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{why}")


class LabProject:
    def __init__(self, tmp: Path, prefix: str = "t") -> None:
        self.name = f"{prefix}{secrets.token_hex(3)}"
        self.dir = tmp / self.name
        self.dir.mkdir(parents=True)
        self.state = tmp / f"{self.name}-state"
        self.repo = f"{REGISTRY}/{self.name}"
        self.subvolumes: list[Path] = []
        self.datasets: list[str] = []
        self.env = {**os.environ, "COMPOSEGUARD_STATE_DIR": str(self.state)}

    # -- setup -----------------------------------------------------------------------------
    def push(self, local: str, name: str) -> str:
        """Point REGISTRY/<project>/<name>:latest at the local image ``local``; return the
        repo digest the registry now serves."""
        ref = f"{self.repo}/{name}:latest"
        subprocess.run(["docker", "tag", local, ref], check=True)
        out = run(["docker", "push", ref], check=True).stdout
        digest = next(w for w in out.split() if w.startswith("sha256:"))
        return f"{self.repo}/{name}@{digest}"

    def upgrade_commits(self, local: str = "lab/app:v3", name: str = "app") -> dict:
        """``local`` pushed as the service's new image, then ``up -d --pull always``: it exits 0,
        runs the new digest and commits. The transaction from history."""
        new = self.push(local, name)
        r = self.cg("up", "-d", "--pull", "always")
        assert r.returncode == 0, r.stderr
        assert new in self.running_digests(name)
        txn = self.history()[-1]
        assert txn["outcome"] == "committed"
        return txn

    def volume(self, name: str, files: dict[str, str] | None = None) -> Path:
        """A data volume on the lab's storage: a Btrfs subvolume, or a ZFS dataset in the guest."""
        if STORAGE != "zfs":
            return self.subvolume(name, files)
        ds = f"{ZFS_POOL}/{self.name}-{name}"
        path = ZFS_MNT / f"{self.name}-{name}"
        zfs("create", "-o", f"mountpoint={path}", ds)
        self.datasets.append(ds)
        for rel, content in (files or {}).items():
            (path / rel).write_text(content)
        return path

    def subvolume(self, name: str, files: dict[str, str] | None = None) -> Path:
        path = POOL / f"{self.name}-{name}"
        run(["btrfs", "subvolume", "create", str(path)], check=True)
        self.subvolumes.append(path)
        for rel, content in (files or {}).items():
            (path / rel).write_text(content)
        return path

    def write_compose(self, doc: dict) -> None:
        doc = {"name": self.name, **doc}
        (self.dir / "compose.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))

    # -- running ---------------------------------------------------------------------------
    def cg(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return run([composeguard_bin(), *args], cwd=self.dir, env=self.env, timeout=timeout)

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run(["docker", "compose", *args], cwd=self.dir, env=self.env, check=check)

    def container(self, service: str) -> dict:
        # By label, not `compose ps`: a test may start the project with files or env files
        # that a plain `docker compose` in its folder would not load.
        ids = run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={self.name}",
                   "--filter", f"label=com.docker.compose.service={service}",
                   "--filter", "label=com.docker.compose.oneoff=False"], check=True).stdout.split()
        assert ids, f"no container for {service}"
        return json.loads(run(["docker", "inspect", ids[0]], check=True).stdout)[0]

    def running_digests(self, service: str) -> list[str]:
        image_id = self.container(service)["Image"]
        info = json.loads(run(["docker", "image", "inspect", image_id], check=True).stdout)[0]
        return info.get("RepoDigests") or []

    def wait_healthy(self, service: str, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            st = self.container(service)["State"]
            if (st.get("Health") or {}).get("Status") == "healthy":
                return
            time.sleep(0.5)
        raise AssertionError(f"{service} did not become healthy")

    def history(self) -> list[dict]:
        return json.loads(self.cg("history", "--json").stdout)

    def snapshot_root(self) -> Path:
        return POOL / ".composeguard-snapshots" / self.name

    # -- storage-agnostic checks -----------------------------------------------------------
    def snapshots(self) -> list[str]:
        """composeguard's snapshots of this project's volumes."""
        if STORAGE == "zfs":
            out = zfs("list", "-H", "-o", "name", "-t", "snapshot")
            return sorted(
                n for n in out.split() if n.startswith(f"{ZFS_POOL}/{self.name}-") and "@composeguard-" in n
            )
        root = self.snapshot_root()
        return sorted(str(p) for p in root.glob("*/pre/*")) if root.exists() else []

    def exists(self, name: str) -> bool:
        if STORAGE == "zfs":
            return subprocess.run(["zfs", "list", "-H", name], capture_output=True).returncode == 0
        return Path(name).exists()

    def snapshot_tree(self, name: str) -> dict[str, str]:
        if STORAGE == "zfs":
            ds, snap = name.split("@", 1)
            mountpoint = Path(zfs("get", "-H", "-o", "value", "mountpoint", ds).strip())
            path = mountpoint / ".zfs" / "snapshot" / snap
            try:
                return tree(path)
            finally:  # reading automounted the snapshot: unmount it, as a user would leave it
                subprocess.run(["umount", str(path)], capture_output=True)
        return tree(Path(name))

    def failed_tree(self, name: str) -> dict[str, str]:
        """Files of a kept failed state (a read-only subvolume, an unmounted dataset, or a
        failed trial's clone, which stays mounted read-only)."""
        if STORAGE != "zfs":
            return tree(Path(name))
        mounted = zfs("get", "-H", "-o", "value", "mounted", name).strip() == "yes"
        if not mounted:
            zfs("mount", name)
        try:
            return tree(Path(zfs("get", "-H", "-o", "value", "mountpoint", name).strip()))
        finally:
            if not mounted:
                zfs("unmount", name)

    # -- teardown --------------------------------------------------------------------------
    def destroy(self) -> None:
        files = compose_files(self.name, self.state) if (self.dir / "compose.yaml").exists() else None
        remove_project(self.name, self.dir, files, volumes=True)
        remove_project(f"{self.name}-trial", self.dir, None, volumes=True)  # what a failed test left
        delete_subvolumes(self.snapshot_root())
        for sv in self.subvolumes:
            delete_subvolumes(sv)
        for ds in self.datasets:
            for line in zfs("list", "-H", "-o", "name", "-t", "snapshot").split():
                if line.startswith(ds) and "@composeguard-" in line:
                    run(["zfs", "release", "composeguard", line])
        for ds in self.datasets:  # the dataset, its kept failed states and restore leftovers
            for name in zfs("list", "-H", "-o", "name", "-t", "filesystem").split():
                if name == ds or name.startswith(f"{ds}.composeguard-"):
                    run(["zfs", "destroy", "-R", "-f", name])


def kill_at(
    p: LabProject,
    point: str,
    tmp: Path,
    sig: signal.Signals = signal.SIGKILL,
    args: tuple[str, ...] = ("up", "-d", "--pull", "always"),
) -> None:
    """Run ``composeguard ARGS`` until it reaches the pause point ``point``, then send it ``sig``
    (a real signal to the real process) and wait for it to end."""
    marker = tmp / f"paused-{point}"
    env = {**p.env, "COMPOSEGUARD_TEST_PAUSE_AT": point, "COMPOSEGUARD_TEST_PAUSE_FILE": str(marker)}
    proc = subprocess.Popen([composeguard_bin(), *args], cwd=p.dir, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + (300 if STORAGE != "zfs" else 900)
    try:
        while not marker.exists():
            if proc.poll() is not None:
                raise AssertionError(f"composeguard ended before {point}: {proc.stderr.read()}")
            assert time.time() < deadline, f"composeguard never reached {point}"
            time.sleep(0.1)
    except BaseException:
        proc.kill()  # never leave it running into the teardown (it would find its snapshots gone)
        proc.wait()
        raise
    pid = int(marker.read_text())
    assert pid == proc.pid
    os.kill(pid, sig)
    if sig == signal.SIGKILL:
        assert proc.wait(timeout=30) == -signal.SIGKILL
    else:  # handled: undone (130), rolled back (3), or a rollback cut short (4, recover resumes)
        assert proc.wait(timeout=600) in (130, 3, 4), proc.stderr.read()


def bad_upgrade_is_rolled_back(
    p: LabProject, v1: str, vol: Path, *services: str
) -> subprocess.CompletedProcess[str]:
    """Push the failing lab/app:v2 as app, run a guarded ``up -d --pull always [SERVICES]`` and
    check the contract: exit 3, app back on ``v1``, ``vol`` byte-identical."""
    before = tree(vol)
    p.push("lab/app:v2", "app")
    r = p.cg("up", "-d", "--pull", "always", *services)
    assert r.returncode == 3, r.stderr
    assert v1 in p.running_digests("app")
    assert tree(vol) == before
    return r


def meta_tree(path: Path) -> dict:
    """Every field a restore must keep (bytes, owners, modes, mtimes, xattrs, links, holes) of
    every entry below ``path``; atimes are left out (reading the data changes them)."""
    from tests.treecompare import snapshot_tree

    return snapshot_tree(path, atime=False)
