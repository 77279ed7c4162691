"""storage/safedir.py: folders opened without following links, composeguard's own folders
recognised by being root-only, renames and swaps by descriptor. The restores that use it are
tested on the lab (tests/lab/test_hostile_fs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composeguard.errors import StorageError
from composeguard.storage import safedir

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="composeguard's own folders are root's")


def test_open_dir_refuses_a_symlink_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "real" / "data").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    fd = safedir.open_dir(str(tmp_path / "real" / "data"))
    os.close(fd)
    with pytest.raises(StorageError, match="is a symlink or not a folder"):
        safedir.open_dir(str(tmp_path / "link" / "data"))
    with pytest.raises(StorageError, match="not an absolute path"):
        safedir.open_dir("relative/path")


def test_the_descriptor_follows_the_folder_not_its_name(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    fd = safedir.open_dir(str(tmp_path / "data"))
    try:
        (tmp_path / "data").rename(tmp_path / "moved")
        (tmp_path / "data").symlink_to("/etc")
        os.mkdir("made-here", dir_fd=fd)
        assert (tmp_path / "moved" / "made-here").is_dir()
        assert not Path("/etc/made-here").exists()
    finally:
        os.close(fd)


@root_only
def test_private_dir_is_made_0700_and_used_again(tmp_path: Path) -> None:
    pfd = safedir.open_dir(str(tmp_path))
    try:
        fd = safedir.private_dir(pfd, "stage", "stage")
        os.close(fd)
        st = os.lstat(tmp_path / "stage")
        assert st.st_mode & 0o777 == 0o700 and st.st_uid == 0
        os.close(safedir.private_dir(pfd, "stage", "stage"))  # a killed run's own folder
    finally:
        os.close(pfd)


@root_only
@pytest.mark.parametrize("planted", ["world-writable", "other-owner", "symlink", "file"])
def test_a_planted_name_is_refused_and_left_alone(tmp_path: Path, planted: str) -> None:
    p = tmp_path / "stage"
    if planted == "symlink":
        (tmp_path / "target").mkdir(mode=0o700)
        p.symlink_to(tmp_path / "target")
    elif planted == "file":
        p.write_text("x")
    else:
        p.mkdir(mode=0o700)
        (p / "keep").write_text("theirs")
        if planted == "world-writable":
            os.chmod(p, 0o777)
        else:
            os.chown(p, 65534, 65534)
    pfd = safedir.open_dir(str(tmp_path))
    try:
        with pytest.raises(StorageError, match="was not made by composeguard"):
            safedir.private_dir(pfd, "stage", str(p))
        with pytest.raises(StorageError, match="not a folder composeguard made"):
            safedir.remove_private(pfd, "stage", str(p))
    finally:
        os.close(pfd)
    assert os.path.lexists(p)
    if planted in ("world-writable", "other-owner"):
        assert (p / "keep").read_text() == "theirs"


def test_exchange_and_rename_by_descriptor(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("A")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("B")
    fd = safedir.open_dir(str(tmp_path))
    try:
        assert safedir.exchange(fd, "a", fd, "b", "a/b")  # ext4 and tmpfs have RENAME_EXCHANGE
        assert (tmp_path / "a" / "x").read_text() == "B" and (tmp_path / "b").read_text() == "A"
        safedir.rename(fd, "b", fd, "c", "b to c")
        assert (tmp_path / "c").read_text() == "A"
        with pytest.raises(StorageError, match="cannot move"):
            safedir.rename(fd, "missing", fd, "d", "missing to d")
    finally:
        os.close(fd)
