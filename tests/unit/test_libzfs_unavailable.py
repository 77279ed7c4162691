"""Without /dev/zfs the binding raises a clear error; the process does not abort."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(os.path.exists("/dev/zfs"), reason="ZFS is loaded here")
def test_no_dev_zfs_is_a_clear_error_not_an_abort() -> None:
    code = (
        "from composeguard.storage.libzfs_core import library, ZfsUnavailable\n"
        "try:\n    library()\nexcept ZfsUnavailable as e:\n    print('unavailable:', e)\n"
        "print('still alive')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr  # a SIGABRT would be -6
    assert "unavailable:" in proc.stdout
    assert "/dev/zfs" in proc.stdout or "not installed" in proc.stdout
    assert "still alive" in proc.stdout
