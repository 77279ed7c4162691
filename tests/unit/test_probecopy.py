"""The clone probe run at plan time (storage/probecopy.py): no root, real files."""

from __future__ import annotations

import errno
import os

import pytest

from composeguard.storage import probecopy


def test_a_filesystem_without_reflink_is_reported_and_the_probe_files_are_gone(tmp_path):
    src, dst = tmp_path / "snap", tmp_path / "live"
    src.mkdir()
    dst.mkdir()
    why = probecopy.clone_probe(str(src), str(dst))
    if os.statvfs(tmp_path).f_fsid and why == "":  # a tmp on Btrfs/XFS really clones
        pytest.skip("the temporary directory's filesystem can clone files")
    assert why  # ext4/tmpfs: "Operation not supported" / "Inappropriate ioctl for device"
    assert list(src.iterdir()) == [] and list(dst.iterdir()) == []


def test_exdev_names_the_old_kernel(tmp_path, monkeypatch):
    def ioctl(fd, request, arg):
        assert request == probecopy.FICLONE
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    monkeypatch.setattr(probecopy.fcntl, "ioctl", ioctl)
    why = probecopy.clone_probe(str(tmp_path), str(tmp_path), exdev_hint=probecopy.OLD_KERNEL)
    assert "Linux before 5.18" in why and os.strerror(errno.EXDEV) in why
    assert list(tmp_path.iterdir()) == []


def test_a_clone_that_works_returns_nothing_and_the_folders_keep_their_times(tmp_path, monkeypatch):
    def ioctl(dst, request, src):
        os.write(dst, os.pread(src, 1 << 16, 0))  # what a clone gives: the same bytes
        return 0

    monkeypatch.setattr(probecopy.fcntl, "ioctl", ioctl)
    src, dst = tmp_path / "snap", tmp_path / "live"
    src.mkdir()
    dst.mkdir()
    os.utime(dst, ns=(1_000_000_000, 2_000_000_000))
    synced = []
    assert probecopy.clone_probe(str(src), str(dst), before_clone=lambda: synced.append(1)) == ""
    assert synced == [1]
    assert list(src.iterdir()) == [] and list(dst.iterdir()) == []
    assert os.stat(dst).st_mtime_ns == 2_000_000_000, "plan leaves the unit's folder looking untouched"


def test_a_clone_of_the_wrong_size_is_no_clone(tmp_path, monkeypatch):
    monkeypatch.setattr(probecopy.fcntl, "ioctl", lambda fd, request, arg: 0)
    assert "wrong size" in probecopy.clone_probe(str(tmp_path), str(tmp_path))


def test_a_folder_that_cannot_be_written_is_a_reason_not_a_crash(tmp_path):
    assert probecopy.clone_probe(str(tmp_path / "missing"), str(tmp_path))


def test_the_restore_writes_next_to_a_folder_and_inside_the_root(tmp_path):
    (tmp_path / "app").mkdir()
    assert probecopy.restore_target_dir(str(tmp_path / "app"), str(tmp_path)) == str(tmp_path)
    assert probecopy.restore_target_dir(str(tmp_path), str(tmp_path)) == str(tmp_path)
