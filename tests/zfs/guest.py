"""What the tests that run inside the OpenZFS guest (lab/zfs-guest.sh) share."""

from __future__ import annotations

import os
import subprocess

import pytest

POOL = os.environ.get("COMPOSEGUARD_ZFS_POOL", "cgtest")
GUEST_ONLY = [
    pytest.mark.zfs,
    pytest.mark.skipif(os.environ.get("COMPOSEGUARD_IN_ZFS_GUEST") != "1",
                       reason="runs inside the OpenZFS guest (lab/zfs-guest.sh)"),
]


def zfs(*args: str) -> str:
    return subprocess.run(["zfs", *args], check=True, capture_output=True, text=True).stdout


def get(name: str, prop: str) -> str:
    return zfs("get", "-H", "-p", "-o", "value", prop, name).strip()


def backend():  # noqa: ANN201 - a ZfsBackend (imported inside the guest only)
    from composeguard.storage.mounts import read_mounts
    from composeguard.storage.zfs import ZfsBackend

    return ZfsBackend(read_mounts())
