"""Step 5, the bad-input matrix, end to end on the lab.

Every row deploys a healthy v1 first and then moves the registry tag to a healthy v3, so that
``composeguard up -d --pull always`` WOULD upgrade if the input were fine. Then the bad input
goes in, composeguard runs, and the test checks the contract (DESIGN.md, "Exit codes" and
"What nothing lost means here"):

- the exit code: 2 for usage and configuration errors (the compose file, the arguments, the
  ``x-composeguard`` settings, ``COMPOSEGUARD_*`` variables, running as the wrong user);
  1 for a broken environment (a registry that is down, a corrupt state file), and then the
  message must say whether anything was changed;
- exactly one line on stderr starting with ``composeguard:``. When composeguard captures
  compose's output (``config``) that line is all of stderr; when the refusal comes after a
  ``--pull always`` pull, compose's own pull progress (and, when the registry is down, its
  error) is passed through before the line, as it is for every compose command we run;
- no ``Traceback`` (``--debug`` shows them);
- nothing changed: the same containers (ID, image, start time, status), the same running
  digests, byte-identical data, the same subvolumes and snapshots, the same state files.

Rows where the right behaviour is debatable test what a self-hoster would expect and say so.
Tests of behaviour composeguard gets wrong assert the correct behaviour and are marked
``xfail(strict=True, reason="bug: ...")``.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, POOL, LabProject, composeguard_bin, meta_tree, one_line, run, tree
from tests.treecompare import assert_same_tree

pytestmark = pytest.mark.lab

DATA = {"db.txt": "precious data D\n", "users.csv": "id,name\n1,ada\n", "app.ini": "[app]\nk = v\n"}
UP = ("up", "-d", "--pull", "always")
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534"]
DOWN_REGISTRY = "127.0.0.1:5999"  # nothing listens here


# -- the world before and after ----------------------------------------------------------------
@dataclass
class World:
    containers: dict[str, tuple[str, str, str]]  # id -> (image id, started at, status)
    digests: list[str]
    data: dict[str, dict[str, str]]
    subvolumes: list[str]  # every subvolume/snapshot of the pool whose path names the project
    snapshot_files: list[str]  # everything under .composeguard-snapshots/<project>
    state: dict[str, str]


def state_files(state: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    if not state.is_dir():
        return out
    for f in sorted(state.rglob("*")):
        rel = str(f.relative_to(state))
        if f.is_dir():
            out[rel + "/"] = "dir"
        elif f.name == "lock":
            out[rel] = "lock"  # holds the pid of the last run: its content changes every run
        else:
            out[rel] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def repository(ref: str) -> str:
    """``host:port/name`` of ``host:port/name:tag`` or ``host:port/name@sha256:…``."""
    name = ref.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def observe(p: LabProject, data_dirs: list[Path]) -> World:
    label = f"label=com.docker.compose.project={p.name}"
    ids = run(["docker", "ps", "-aq", "--no-trunc", "--filter", label], check=True).stdout.split()
    containers: dict[str, tuple[str, str, str]] = {}
    digests: list[str] = []
    for info in json.loads(run(["docker", "inspect", *ids], check=True).stdout) if ids else []:
        st = info["State"]
        containers[info["Id"]] = (info["Image"], st["StartedAt"], st["Status"])
        img = json.loads(run(["docker", "image", "inspect", info["Image"]], check=True).stdout)[0]
        # The digest in the container's own repository: an image other tests pulled into
        # theirs (the lab runs tests side by side) lists their repositories too.
        repo = repository(info["Config"]["Image"])
        digests += [d for d in img.get("RepoDigests") or [] if d.split("@", 1)[0] == repo]
    listing = run(["btrfs", "subvolume", "list", str(POOL)], check=True).stdout
    subvols = sorted(ln.split(" path ", 1)[1] for ln in listing.splitlines() if p.name in ln)
    root = p.snapshot_root()
    snap_files = sorted(str(x.relative_to(root)) for x in root.rglob("*")) if root.exists() else []
    return World(
        containers=containers,
        digests=sorted(digests),
        data={str(d): tree(d) for d in data_dirs},
        subvolumes=subvols,
        snapshot_files=snap_files,
        state=state_files(p.state),
    )


def assert_unchanged(p: LabProject, before: World, data_dirs: list[Path]) -> World:
    after = observe(p, data_dirs)
    assert after.containers == before.containers, "no container may be stopped, recreated or started"
    assert after.digests == before.digests, "the same image digests must run"
    assert after.data == before.data, "the data must be byte-identical"
    assert after.subvolumes == before.subvolumes, "no subvolume or snapshot may be created or deleted"
    assert after.snapshot_files == before.snapshot_files
    assert after.state == before.state, "no journal, pin or other state file may change"
    return after


def cg(
    p: LabProject,
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    prefix: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    return run([*(prefix or []), composeguard_bin(), *args], cwd=cwd or p.dir, env={**p.env, **(env or {})},
               timeout=600)


# -- the deployed project ------------------------------------------------------------------------
@dataclass
class Deployed:
    """v1 runs healthy on ``vol``; the registry tag already points at the healthy v3."""

    p: LabProject
    vol: Path
    v1: str
    v3: str

    def service(self, volumes: list | None = None, **extra) -> dict:
        vols = [f"{self.vol}:/data"] if volumes is None else volumes
        return {"image": f"{self.p.repo}/app:latest", "volumes": vols, **extra}

    def rewrite(self, volumes: list | None = None, top: object = None, top_volumes: dict | None = None,
                **svc_extra) -> None:
        doc: dict = {"x-composeguard": FAST if top is None else top,
                     "services": {"app": self.service(volumes, **svc_extra)}}
        if top_volumes:
            doc["volumes"] = top_volumes
        self.p.write_compose(doc)

    def observe(self, *extra_dirs: Path) -> World:
        return observe(self.p, [self.vol, *extra_dirs])

    def assert_unchanged(self, before: World, *extra_dirs: Path) -> None:
        after = assert_unchanged(self.p, before, [self.vol, *extra_dirs])
        assert self.v1 in after.digests, "v1 still runs"

    @contextlib.contextmanager
    def unchanged(self) -> Iterator[None]:
        """The block (one refused command) must leave everything as it was: containers, images,
        data, subvolumes, snapshots, composeguard's state."""
        before = self.observe()
        yield
        self.assert_unchanged(before)


def deploy_v1(p: LabProject, volumes: list, top: dict | None = None, **svc_extra) -> str:
    v1 = p.push("lab/app:v1", "app")
    p.write_compose({"x-composeguard": top or FAST,
                     "services": {"app": {"image": f"{p.repo}/app:latest", "volumes": volumes, **svc_extra}}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr
    return v1


def deploy(p: LabProject, top: dict | None = None) -> Deployed:
    vol = p.subvolume("app", DATA)
    v1 = deploy_v1(p, [f"{vol}:/data"], top)
    v3 = p.push("lab/app:v3", "app")
    return Deployed(p, vol, v1, v3)


@pytest.fixture
def deployed(lab_project: LabProject) -> Iterator[Deployed]:
    d = deploy(lab_project)
    good = (d.p.dir / "compose.yaml").read_bytes()
    try:
        yield d
    finally:  # the teardown's `docker compose down` needs a compose file it can read
        (d.p.dir / "compose.yaml").write_bytes(good)


@pytest.fixture
def open_base() -> Iterator[Path]:
    """A folder every user can read (pytest's tmp_path is 0700 root): for the runs as nobody."""
    base = Path(tempfile.mkdtemp(prefix="cg-badinput-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def open_deployed(open_base: Path) -> Iterator[Deployed]:
    p = LabProject(open_base)
    p.dir.chmod(0o755)
    try:
        yield deploy(p)
    finally:
        p.destroy()


def upgraded(d: Deployed) -> None:
    """Assert the upgrade to v3 committed with a snapshot of ``d.vol`` holding the v1 data."""
    hist = d.p.history()
    assert hist and hist[-1]["outcome"] == "committed", hist
    assert d.v3 in d.p.running_digests("app")
    (snap,) = hist[-1]["snapshots"]
    assert snap["dataset"]["name"] == str(d.vol)
    assert tree(Path(snap["name"])) == tree(d.vol)


# == the compose file ============================================================================
MALFORMED = {
    "yaml-syntax": ("services:\n  app:\n    image: x\n  bad: [\n", "yaml: line"),
    "services-not-a-mapping": ("services: [1, 2]\n", "services must be a mapping"),
    "unknown-property": ("services:\n  app:\n    imagee: x\n", "imagee"),
    "control-characters": ("\t\x00\x01garbage\n", "control characters"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_compose_file(deployed: Deployed, case: str) -> None:
    """composeguard passes compose's own error on (compose does not name the file either)."""
    d = deployed
    text, needle = MALFORMED[case]
    (d.p.dir / "compose.yaml").write_text(text)
    with d.unchanged():
        r = cg(d.p, *UP)

    one_line(r, 2, "docker compose config failed", needle)


@pytest.mark.parametrize("case", ["-f", "--project-directory", "COMPOSE_FILE", "no-file-in-cwd"])
def test_compose_file_does_not_exist(deployed: Deployed, case: str) -> None:
    d = deployed
    args, env, cwd, needle = {
        "-f": (["-f", "nope.yaml"], {}, None, "nope.yaml"),
        "--project-directory": (["--project-directory", "/nonexistent"], {}, None, "/nonexistent"),
        "COMPOSE_FILE": ([], {"COMPOSE_FILE": "missing.yaml"}, None, "missing.yaml"),
        "no-file-in-cwd": ([], {}, "/", "no compose file found"),
    }[case]
    with d.unchanged():
        r = cg(d.p, *args, *UP, env=env, cwd=cwd)

    one_line(r, 2, needle)


@pytest.mark.parametrize("command", [UP, ("plan",), ("update",), ("unpin",)], ids=" ".join)
def test_unknown_service_name(deployed: Deployed, command: tuple[str, ...]) -> None:
    d = deployed
    with d.unchanged():
        r = cg(d.p, *command, "nosuch")

    one_line(r, 2, "nosuch")


# == volumes ===================================================================================
@pytest.mark.parametrize("case", ["bind", "dangling-symlink", "driver-opts-device"])
def test_volume_path_that_does_not_exist(deployed: Deployed, tmp_path: Path, case: str) -> None:
    """A path that does not exist is most likely a typo: refused (exit 2), not silently
    created by Docker and left unprotected."""
    d = deployed
    missing = POOL / f"{d.p.name}-no-such-dir"
    if case == "bind":
        d.rewrite([f"{d.vol}:/data", f"{missing}:/extra"])
    elif case == "dangling-symlink":
        link = tmp_path / "dangling"
        link.symlink_to(missing)
        d.rewrite([f"{d.vol}:/data", f"{link}:/extra"])
    else:
        opts = {"type": "none", "o": "bind", "device": str(missing)}
        d.rewrite([f"{d.vol}:/data", "extra:/extra"],
                  top_volumes={"extra": {"driver": "local", "driver_opts": opts}})
    with d.unchanged():
        r = cg(d.p, *UP)

    one_line(r, 2, "/extra", "not protected", "does not exist", "Nothing was changed", alone=False)


@pytest.mark.parametrize("case", ["root", "pool-top-level", "symlink-off-the-pool"])
def test_bind_mount_that_cannot_be_snapshotted(deployed: Deployed, tmp_path: Path, case: str) -> None:
    """``/`` and the pool's top level are not subvolumes of their own; a symlink that lives on
    the pool but points to ext4 is judged by where the data is: all refused with exit 2."""
    d = deployed
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "x.txt").write_text("on ext4\n")
    if case == "root":
        extra, needle = "/:/host", "a bind mount of / cannot be snapshotted"
    elif case == "pool-top-level":
        extra, needle = f"{POOL}:/host", "not in a subvolume of its own"
    else:
        link = d.vol / "elsewhere"
        link.symlink_to(plain)
        extra, needle = f"{link}:/host", "not on ZFS or Btrfs"
    d.rewrite([f"{d.vol}:/data", extra])
    before = d.observe(plain)

    r = cg(d.p, *UP)

    one_line(r, 2, "/host", "not protected", needle, alone=False)
    d.assert_unchanged(before, plain)


def test_subvolume_with_a_nested_subvolume(deployed: Deployed) -> None:
    """A snapshot does not descend into a nested subvolume: its data would silently be left
    out of the rollback, so the upgrade is refused (exit 2) and the line names the subvolume."""
    d = deployed
    inner = d.vol / "inner"
    run(["btrfs", "subvolume", "create", str(inner)], check=True)
    (inner / "rows.txt").write_text("in the nested subvolume\n")
    try:
        with d.unchanged():
            r = cg(d.p, *UP)

        one_line(r, 2, "cannot guard", f"the subvolume {inner} is nested in {d.vol}", alone=False)
    finally:
        run(["btrfs", "subvolume", "delete", str(inner)], check=True)


def test_mount_below_a_volume(deployed: Deployed) -> None:
    """Step 8, point 12: a tmpfs (or NFS share, or another subvolume's mount) below a data
    volume would be carried away by a restore of the volume: refused (exit 2) with a line that
    names it, before anything is stopped; the mount and its files are left alone."""
    d = deployed
    below = d.vol / "cache"
    below.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(below)], check=True)
    try:
        (below / "hot.bin").write_text("in the tmpfs\n")
        with d.unchanged():
            r = cg(d.p, *UP)

        one_line(r, 2, "cannot guard", f"{below} (tmpfs) is mounted below {d.vol}", alone=False)
        assert (below / "hot.bin").read_text() == "in the tmpfs\n"
    finally:
        run(["umount", str(below)], check=True)


def test_named_volume_with_a_non_local_driver(deployed: Deployed) -> None:
    d = deployed
    d.rewrite([f"{d.vol}:/data", "remote:/remote"], top_volumes={"remote": {"driver": "rexray/s3fs"}})
    with d.unchanged():
        r = cg(d.p, *UP)

    one_line(r, 2, "/remote", "remote", "rexray/s3fs", "not local", alone=False)


# Layouts that must simply work: the upgrade goes ahead (exit 0) with the data protected.
#   symlink:  ``/srv/app -> /pool/app``: the self-hoster expects the subvolume behind the link
#             to be snapshotted.
#   file:     a single file (a config file, an SQLite database) mounted from a subvolume: the
#             subvolume that holds it is snapshotted.
#   odd-name: a path with spaces and non-ASCII characters.
@pytest.mark.parametrize("layout", ["symlink", "file", "odd-name"])
def test_layout_is_protected(lab_project: LabProject, tmp_path: Path, layout: str) -> None:
    p = lab_project
    vol = p.subvolume("my data ü é 日本" if layout == "odd-name" else "app", DATA)
    spec = {"symlink": f"{tmp_path / 'app-data-link'}:/data", "file": f"{vol}/app.ini:/etc/app.ini"}
    if layout == "symlink":
        (tmp_path / "app-data-link").symlink_to(vol)
    v1 = deploy_v1(p, [spec.get(layout, f"{vol}:/data")])
    d = Deployed(p, vol, v1, p.push("lab/app:v3", "app"))

    r = cg(p, *UP)

    assert r.returncode == 0, r.stderr
    upgraded(d)
    assert vol.name in p.cg("history").stdout  # the name is shown as it is


@pytest.fixture
def mount_dir(tmp_path: Path) -> Iterator[Path]:
    """An empty folder with spaces and non-ASCII characters in its name; unmounted at the end."""
    m = tmp_path / "srv data ü é"
    m.mkdir()
    try:
        yield m
    finally:
        if os.path.ismount(m):
            run(["umount", "-l", str(m)])


def pool_device() -> str:
    return run(["findmnt", "-no", "SOURCE", str(POOL)], check=True).stdout.strip()


def test_filesystem_mounted_at_a_path_with_spaces(lab_project: LabProject, mount_dir: Path) -> None:
    """The pool mounted a second time at ``.../srv data ü é`` (mountinfo escapes the spaces
    as \\040): the subvolume is found through that mount and snapshotted."""
    p = lab_project
    vol = p.subvolume("app", DATA)
    run(["mount", "-o", "subvolid=5", pool_device(), str(mount_dir)], check=True)
    try:
        v1 = deploy_v1(p, [f"{mount_dir / vol.name}:/data"])
        p.push("lab/app:v3", "app")

        r = cg(p, *UP)

        assert r.returncode == 0, r.stderr
        txn = p.history()[-1]
        assert txn["outcome"] == "committed"
        (snap,) = txn["snapshots"]
        assert snap["dataset"]["name"] == str(mount_dir / vol.name)
        assert tree(Path(snap["name"])) == tree(vol)
        assert v1 not in p.running_digests("app")
    finally:
        p.compose("down", "-t", "1", check=False)


def test_subvolume_mounted_with_subvol_option(lab_project: LabProject, mount_dir: Path) -> None:
    """``mount -o subvol=@app /dev/sdX '/srv data ü é'`` (the installers' layout): the data is
    the mounted subvolume itself. A mount point cannot be renamed, so composeguard reaches the
    subvolume through a top-level mount of the filesystem (snapshots live there, not inside the
    data), and a failed upgrade restores the mount point's entries one by one (step 7)."""
    p = lab_project
    vol = p.subvolume("app", DATA)
    run(["mount", "-o", f"subvol=/{vol.name}", pool_device(), str(mount_dir)], check=True)
    try:
        v1 = deploy_v1(p, [f"{mount_dir}:/data"])
        before = meta_tree(mount_dir)
        p.push("lab/app:v2", "app")
        [ds] = json.loads(cg(p, "plan", "--json").stdout)["datasets"]
        assert ds["restore"] == "paths" and "subvol=" in ds["whole_refused"], ds

        r = cg(p, *UP)

        assert r.returncode == 3, r.stderr
        assert v1 in p.running_digests("app")
        assert_same_tree(before, meta_tree(mount_dir))
        assert sorted(os.listdir(mount_dir)) == sorted(DATA), "nothing of the restore is left"
        (snap,) = p.history()[-1]["snapshots"]
        assert snap["name"].startswith("/run/composeguard/btrfs/")
        assert os.path.ismount(mount_dir)
    finally:
        p.compose("down", "-t", "1", check=False)


def test_bind_mounted_docker_socket_is_not_data(deployed: Deployed) -> None:
    """Portainer, Traefik, Watchtower mount ``/var/run/docker.sock``. A socket holds no data to
    snapshot; the self-hoster expects the upgrade to go ahead with the data subvolume
    protected, without having to set ``unprotected: allow`` (which would also stop the
    refusal for the service's real data volumes)."""
    d = deployed
    d.rewrite([f"{d.vol}:/data", "/var/run/docker.sock:/var/run/docker.sock"])

    r = cg(d.p, *UP)

    assert r.returncode == 0, r.stderr
    upgraded(d)


# == x-composeguard settings =====================================================================
SETTINGS = {
    # case: (top-level x-composeguard, service-level x-composeguard, env, needle)
    "project-unknown-key": ({**FAST, "timout": 30}, None, {}, "'timout'"),
    "project-wrong-type": ({**FAST, "timeout": "soon"}, None, {}, "timeout"),
    "project-negative": ({**FAST, "settle": -1}, None, {}, "settle"),
    "project-retention-string": ({**FAST, "retention": "3"}, None, {}, "retention"),
    "project-min-free-garbage": ({**FAST, "min_free": "lots"}, None, {}, "min_free"),
    "project-hook-not-a-list": ({**FAST, "hook": "notify-send"}, None, {}, "hook"),
    "project-not-a-mapping": (["timeout", 30], None, {}, "x-composeguard"),
    "service-unknown-key": (FAST, {"probes": {"tcp": "127.0.0.1:8080"}}, {}, "'probes'"),
    "service-wrong-type": (FAST, {"quiesce": 5}, {}, "quiesce"),
    "service-probe-unknown-key": (FAST, {"probe": {"http": "http://127.0.0.1:8080/", "expect": 200}}, {},
                                  "'expect'"),
    "service-probe-bad-url": (FAST, {"probe": {"http": "127.0.0.1:8080/health"}}, {}, "probe.http"),
    "env-timeout": (FAST, None, {"COMPOSEGUARD_TIMEOUT": "soon"}, "COMPOSEGUARD_TIMEOUT"),
    "env-retention": (FAST, None, {"COMPOSEGUARD_RETENTION": "many"}, "COMPOSEGUARD_RETENTION"),
    "env-unprotected": (FAST, None, {"COMPOSEGUARD_UNPROTECTED": "maybe"}, "COMPOSEGUARD_UNPROTECTED"),
    "env-min-free": (FAST, None, {"COMPOSEGUARD_MIN_FREE": "lots"}, "COMPOSEGUARD_MIN_FREE"),
}


@pytest.mark.parametrize("case", [
    c
    for c in SETTINGS
])
def test_invalid_x_composeguard_setting_names_the_key(deployed: Deployed, case: str) -> None:
    """Unknown keys and wrong types are errors that name the key (README, "Settings"); a bad
    environment variable is named as the variable, where the user has to fix it."""
    d = deployed
    top, svc, env, needle = SETTINGS[case]
    d.rewrite(top=top, **({"x-composeguard": svc} if svc is not None else {}))
    with d.unchanged():
        r = cg(d.p, *UP, env=env)

    one_line(r, 2, needle)


def test_snapshot_dir_setting_on_another_filesystem(deployed: Deployed, tmp_path: Path) -> None:
    """A configuration error must be found before anything is stopped: exit 2, no downtime."""
    d = deployed
    snaps = tmp_path / "snaps"
    d.rewrite(top={**FAST, "btrfs_snapshot_dir": str(snaps)})
    with d.unchanged():
        r = cg(d.p, *UP)

    one_line(r, 2, str(snaps), alone=False)


# == arguments ====================================================================================
@pytest.mark.parametrize("args", [(*UP, "--detatch"), ("up", "-d", "--pull")], ids=" ".join)
def test_up_option_typo_changes_nothing(deployed: Deployed, args: tuple[str, ...]) -> None:
    """``--detatch`` or ``--pull`` without its value: compose rejects the command line, so the
    guarded ``up`` must reject it before it stops, snapshots, rolls back or pins anything."""
    d = deployed
    with d.unchanged():
        r = cg(d.p, *args)

    one_line(r, 2, args[-1], alone=False)
    assert d.p.cg("pins").stdout.startswith("no pins")


# == state ======================================================================================
@pytest.fixture
def committed(lab_project: LabProject) -> Deployed:
    """v1 upgraded to v3 (one committed journal, one kept snapshot); the tag then moves back to
    v1, so that an ``up --pull always`` would upgrade again. ``v1``/``v3`` are swapped:
    ``v1`` is what runs now."""
    d = deploy(lab_project, top={**FAST, "retention": 1})
    r = cg(d.p, *UP)
    assert r.returncode == 0, r.stderr
    again = d.p.push("lab/app:v1", "app")
    return Deployed(d.p, d.vol, d.v3, again)


def journal(d: Deployed) -> Path:
    (path,) = (d.p.state / "projects" / d.p.name / "txns").glob("*.json")
    return path


def corrupt_journal(d: Deployed, case: str) -> Path:
    path = journal(d)
    good = path.read_bytes()
    path.write_bytes({
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "binary": bytes(range(256)) * 4,
        "not-an-object": b"[]\n",
    }[case])
    return path


@pytest.mark.parametrize("case", ["empty", "truncated", "binary", "not-an-object"])
def test_corrupt_journal(committed: Deployed, case: str) -> None:
    """A journal that cannot be read might be an interrupted transaction: every command that
    reads journals refuses, naming the file (exit 1: composeguard's own state, not the user's
    input), and nothing changes."""
    d = committed
    path = corrupt_journal(d, case)
    before = d.observe()

    for command in (UP, ("history",), ("history", "--json"), ("recover",), ("rollback",)):
        r = cg(d.p, *command)
        one_line(r, 1, str(path), "corrupt")
        assert r.stdout == "", f"{command}: {r.stdout}"

    d.assert_unchanged(before)


def journal_with_renamed_snapshot_field(d: Deployed) -> Path:
    """Valid JSON, wrong shape: each snapshot as ``{"path": ...}`` (a journal of another
    composeguard version, or edited by hand)."""
    path = journal(d)
    doc = json.loads(path.read_text())
    doc["snapshots"] = [{"path": s["name"]} for s in doc["snapshots"]]
    path.write_text(json.dumps(doc, indent=2))
    return path


def test_journal_of_the_wrong_shape_history(committed: Deployed) -> None:
    d = committed
    path = journal_with_renamed_snapshot_field(d)
    with d.unchanged():
        r = cg(d.p, "history")

    one_line(r, 1, str(path), "corrupt")


def test_journal_of_the_wrong_shape_up(committed: Deployed) -> None:
    """Like an unreadable journal: refused before anything changes (and above all not an
    internal error after a committed upgrade, which a cron job reports as a failure)."""
    d = committed
    path = journal_with_renamed_snapshot_field(d)
    with d.unchanged():
        r = cg(d.p, *UP)

    one_line(r, 1, str(path), "corrupt")


PINS = """\
# composeguard pins for project {project}.
services:
  app:
    image: {old}
x-composeguard-pins:
  app:
    image: {old}
    since: '2026-11-28T00:00:00+00:00'
    txn: 20261128T000000Z-0000
    bad:
    - digest: {bad}
      reason: 'app: unhealthy: wget: server returned error: HTTP/1.1 404 Not Found'
      date: '2026-11-28T00:00:00+00:00'
      txn: 20261128T000000Z-0000
"""


@pytest.mark.parametrize("case", [
    "yaml-syntax",
    "truncated",
    "binary",
    "not-a-mapping",
    "pin-without-image",
])
def test_corrupt_pin_file(deployed: Deployed, case: str) -> None:
    """Without its pins composeguard would start a digest known to be bad: every command that
    reads them refuses with one line naming the file (exit 1: composeguard's state)."""
    d = deployed
    good = PINS.format(project=d.p.name, old=d.v1, bad=d.v3)
    pins = d.p.state / "projects" / d.p.name / "pins.yaml"
    pins.write_bytes({
        "yaml-syntax": b": : :\n- [\n",
        "truncated": good[: good.index("reason") + 14].encode(),
        "binary": bytes(range(256)) * 4,
        "not-a-mapping": b"- app\n- db\n",
        "pin-without-image": good.replace(f"    image: {d.v1}\n    since", "    since").encode(),
    }[case])
    before = d.observe()

    for command in (UP, ("pins",), ("pins", "--json"), ("unpin", "app")):
        r = cg(d.p, *command)
        one_line(r, 1, str(pins), "corrupt")

    d.assert_unchanged(before)




@pytest.mark.parametrize("case", [
    "journal",
    "pins",
])
def test_exit_1_refusal_says_nothing_was_changed(deployed: Deployed, case: str) -> None:
    """DESIGN.md: exit 1 is "any other error; the message says whether anything was changed".
    (The registry-down refusal does: "...; nothing was changed".)"""
    d = deployed
    folder = d.p.state / "projects" / d.p.name
    if case == "journal":
        (folder / "txns").mkdir(parents=True, exist_ok=True)
        (folder / "txns" / "20261128T000000Z-0000.json").write_text('{"id": "2026')
    else:
        (folder / "pins.yaml").write_text("- app\n")
    before = d.observe()

    r = cg(d.p, *UP)

    line = one_line(r, 1)
    assert "nothing was changed" in line.lower() or "nothing changed" in line.lower(), line
    d.assert_unchanged(before)




@pytest.mark.parametrize("case", [
    "regular-file",
    "under-proc",
    "read-only-mount",
    "empty",
    "relative",
])
def test_state_dir_not_usable(deployed: Deployed, tmp_path: Path, case: str) -> None:
    """COMPOSEGUARD_STATE_DIR is configuration: a value composeguard cannot use is a
    configuration error (exit 2) naming the variable, before anything is touched. An empty
    or relative value would split the journals by the folder a command happens to run in
    (cron runs in /), so ``recover`` could not find an interrupted transaction."""
    d = deployed
    afile = tmp_path / "not-a-dir"
    afile.write_text("x\n")
    value = {
        "regular-file": str(afile),
        "under-proc": "/proc/version/composeguard",
        "read-only-mount": str(d.p.state),
        "empty": "",
        "relative": "state",
    }[case]
    before = d.observe()
    if case == "read-only-mount":
        run(["mount", "--bind", "-o", "ro", str(d.p.state), str(d.p.state)], check=True)
    try:
        r = cg(d.p, *UP, env={"COMPOSEGUARD_STATE_DIR": value})
    finally:
        if case == "read-only-mount":
            run(["umount", str(d.p.state)], check=True)

    one_line(r, 2, "COMPOSEGUARD_STATE_DIR")
    d.assert_unchanged(before)
    assert not (d.p.dir / "projects").exists() and not (d.p.dir / "state").exists()


# == not root =====================================================================================
def nobody_can_run_composeguard(home: Path) -> str | None:
    probe = run([*NOBODY, "--clear-groups", composeguard_bin(), "--help"],
                env={**os.environ, "HOME": str(home)})
    if probe.returncode != 0:
        return f"the venv is not usable by nobody (uid 65534): {probe.stderr.strip()[-200:]}"
    return None


@pytest.fixture
def nobody_home(open_base: Path) -> Path:
    home = open_base / "nobody-home"
    home.mkdir()
    os.chown(home, 65534, 65534)
    reason = nobody_can_run_composeguard(home)
    if reason:
        pytest.skip(reason)
    return home


def test_not_root(open_deployed: Deployed, nobody_home: Path) -> None:
    """As nobody (no docker group): a clear one-line usage error (exit 2); saying it needs
    root, or that it cannot use the state directory, are both clear."""
    d = open_deployed
    before = d.observe()

    r = cg(d.p, *UP, env={"HOME": str(nobody_home)}, prefix=[*NOBODY, "--clear-groups"])

    line = one_line(r, 2)
    assert "root" in line or "state dir" in line, line
    d.assert_unchanged(before)


def test_not_root_in_the_docker_group(open_deployed: Deployed, nobody_home: Path, open_base: Path) -> None:
    """The alias as a normal user in the docker group, with a state dir of its own: Docker
    answers, but composeguard cannot read or snapshot subvolumes. Expected: a one-line usage
    error that says root is needed (exit 2), before anything is stopped."""
    d = open_deployed
    try:
        docker_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        pytest.skip("no docker group on this host")
    state = open_base / "nobody-state"
    state.mkdir()
    os.chown(state, 65534, 65534)
    before = d.observe()

    r = cg(d.p, *UP, env={"HOME": str(nobody_home), "COMPOSEGUARD_STATE_DIR": str(state)},
           prefix=[*NOBODY, f"--groups={docker_gid}"])

    one_line(r, 2, "root", alone=False)
    d.assert_unchanged(before)


def test_docker_group_user_after_root_used_composeguard(open_deployed: Deployed, nobody_home: Path) -> None:
    """Step 8, point 14: root's state dir is private (0700). A docker-group user running the
    alias gets plain compose for a plain `up` (no running image changes) and one clear line
    for an upgrade, which needs root: never a traceback, never a start of another image."""
    d = open_deployed
    try:
        docker_gid = grp.getgrnam("docker").gr_gid
    except KeyError:
        pytest.skip("no docker group on this host")
    st = os.stat(d.p.state)
    assert st.st_uid == 0 and st.st_mode & 0o777 == 0o700, "root's state dir is private"
    as_user = {"env": {"HOME": str(nobody_home)}, "prefix": [*NOBODY, f"--groups={docker_gid}"]}
    run(["docker", "tag", "lab/app:v1", f"{d.p.repo}/app:latest"], check=True)  # nothing new
    before = d.observe()

    r = cg(d.p, "up", "-d", **as_user)

    assert r.returncode == 0, r.stderr
    d.assert_unchanged(before)

    run(["docker", "tag", "lab/app:v3", f"{d.p.repo}/app:latest"], check=True)  # an upgrade
    r = cg(d.p, "up", "-d", **as_user)

    one_line(r, 2, "needs root", alone=False)
    d.assert_unchanged(before)


# == the registry ================================================================================
@pytest.fixture
def registry_down(lab_project: LabProject) -> Iterator[Deployed]:
    """v1 runs from 127.0.0.1:5999/<project>/app:latest, where no registry listens."""
    p = lab_project
    ref = f"{DOWN_REGISTRY}/{p.name}/app:latest"
    subprocess.run(["docker", "tag", "lab/app:v1", ref], check=True)
    try:
        vol = p.subvolume("app", DATA)
        p.write_compose({"x-composeguard": FAST,
                         "services": {"app": {"image": ref, "volumes": [f"{vol}:/data"]}}})
        r = p.cg("up", "-d", "--wait")
        assert r.returncode == 0, r.stderr
        yield Deployed(p, vol, "", "")
    finally:
        p.compose("down", "-t", "1", check=False)
        run(["docker", "image", "rm", ref])


@pytest.mark.parametrize("command", [UP, ("update",)], ids=" ".join)
def test_registry_down_during_pull(registry_down: Deployed, command: tuple[str, ...]) -> None:
    """Exit 1 (not the user's input), the message says nothing was changed. ``up`` shows
    compose's own pull output, error included, before composeguard's line; ``update`` (the
    quiet nightly job) puts compose's last error line into its one line."""
    d = registry_down
    before = d.observe()

    r = cg(d.p, *command)

    line = one_line(r, 1, "pull", "nothing was changed", alone=command[0] == "update")
    if command[0] == "update":
        assert "connection refused" in line
    else:
        assert "connection refused" in r.stderr
    assert_unchanged(d.p, before, [d.vol])


def test_plan_with_the_registry_down_compares_with_local_images(registry_down: Deployed) -> None:
    d = registry_down
    before = d.observe()

    r = cg(d.p, "plan")

    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "compared with local images" in r.stdout and "connection refused" in r.stdout
    assert_unchanged(d.p, before, [d.vol])


# == --debug ====================================================================================
DEBUG = {"flag": (["--debug"], {}), "env": ([], {"COMPOSEGUARD_DEBUG": "1"})}


@pytest.mark.parametrize("how", list(DEBUG))
def test_debug_shows_the_traceback(deployed: Deployed, how: str) -> None:
    d = deployed
    (d.p.dir / "compose.yaml").write_text(MALFORMED["yaml-syntax"][0])
    before = d.observe()
    flags, env = DEBUG[how]

    r = cg(d.p, *flags, *UP, env=env)

    assert "Traceback (most recent call last)" in r.stderr
    assert "composeguard: docker compose config failed" in r.stderr
    d.assert_unchanged(before)


@pytest.mark.parametrize("how", list(DEBUG))
def test_debug_keeps_the_exit_code(deployed: Deployed, how: str) -> None:
    """--debug only shows more: a script or a cron job debugged with COMPOSEGUARD_DEBUG=1 must
    see the same exit code (here 2, a configuration error)."""
    d = deployed
    (d.p.dir / "compose.yaml").write_text(MALFORMED["yaml-syntax"][0])
    flags, env = DEBUG[how]

    r = cg(d.p, *flags, *UP, env=env)

    assert "Traceback" in r.stderr
    assert r.returncode == 2, r.stderr[-500:]
