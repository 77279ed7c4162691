"""Fixtures of the tests that run inside the OpenZFS guest."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.zfs.guest import POOL, get, zfs


@pytest.fixture(scope="module")
def pool() -> str:
    name = os.environ.get("COMPOSEGUARD_ZFS_POOL", "")
    assert name, "lab/zfs-guest.sh must export COMPOSEGUARD_ZFS_POOL"
    return name


@pytest.fixture
def datasets() -> Iterator[Callable[..., str]]:
    """``make(name, files, *create_options)``: a fresh dataset under POOL/d<random>, with
    ``files`` written into it; everything below POOL/d<random> destroyed afterwards (composeguard's
    holds released first)."""
    parent = f"{POOL}/d{secrets.token_hex(3)}"
    zfs("create", parent)

    def make(name: str, files: dict[str, str] | None = None, *opts: str) -> str:
        ds = f"{parent}/{name}"
        zfs("create", *opts, ds)
        mp = Path(get(ds, "mountpoint"))
        for rel, content in (files or {}).items():
            (mp / rel).write_text(content)
        return ds

    yield make
    subprocess.run(["zfs", "destroy", "-R", "-f", parent], capture_output=True)
    for line in zfs("list", "-H", "-o", "name", "-t", "snapshot").splitlines():
        if line.startswith(parent):
            subprocess.run(["zfs", "release", "composeguard", line], capture_output=True)
    subprocess.run(["zfs", "destroy", "-R", "-f", parent], capture_output=True)
