"""Smoke tests for the Docker lab inside the OpenZFS guest (lab/zfs-guest.sh --docker).

They prove that what composeguard's end-to-end tests need is real there: a dockerd whose data
root is on ZFS, Compose v2 with service-name DNS, pulls from the guest's registry, and bind
mounts of ZFS datasets. Run them with:

    bash lab/zfs-guest.sh --docker .venv/bin/python -m pytest -q -p no:cacheprovider -m zfs tests/zfs

The guest runs under TCG (no KVM), several times slower than the host: every Docker call gets a
generous timeout and the compose healthcheck below is far slower than the images' own.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_GUEST = os.environ.get("COMPOSEGUARD_IN_ZFS_GUEST") == "1"
DOCKER_LAB = os.environ.get("COMPOSEGUARD_LAB_STORAGE") == "zfs"

pytestmark = [
    pytest.mark.zfs,
    pytest.mark.skipif(
        not (IN_GUEST and DOCKER_LAB),
        reason="needs the Docker lab in the OpenZFS guest: run via lab/zfs-guest.sh --docker",
    ),
]

# The lab's own checks that start containers (DNS between services, pull, a write through a
# dataset): every upgrade scenario in the guest depends on them working, so a broken lab shows
# there too; they run by themselves with COMPOSEGUARD_ZFS_FULL=1 (about 3 min each under TCG).
containers = pytest.mark.skipif(
    os.environ.get("COMPOSEGUARD_ZFS_FULL") != "1",
    reason="the upgrade scenarios start containers too (COMPOSEGUARD_ZFS_FULL=1 runs this check)",
)

REGISTRY = "127.0.0.1:5000"
APP = f"{REGISTRY}/lab/app:v1"
BUSYBOX = f"{REGISTRY}/lab/busybox:1"
# Docker operations under TCG: image pulls, container starts and healthchecks take seconds each.
TIMEOUT = 300

# The images' own healthcheck (1 s interval, 3 s timeout) is tuned for the host; under TCG a
# busybox wget can take longer than that, so guest scenarios override it.
SLOW_HEALTHCHECK = {
    "test": ["CMD", "wget", "-q", "-O-", "http://127.0.0.1:8080/health"],
    "interval": "5s",
    "timeout": "20s",
    "start_period": "30s",
    "retries": 5,
}


def run(*args: str, timeout: float = TIMEOUT) -> str:
    """Run a command (argument list, no shell) and return its stdout; fail loudly."""
    try:
        proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(args)!r} timed out after {timeout}s\nstdout: {exc.stdout}\nstderr: {exc.stderr}"
        )
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)!r} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc.stdout


def fstype_and_source(path: str | Path) -> tuple[str, str]:
    """The filesystem type and source of the mount that holds PATH, as findmnt sees it."""
    out = run("findmnt", "-n", "-o", "FSTYPE,SOURCE", "--target", str(path)).split()
    return out[0], out[1]


@pytest.fixture
def dataset(pool: str) -> Iterator[tuple[str, Path]]:
    """A fresh dataset (name, mountpoint) for one test, destroyed afterwards."""
    name = f"{pool}/t-{uuid.uuid4().hex[:8]}"
    run("zfs", "create", name)
    yield name, Path(run("zfs", "get", "-H", "-o", "value", "mountpoint", name).strip())
    run("zfs", "destroy", "-r", name)


class Compose:
    """A throw-away compose project in a temporary folder, torn down with its volumes."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"cgguest{uuid.uuid4().hex[:8]}"

    def write(self, services: dict) -> None:
        # JSON is YAML: no need for a YAML writer to produce the compose file.
        (self.folder / "compose.yaml").write_text(json.dumps({"services": services}, indent=2))

    def __call__(self, *args: str, timeout: float = TIMEOUT) -> str:
        return run(
            "docker", "compose", "--project-directory", str(self.folder), "-p", self.name, *args,
            timeout=timeout,
        )


@pytest.fixture
def compose(tmp_path: Path) -> Iterator[Compose]:
    project = Compose(tmp_path)
    yield project
    if (tmp_path / "compose.yaml").exists():
        run("docker", "compose", "--project-directory", str(tmp_path), "-p", project.name,
            "down", "-v", "--remove-orphans", "-t", "5")


def test_docker_host_is_the_guest_daemon() -> None:
    assert os.environ.get("DOCKER_HOST") == "unix:///run/cgx/docker.sock"


def test_dockerd_uses_vfs_with_its_data_root_on_zfs(pool: str) -> None:
    info = json.loads(run("docker", "info", "--format", "{{json .}}"))
    assert info["Driver"] == "vfs", info["Driver"]
    root = info["DockerRootDir"]
    # The data root is the dataset POOL/docker itself, not a folder of some other filesystem.
    assert fstype_and_source(root) == ("zfs", f"{pool}/docker")
    assert Path(root) == Path(os.environ["COMPOSEGUARD_ZFS_MNT"]) / "docker"


def test_compose_is_v2() -> None:
    version = run("docker", "compose", "version", "--short").strip().lstrip("v")
    assert version.split(".")[0] == "2", version


def test_guest_registry_holds_the_lab_images() -> None:
    with urllib.request.urlopen(f"http://{REGISTRY}/v2/_catalog", timeout=60) as resp:  # noqa: S310
        repos = json.load(resp)["repositories"]
    assert {"lab/busybox", "lab/app", "lab/plain"} <= set(repos), repos
    with urllib.request.urlopen(f"http://{REGISTRY}/v2/lab/app/tags/list", timeout=60) as resp:  # noqa: S310
        assert {"v1", "v2", "v3"} <= set(json.load(resp)["tags"])


@containers
def test_compose_services_reach_each_other_by_name(compose: Compose) -> None:
    # client depends on a healthy web and fetches web's /version by its service name: that only
    # works with the project network's embedded DNS (bridge networking and iptables in the guest).
    compose.write(
        {
            "web": {"image": APP, "healthcheck": SLOW_HEALTHCHECK},
            "client": {
                "image": APP,
                "entrypoint": ["wget", "-q", "-O-", "http://web:8080/version"],
                "healthcheck": {"disable": True},
                "depends_on": {"web": {"condition": "service_healthy"}},
            },
        }
    )
    compose("up", "-d", "--wait", "web")
    assert compose("run", "--rm", "-T", "client").strip() == "v1"


@containers
def test_compose_pull_pulls_from_the_guest_registry(compose: Compose) -> None:
    image = f"{REGISTRY}/lab/plain:v2"
    # Only drop the registry tag: lab/plain:v2 keeps the image, so this deletes no layer.
    run("docker", "image", "rm", image)
    gone = subprocess.run(["docker", "image", "inspect", image], capture_output=True, timeout=TIMEOUT)
    assert gone.returncode != 0, f"{image} is still there after docker image rm"

    compose.write({"app": {"image": image}})
    compose("pull")

    digests = json.loads(run("docker", "image", "inspect", "--format", "{{json .RepoDigests}}", image))
    assert any(d.startswith(f"{REGISTRY}/lab/plain@sha256:") for d in digests), digests


@containers
def test_container_writes_through_a_bind_mounted_dataset(dataset: tuple[str, Path]) -> None:
    name, mnt = dataset
    assert fstype_and_source(mnt) == ("zfs", name)
    text = f"written in a container {uuid.uuid4().hex}"
    run(
        "docker", "run", "--rm", "-v", f"{mnt}:/data", BUSYBOX,
        "sh", "-c", f"echo '{text}' > /data/hello.txt && sync",
    )
    # Visible on the guest's side of the dataset, and captured by a snapshot like any data.
    assert (mnt / "hello.txt").read_text() == text + "\n"
    run("zfs", "snapshot", f"{name}@after")
    assert (mnt / ".zfs/snapshot/after/hello.txt").read_text() == text + "\n"
