"""Fixtures of the tests that run inside the OpenZFS guest."""

from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="module")
def pool() -> str:
    name = os.environ.get("COMPOSEGUARD_ZFS_POOL", "")
    assert name, "lab/zfs-guest.sh must export COMPOSEGUARD_ZFS_POOL"
    return name
