"""Docker's zfs storage driver (step 13, point 4), end to end in the OpenZFS guest.

With ``--storage-driver zfs`` every image layer and container is a child dataset of the
data-root dataset (``mountpoint=legacy``, mounted under ``<data-root>/zfs/graph/<id>``). An
app whose named volume lives in that data-root fails its upgrade and is rolled back: its data
comes back, and no layer dataset carries a composeguard snapshot or hold, so ``docker rm``
still destroys them.

The guest's lab dockerd (lab/guest-docker.sh) uses vfs for the other scenarios, so this one
starts a second dockerd of its own (socket, exec-root and data-root dataset of its own; the
lab's containerd under another namespace; no default bridge, no iptables, its own address
pool, so that the two daemons never touch each other's networks). About four minutes under
TCG: only with COMPOSEGUARD_ZFS_FULL=1.

    COMPOSEGUARD_ZFS_FULL=1 bash lab/zfs-guest.sh --docker .venv/bin/python -m pytest -q \\
        -p no:cacheprovider -m zfs tests/zfs/test_zfs_storage_driver.py
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.zfs,
    pytest.mark.skipif(
        not (os.environ.get("COMPOSEGUARD_IN_ZFS_GUEST") == "1"
             and os.environ.get("COMPOSEGUARD_LAB_STORAGE") == "zfs"
             and os.environ.get("COMPOSEGUARD_ZFS_FULL") == "1"),
        reason="a Docker scenario in the OpenZFS guest: COMPOSEGUARD_ZFS_FULL=1 lab/zfs-guest.sh --docker",
    ),
]

RUN = Path("/run/cgz")
SOCK = RUN / "docker.sock"
CONTAINERD = "/run/cgx/containerd/containerd.sock"  # lab/guest-docker.sh's containerd
DATA = {"db.txt": "precious data D\n", "users.csv": "id,name\n1,ada\n"}


def zfs(*args: str) -> str:
    return subprocess.run(["zfs", *args], check=True, capture_output=True, text=True).stdout


def docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", "-H", f"unix://{SOCK}", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def zfs_dockerd(pool: str) -> Iterator[str]:
    """A second dockerd with the zfs storage driver on the dataset POOL/dockerzfs."""
    ds = f"{pool}/dockerzfs"
    zfs("create", ds)
    root = zfs("get", "-H", "-o", "value", "mountpoint", ds).strip()
    RUN.mkdir(parents=True, exist_ok=True)
    (RUN / "daemon.json").write_text("{}")
    log = open(RUN / "dockerd.log", "w")  # noqa: SIM115 - closed in the teardown
    proc = subprocess.Popen(
        ["dockerd", "--config-file", str(RUN / "daemon.json"), "--data-root", root,
         "--exec-root", str(RUN), "--pidfile", str(RUN / "dockerd.pid"), "-H", f"unix://{SOCK}",
         "--containerd", CONTAINERD, "--containerd-namespace", "cgzfs",
         "--containerd-plugins-namespace", "cgzfs-plugins", "--storage-driver", "zfs",
         "--iptables=false", "--bridge=none", "--default-address-pool", "base=10.213.0.0/16,size=24"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        while docker("info", timeout=30).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (RUN / "dockerd.log").read_text()[-3000:]
                pytest.fail(f"the zfs-driver dockerd did not start:\n{tail}")
            time.sleep(1)
        assert json.loads(docker("info", "--format", "{{json .Driver}}").stdout) == "zfs"
        yield ds
    finally:
        ids = docker("ps", "-aq").stdout.split()
        if ids:
            docker("rm", "-f", *ids)
        proc.terminate()
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(30)
        log.close()
        for snap in zfs("list", "-H", "-r", "-o", "name", "-t", "snapshot", ds).split():
            subprocess.run(["zfs", "release", "composeguard", snap], capture_output=True)
        subprocess.run(["zfs", "destroy", "-R", "-f", ds], capture_output=True)


def test_named_volume_in_a_zfs_driver_data_root_rolls_back_and_layers_stay_free(
    zfs_dockerd: str, tmp_path: Path
) -> None:
    from tests.lab.labproject import FAST, LabProject, app_service, tree

    ds = zfs_dockerd
    p = LabProject(tmp_path)
    p.env["DOCKER_HOST"] = f"unix://{SOCK}"  # the lab's push goes through the vfs dockerd
    p.push("lab/app:v1", "app")
    p.write_compose({
        "x-composeguard": FAST,
        "services": {"app": app_service(f"{p.repo}/app:latest", "data")},  # type: ignore[arg-type]
        "volumes": {"data": {}},
    })
    try:
        r = p.cg("up", "-d", "--wait")
        assert r.returncode == 0, r.stderr
        vol = Path(json.loads(docker("volume", "inspect", f"{p.name}_data").stdout)[0]["Mountpoint"])
        assert vol.is_relative_to(zfs("get", "-H", "-o", "value", "mountpoint", ds).strip())
        for rel, content in DATA.items():
            (vol / rel).write_text(content)
        before = tree(vol)
        p.push("lab/app:v2", "app")  # the tag moves to the bad image

        r = p.cg("up", "-d", "--pull", "always")

        assert r.returncode == 3, r.stderr
        assert tree(vol) == before
        names = zfs("list", "-H", "-r", "-o", "name", "-t", "filesystem,volume", ds).split()
        layers = [n for n in names if n != ds and ".composeguard-" not in n]
        assert layers, f"the zfs driver made no layer datasets under {ds}: {names}"
        snaps = zfs("list", "-H", "-r", "-o", "name", "-t", "snapshot", ds).split()
        assert [s for s in snaps if s.startswith(f"{ds}@composeguard-")], "the data-root is snapshotted"
        # the driver snapshots layers itself (<layer>@<number>, the origin of the next layer):
        # none of composeguard's, and no composeguard hold on any of them
        on_layers = [s for s in snaps if s.split("@")[0] in layers]
        assert not [s for s in on_layers if "@composeguard-" in s], on_layers
        holds = zfs("holds", "-H", *on_layers).splitlines() if on_layers else []
        assert not [h for h in holds if "\tcomposeguard\t" in h], holds
        cid = json.loads(docker("inspect", f"{p.name}-app-1").stdout)[0]["Id"]
        rm = docker("rm", "-f", cid)
        assert rm.returncode == 0, rm.stderr
        # the container's own layer datasets (named by layer ids, not the container id) are gone
        left = zfs("list", "-H", "-r", "-o", "name", "-t", "filesystem,volume", ds).split()
        assert set(left) < set(names), (names, left)
    finally:
        p.compose("down", "-v", "-t", "5", check=False)
