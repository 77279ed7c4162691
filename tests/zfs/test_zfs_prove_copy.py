"""ZfsBackend.prove_copy: the restore method is proven with a probe file (no root, no ZFS:
the FICLONE ioctl is replaced, the decision logic is what is tested)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from composeguard.storage import probecopy
from composeguard.storage import zfs_paths as zfsmod
from composeguard.storage.base import Dataset
from composeguard.storage.zfs import ZfsBackend


@pytest.fixture
def ds(tmp_path: Path) -> Dataset:
    (tmp_path / "apps" / "app").mkdir(parents=True)
    return Dataset("zfs", "tank/apps", "tank", str(tmp_path))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """The probe files FICLONE saw (source, destination); zpool sync is not run."""
    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(zfsmod.execute, "run", lambda *a, **k: None)

    def ioctl(dst: int, req: int, src: int) -> int:
        assert req == 0x40049409
        seen.append((os.readlink(f"/proc/self/fd/{src}"), os.readlink(f"/proc/self/fd/{dst}")))
        os.write(dst, os.pread(src, 1 << 20, 0))  # what a clone gives: the same bytes
        return 0

    monkeypatch.setattr(probecopy.fcntl, "ioctl", ioctl)
    return seen


def test_copy_is_not_probed(ds: Dataset, calls: list) -> None:
    backend = ZfsBackend([])
    assert backend.prove_copy(ds, [f"{ds.mountpoint}/apps/app"], "copy") == (
        "copy", "no block cloning on this pool/module: a byte copy")
    assert calls == []


def test_clone_proved_with_a_probe_next_to_the_unit_path(ds: Dataset, calls: list) -> None:
    app = f"{ds.mountpoint}/apps/app"
    method, why = ZfsBackend([]).prove_copy(ds, [app], "clone")
    parent = f"{ds.mountpoint}/apps"
    assert (method, why) == ("clone", f"proved: block-cloned a probe file from tank/apps to {parent}")
    ((src, dst),) = calls
    assert os.path.dirname(src) == os.path.dirname(dst) == parent
    assert all(".composeguard-restore-" in os.path.basename(p) for p in (src, dst))
    assert sorted(os.listdir(parent)) == ["app"], "both probe files are removed"


def test_the_dataset_root_is_probed_inside_it(ds: Dataset, calls: list) -> None:
    """A unit path that is the dataset's root is restored entry by entry inside it."""
    method, why = ZfsBackend([]).prove_copy(ds, [ds.mountpoint], "clone")
    assert method == "clone" and why.endswith(f"to {ds.mountpoint}")
    assert os.path.dirname(calls[0][1]) == ds.mountpoint


def test_a_failed_clone_falls_back_to_copy(ds: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zfsmod.execute, "run", lambda *a, **k: None)

    def ioctl(dst: int, req: int, src: int) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(probecopy.fcntl, "ioctl", ioctl)
    app = f"{ds.mountpoint}/apps/app"
    assert ZfsBackend([]).prove_copy(ds, [app], "clone") == (
        "copy", f"block cloning failed here ({os.strerror(errno.EXDEV)}): a byte copy")
    assert sorted(os.listdir(f"{ds.mountpoint}/apps")) == ["app"], "no probe file is left behind"


def test_a_folder_that_cannot_be_written_falls_back_to_copy(ds: Dataset, calls: list) -> None:
    missing = f"{ds.mountpoint}/gone/app"  # its parent does not exist: the probe cannot be made
    method, why = ZfsBackend([]).prove_copy(ds, [missing], "clone")
    assert method == "copy" and why.startswith("block cloning failed here (") and calls == []
