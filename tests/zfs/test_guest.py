"""Smoke tests for the OpenZFS guest itself (lab/zfs-guest.sh).

They only make sense inside the guest, where the Debian kernel runs with the DKMS-built
zfs.ko and lab/zfs-guest.sh has created a fresh pool:

    bash lab/zfs-guest.sh .venv/bin/python -m pytest -m zfs tests/zfs -q -p no:cacheprovider
"""

from __future__ import annotations

import os
import stat
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_GUEST = os.environ.get("COMPOSEGUARD_IN_ZFS_GUEST") == "1"

pytestmark = [
    pytest.mark.zfs,
    pytest.mark.skipif(
        not IN_GUEST,
        reason="needs the OpenZFS guest: run via lab/zfs-guest.sh (COMPOSEGUARD_IN_ZFS_GUEST!=1)",
    ),
]


def run(*args: str) -> str:
    """Run a command (argument list, no shell) and return its stdout; fail loudly."""
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(args)!r} exited {proc.returncode}\n"
            f"stdout: {proc.stdout}\nstderr: {proc.stderr}"
        )
    return proc.stdout


@pytest.fixture
def parent(pool: str) -> Iterator[str]:
    """A fresh parent dataset for one test, destroyed (with its children) afterwards."""
    name = f"{pool}/t-{uuid.uuid4().hex[:8]}"
    run("zfs", "create", name)
    yield name
    run("zfs", "destroy", "-r", name)


def mountpoint(dataset: str) -> Path:
    return Path(run("zfs", "get", "-H", "-o", "value", "mountpoint", dataset).strip())


def test_kernel_is_the_debian_one_with_dkms_zfs() -> None:
    release = os.uname().release
    modules = sorted(
        p.parent.parent.parent.name for p in Path("/lib/modules").glob("*/updates/dkms/zfs.ko")
    )
    assert release in modules, f"running kernel {release} is not one of {modules}"
    # And the module is really loaded in this kernel, not just present on disk.
    assert Path("/sys/module/zfs").is_dir()


def test_dev_zfs_is_a_character_device() -> None:
    st = os.stat("/dev/zfs")
    assert stat.S_ISCHR(st.st_mode)


def test_pool_is_listed(pool: str) -> None:
    names = run("zfs", "list", "-H", "-o", "name").splitlines()
    assert pool in names
    # It is mounted where lab/zfs-guest.sh said it would be.
    assert mountpoint(pool) == Path(os.environ["COMPOSEGUARD_ZFS_MNT"])
    assert os.path.ismount(os.environ["COMPOSEGUARD_ZFS_MNT"])


def test_snapshot_of_two_datasets_is_atomic(parent: str) -> None:
    a, b = f"{parent}/a", f"{parent}/b"
    for ds, text in ((a, "alpha\n"), (b, "beta\n")):
        run("zfs", "create", ds)
        (mountpoint(ds) / "data.txt").write_text(text)

    # One `zfs snapshot` with several names is one lzc_snapshot ioctl: one sync task, one txg.
    run("zfs", "snapshot", f"{a}@pre", f"{b}@pre")

    txgs = run("zfs", "get", "-H", "-p", "-o", "value", "createtxg", f"{a}@pre", f"{b}@pre")
    values = txgs.split()
    assert len(values) == 2 and all(v.isdigit() for v in values), txgs
    assert values[0] == values[1], f"snapshots in different txgs: {values}"

    # The snapshots hold what was written before them, even after the live data changes.
    (mountpoint(a) / "data.txt").write_text("changed\n")
    assert (mountpoint(a) / ".zfs/snapshot/pre/data.txt").read_text() == "alpha\n"
    assert (mountpoint(b) / ".zfs/snapshot/pre/data.txt").read_text() == "beta\n"
