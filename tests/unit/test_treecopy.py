"""copy_tree / tree_usage / remove_tree on the test machine's own filesystem (no root needed).

The rich tree of tests/treecompare.py is copied with method="copy" and compared field by
field; the rest checks the safety properties one at a time: symlinks are never followed, the
half-made copy is private, errors name the path and leave nothing behind, reflink never falls
back to a byte copy.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import socket
import stat
from pathlib import Path

import pytest

from composeguard.errors import StorageError
from composeguard.storage import treewalk as treecopy  # treecopy.FICLONE: the ioctl the copy clones with
from composeguard.storage.treecopy import copy_tree, remove_tree, tree_usage
from composeguard.storage.treemeta import TreeCopyError
from composeguard.storage.treewalk import CopyStats
from tests.treecompare import (
    ACL_GROUP,
    ACL_GROUP_OBJ,
    ACL_MASK,
    ACL_OTHER,
    ACL_UNDEFINED_ID,
    ACL_USER,
    ACL_USER_OBJ,
    DEEP,
    SPARSE_SIZE,
    assert_same_tree,
    build_tree,
    data_map,
    posix_acl,
    snapshot_tree,
    tree_differences,
)

U = ACL_UNDEFINED_ID


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A directory next to the source that symlinks in it point to: must never be touched."""
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret").write_text("outside the tree\n")
    (d / "sub").mkdir()
    (d / "sub" / "x").write_text("x\n")
    return d


@pytest.fixture
def rich(tmp_path: Path, outside: Path) -> tuple[Path, dict]:
    src = tmp_path / "src"
    info = build_tree(src, outside=str(outside))
    os.symlink(outside, src / "a" / "to-outside-dir")  # a symlink to a directory outside
    os.utime(src / "a" / "to-outside-dir", ns=(1_500_000_000_123_456_789, 1_400_000_000_987_654_321),
             follow_symlinks=False)
    return src, info


def _fs_type(path: Path) -> str:
    best = ("", "?")
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mnt, fstype, *_ = line.split()
            mnt = mnt.replace("\\040", " ")
            if (str(path) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best[0]):
                best = (mnt, fstype)
    return best[1]


def _reflink_works(tmp_path: Path) -> bool:
    a, b = tmp_path / "probe-a", tmp_path / "probe-b"
    a.write_bytes(b"x" * 4096)
    b.touch()
    try:
        with open(a, "rb") as fa, open(b, "r+b") as fb:
            fcntl.ioctl(fb.fileno(), treecopy.FICLONE, fa.fileno())
        return True
    except OSError:
        return False
    finally:
        a.unlink()
        b.unlink()


def _xattrs_work(tmp_path: Path, name: str = "user.probe", value: bytes = b"1") -> bool:
    p = tmp_path / "xattr-probe"
    p.touch()
    try:
        os.setxattr(p, name, value)
        return True
    except OSError:
        return False
    finally:
        p.unlink()


# -- the whole tree -----------------------------------------------------------------------------
def test_copy_keeps_every_field_of_the_rich_tree(rich, tmp_path: Path, outside: Path) -> None:
    src, info = rich
    outside_before = snapshot_tree(outside)
    before = snapshot_tree(src)  # (its readlink may move the symlinks' atimes: lstat them after)
    links = {p: os.lstat(p) for p in (src / "dangling", src / "abs-outside", src / "a" / "to-outside-dir")}
    dst = tmp_path / "copy"

    stats = copy_tree(str(src), str(dst), method="copy")

    # Symlink atimes (not in snapshot_tree: readlink moves them): as before the copy read the
    # links, checked before anything reads the copy's.
    for p, st in links.items():
        c = os.lstat(dst / p.relative_to(src))
        assert (c.st_atime_ns, c.st_mtime_ns) == (st.st_atime_ns, st.st_mtime_ns), p
    after = snapshot_tree(src)
    assert_same_tree(before, after)  # the source is untouched (its atimes too)
    copy = snapshot_tree(dst)
    assert_same_tree(before, copy)
    assert_same_tree(outside_before, snapshot_tree(outside))

    # Fields snapshot_tree leaves out or that need a closer look.
    assert copy[b"a/to-outside-dir"]["type"] == "symlink"
    assert copy[b"dir-link"] == before[b"dir-link"] and copy[b"dir-link"]["target"] == b"a/b"
    assert copy[b"a/suid"]["mode"] == "0o4755"
    assert copy[b"a/f640"]["mode"] == "0o640" and copy[b"a/b"]["mode"] == "0o700"
    assert copy[b"empty"]["type"] == "dir" and not os.listdir(dst / "empty")
    assert copy[b"bad\xff\xfename"]["type"] == "file" and copy[b"new\nline"]["type"] == "file"
    assert "données é/ü.txt".encode() in copy and b"with space/file with  spaces " in copy
    assert copy[b"fifo"]["type"] == "fifo" and copy[b"fifo"]["mode"] == "0o620"
    assert copy[b"/".join([b"deep", *[b"d"] * DEEP, b"bottom"])]["type"] == "file"
    assert copy[b"a/hl1"]["link"] == copy[b"hl3"]["link"] == copy[b"other/hl2"]["link"] == b"a/hl1"
    assert os.stat(dst / "a" / "hl1").st_ino == os.stat(dst / "hl3").st_ino != os.stat(src / "hl3").st_ino
    assert os.stat(dst / "hl3").st_nlink == 3
    if info["user_xattrs"]:
        assert copy[b"a/f640"]["xattrs"]["user.comment"] == b"a user attribute"
        assert copy[b"a"]["xattrs"]["user.dir-attr"] == b"on a dir"
        assert copy[b"sparse.bin"]["xattrs"]["user.empty"] == b""
    if info["holes"]:
        assert copy[b"sparse.bin"]["data"] == before[b"sparse.bin"]["data"]
        assert len(copy[b"sparse.bin"]["data"]) <= 3
        assert os.stat(dst / "sparse.bin").st_blocks * 512 <= 1 << 20, "the sparse file was filled in"
    assert os.stat(dst / "sparse.bin").st_size == SPARSE_SIZE

    n_files = sum(1 for r in before.values() if r["type"] == "file")
    n_dirs = sum(1 for r in before.values() if r["type"] == "dir")
    n_other = len(before) - n_files - n_dirs
    assert (stats.files, stats.dirs, stats.other) == (n_files, n_dirs, n_other)
    inodes = {os.lstat(os.fsencode(src) + b"/" + p).st_ino: r["size"] for p, r in before.items()
              if r["type"] == "file"}
    assert stats.bytes == sum(inodes.values())
    assert tree_usage(str(src))[0] == len(before) == stats.files + stats.dirs + stats.other


def test_sparse_file_stays_sparse(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "s", "wb") as f:
        f.truncate(64 << 20)
        f.seek(32 << 20)
        f.write(b"island")
    if os.stat(src / "s").st_blocks * 512 > 1 << 20:
        pytest.skip(f"{_fs_type(tmp_path)} at {tmp_path} keeps no holes")
    copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    assert os.stat(tmp_path / "dst" / "s").st_blocks * 512 <= 1 << 20
    with open(src / "s", "rb") as a, open(tmp_path / "dst" / "s", "rb") as b:
        assert data_map(a.fileno(), 64 << 20) == data_map(b.fileno(), 64 << 20)
        assert a.read() == b.read()


def test_falls_back_to_read_write_when_copy_file_range_cannot(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(3 << 20) + b"end")
    calls = []

    def exdev(*a, **k):
        calls.append(a)
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", exdev)
    copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    assert (tmp_path / "dst" / "f").read_bytes() == (src / "f").read_bytes()
    assert len(calls) == 1  # then read/write for the rest of the call


def test_copy_file_range_errors_other_than_unsupported_fail(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"data")

    def eio(*a, **k):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "copy_file_range", eio)
    with pytest.raises(TreeCopyError, match=r"copy the data of .*/src/f: Input/output error"):
        copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    assert not (tmp_path / "dst").exists()


def test_acls_are_copied_and_the_destination_folder_s_default_acl_is_not_inherited(tmp_path: Path) -> None:
    """ACLs written as the raw system.posix_acl_* xattrs (what setfacl does), so no acl package
    is needed. The copy is made in a folder with a default ACL: nothing of it may leak in."""
    if not _xattrs_work(tmp_path, "system.posix_acl_access",
                        posix_acl((ACL_USER_OBJ, 6, U), (ACL_GROUP_OBJ, 4, U), (ACL_OTHER, 4, U))):
        pytest.skip(f"no POSIX ACLs on {_fs_type(tmp_path)} at {tmp_path}")
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "plain").write_text("no acl\n")
    (src / "f").write_text("acl\n")
    os.chmod(src / "f", 0o640)
    acl = posix_acl((ACL_USER_OBJ, 6, U), (ACL_USER, 7, 4321), (ACL_GROUP_OBJ, 4, U), (ACL_MASK, 5, U),
                    (ACL_OTHER, 0, U))
    os.setxattr(src / "f", "system.posix_acl_access", acl)
    default = posix_acl((ACL_USER_OBJ, 7, U), (ACL_GROUP_OBJ, 5, U), (ACL_GROUP, 5, 8765), (ACL_MASK, 5, U),
                        (ACL_OTHER, 0, U))
    os.setxattr(src / "d", "system.posix_acl_default", default)
    (src / "d" / "inherited").write_text("inherits the default\n")
    assert os.listxattr(src / "d" / "inherited") == ["system.posix_acl_access"]
    parent = tmp_path / "parent"
    parent.mkdir()
    os.setxattr(parent, "system.posix_acl_default",
                posix_acl((ACL_USER_OBJ, 7, U), (ACL_USER, 7, 999), (ACL_GROUP_OBJ, 7, U), (ACL_MASK, 7, U),
                          (ACL_OTHER, 7, U)))
    before = snapshot_tree(src)
    copy_tree(str(src), str(parent / "copy"), method="copy")
    copy = snapshot_tree(parent / "copy")
    assert_same_tree(before, copy)
    assert copy[b"f"]["xattrs"]["system.posix_acl_access"] == acl
    assert copy[b"f"]["mode"] == "0o650"  # the mask is the group bits
    assert copy[b"plain"]["xattrs"] == {} and copy[b""]["xattrs"] == {}


def test_nocow_flag_is_kept_where_the_filesystem_has_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build = {"nocow": False}
    try:
        build = build_tree(src, outside="/nonexistent", nocow=True)
    except OSError as e:
        pytest.fail(f"building the tree: {e}")
    if not build["nocow"]:
        pytest.skip(f"no chattr +C on {_fs_type(tmp_path)} (Btrfs only; the lab test covers it)")
    copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    assert_same_tree(snapshot_tree(src), snapshot_tree(tmp_path / "dst"))


def test_an_xattr_the_target_refuses_is_an_error_except_on_symlinks(tmp_path: Path, monkeypatch) -> None:
    """Not silently dropped: a file's or directory's attribute that cannot be set fails the
    copy and names the attribute. On symlinks (where user.* is not allowed and some
    filesystems keep nothing) ENOTSUP/EPERM are skipped."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("x\n")
    os.symlink("f", src / "l")
    fake = {"user.kept": b"1", "user.refused": b"2"}

    def listxattr(ref, follow_symlinks=True):  # the source "has" the attributes everywhere
        return list(fake) if not isinstance(ref, int) or os.fstat(ref).st_ino in src_inodes else []

    def getxattr(ref, name, follow_symlinks=True):
        return fake[name]

    def setxattr(ref, name, value, flags=0, follow_symlinks=True):
        if name == "user.refused":
            raise OSError(errno.ENOTSUP if follow_symlinks else errno.EPERM, os.strerror(errno.ENOTSUP))

    src_inodes = {os.stat(src).st_ino, os.stat(src / "f").st_ino}
    monkeypatch.setattr(os, "listxattr", listxattr)
    monkeypatch.setattr(os, "getxattr", getxattr)
    monkeypatch.setattr(os, "setxattr", setxattr)
    monkeypatch.setattr(os, "removexattr", lambda *a, **k: None)
    with pytest.raises(TreeCopyError) as e:
        copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    assert str(e.value) == (f"cannot set the extended attribute user.refused on {tmp_path}/dst/f: "
                            "Operation not supported")
    assert not (tmp_path / "dst").exists()

    # Only the symlink has them: skipped, the copy is made.
    src_inodes.clear()
    copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    assert os.readlink(tmp_path / "dst" / "l") == "f"


# -- safety -------------------------------------------------------------------------------------
def test_symlinks_are_never_followed_nothing_outside_is_read_or_written(
    rich, tmp_path: Path, outside: Path, monkeypatch
) -> None:
    """Every path copy_tree hands to the kernel is recorded (resolving the directory descriptor
    it is relative to): none may be in the outside directory the tree's symlinks point to."""
    src, _ = rich
    before = snapshot_tree(outside)
    seen: list[str] = []
    real_readlink = os.readlink

    def where(path, dir_fd=None) -> str:
        if isinstance(path, int):
            return real_readlink(f"/proc/self/fd/{path}")
        p = os.fsdecode(path)
        m = re.fullmatch(r"/proc/self/fd/(\d+)/(.*)", p, re.S)
        if m:
            return real_readlink(f"/proc/self/fd/{m[1]}") + "/" + m[2]
        if dir_fd is not None and not os.path.isabs(p):
            return real_readlink(f"/proc/self/fd/{dir_fd}") + "/" + p
        return p

    def spy(name: str, *dir_fd_args: str):
        real = getattr(os, name)

        def wrapper(path, *a, **k):
            seen.append(where(path, k.get("dir_fd", k.get("src_dir_fd"))))
            return real(path, *a, **k)

        monkeypatch.setattr(os, name, wrapper)

    for name in ("open", "stat", "lstat", "listdir", "readlink", "listxattr", "getxattr", "mkdir", "mknod"):
        spy(name)
    copy_tree(str(src), str(tmp_path / "copy"), method="copy")
    monkeypatch.undo()

    assert seen, "the spy saw nothing"
    inside = [s for s in seen if s == str(outside) or s.startswith(str(outside) + "/")]
    assert not inside, f"copy_tree touched {inside[:5]}"
    assert not any(s.startswith(str(src / "a" / "to-outside-dir") + "/") for s in seen)
    assert_same_tree(before, snapshot_tree(outside))
    link = tmp_path / "copy" / "a" / "to-outside-dir"
    assert os.path.islink(link) and os.readlink(link) == str(outside)
    assert sorted(os.listdir(outside)) == ["secret", "sub"]


def test_half_made_copy_is_private(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    os.symlink("target", src / "sub" / "link")
    os.chmod(src, 0o755)
    os.chmod(src / "sub", 0o777)
    dst = tmp_path / "dst"
    modes = []
    real_symlink = os.symlink

    def symlink(*a, **k):
        modes.append((stat.S_IMODE(os.stat(dst).st_mode), stat.S_IMODE(os.stat(dst / "sub").st_mode)))
        return real_symlink(*a, **k)

    monkeypatch.setattr(os, "symlink", symlink)
    copy_tree(str(src), str(dst), method="copy")
    assert modes == [(0o700, 0o700)]
    assert stat.S_IMODE(os.stat(dst).st_mode) == 0o755
    assert stat.S_IMODE(os.stat(dst / "sub").st_mode) == 0o777


def test_existing_destination_is_refused_and_left_alone(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("new\n")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "keep").write_text("mine\n")
    with pytest.raises(TreeCopyError, match="already exists") as e:
        copy_tree(str(src), str(dst), method="copy")
    assert str(dst) in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, StorageError)
    assert os.listdir(dst) == ["keep"]
    os.symlink(src, tmp_path / "dst-link")
    with pytest.raises(TreeCopyError, match="already exists"):
        copy_tree(str(src), str(tmp_path / "dst-link"), method="copy")
    (tmp_path / "dst-file").write_text("")
    with pytest.raises(TreeCopyError, match="already exists"):
        copy_tree(str(src), str(tmp_path / "dst-file"), method="copy")


def test_source_must_be_a_real_directory(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_text("x\n")
    os.symlink(real, tmp_path / "link")
    with pytest.raises(TreeCopyError, match="is a symlink") as e:
        copy_tree(str(tmp_path / "link"), str(tmp_path / "dst"), method="copy")
    assert str(tmp_path / "link") in str(e.value)
    assert not (tmp_path / "dst").exists()
    with pytest.raises(TreeCopyError, match="not a directory"):
        copy_tree(str(real / "f"), str(tmp_path / "dst"), method="copy")
    with pytest.raises(TreeCopyError, match="No such file"):
        copy_tree(str(tmp_path / "missing"), str(tmp_path / "dst"), method="copy")
    with pytest.raises(TreeCopyError, match="No such file"):
        copy_tree(str(real), str(tmp_path / "no-parent" / "dst"), method="copy")
    with pytest.raises(TreeCopyError, match="unknown tree copy method"):
        copy_tree(str(real), str(tmp_path / "dst"), method="rsync")
    assert not (tmp_path / "dst").exists()


def test_copy_into_itself_is_refused_and_cleaned_up(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    with pytest.raises(TreeCopyError, match="inside it"):
        copy_tree(str(src), str(src / "a" / "copy"), method="copy")
    assert os.listdir(src / "a") == []


def test_a_failure_half_way_removes_the_partial_copy(tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    (src / "d1").mkdir(parents=True)
    (src / "d1" / "f").write_text("one\n")
    (src / "d2").mkdir()
    (src / "d2" / "g\nh").write_text("two\n")
    real_open = os.open

    def failing_open(path, flags, *a, **k):
        if path == b"g\nh" and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_open(path, flags, *a, **k)

    monkeypatch.setattr(os, "open", failing_open)
    with pytest.raises(TreeCopyError) as e:
        copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    monkeypatch.undo()
    assert str(e.value) == f"cannot create {tmp_path}/dst/d2/g\\nh: No space left on device"
    assert not (tmp_path / "dst").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads everything")
def test_unreadable_entry_names_the_path(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "locked").mkdir(parents=True)
    os.chmod(src / "locked", 0)
    try:
        with pytest.raises(TreeCopyError, match=r"src/locked: Permission denied"):
            copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    finally:
        os.chmod(src / "locked", 0o700)
    assert not (tmp_path / "dst").exists()


def test_sockets_are_skipped(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    (src / "f").write_text("x\n")
    sock_path = src / "sock"
    if len(str(sock_path)) >= 100:
        pytest.skip("tmp_path too long for a unix socket")
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(sock_path))
        stats = copy_tree(str(src), str(tmp_path / "d"), method="copy")
    finally:
        s.close()
    assert os.listdir(tmp_path / "d") == ["f"]
    assert stats == CopyStats(files=1, dirs=1, other=0, bytes=2)
    assert tree_usage(str(src))[0] == 2


def test_reflink_without_ficlone_fails_instead_of_copying_bytes(tmp_path: Path) -> None:
    if _reflink_works(tmp_path):
        pytest.skip(f"{_fs_type(tmp_path)} at {tmp_path} supports reflink (the lab test covers it)")
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "data").write_bytes(b"x" * 10000)
    with pytest.raises(TreeCopyError, match=r"cannot clone .*src/sub/data \(reflink\)"):
        copy_tree(str(src), str(tmp_path / "dst"), method="reflink")
    assert not (tmp_path / "dst").exists(), "the half-made copy was left behind"


def test_debug_log_names_method_and_totals(tmp_path: Path, caplog) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"12345")
    os.symlink("f", src / "l")
    with caplog.at_level(logging.DEBUG, logger="composeguard.treecopy"):
        copy_tree(str(src), str(tmp_path / "dst"), method="copy")
    msgs = [r.getMessage() for r in caplog.records if r.name == "composeguard.treecopy"]
    assert any("method=copy" in m and "1 files, 1 dirs, 1 other, 5 bytes" in m for m in msgs), msgs


# -- tree_usage ---------------------------------------------------------------------------------
def test_tree_usage_counts_entries_and_allocated_bytes_once_per_inode(tmp_path: Path) -> None:
    t = tmp_path / "t"
    (t / "sub").mkdir(parents=True)
    (t / "a").write_bytes(os.urandom(100_000))
    os.link(t / "a", t / "sub" / "a-again")
    (t / "sub" / "c").write_bytes(b"")
    (t / "sub" / "d").write_bytes(os.urandom(5000))
    os.symlink("/usr", t / "usr-link")  # not followed: /usr's size must not count
    os.mkfifo(t / "fifo")
    entries, used = tree_usage(str(t))
    assert entries == 8  # t, a, sub, sub/a-again, sub/c, sub/d, usr-link, fifo
    expected = (os.stat(t / "a").st_blocks + os.stat(t / "sub" / "d").st_blocks) * 512
    assert used == expected and used >= 100_000
    with pytest.raises(TreeCopyError, match="is a symlink"):
        tree_usage(str(t / "usr-link"))


# -- remove_tree --------------------------------------------------------------------------------
def test_remove_tree_never_follows_symlinks(rich, tmp_path: Path, outside: Path) -> None:
    src, _ = rich
    before = snapshot_tree(outside)
    dst = tmp_path / "copy"
    copy_tree(str(src), str(dst), method="copy")
    if os.geteuid() == 0:
        os.chmod(dst / "a" / "b", 0o500)  # a read-only folder in the copy (only root can empty it)
    assert shutil.rmtree.avoids_symlink_attacks
    remove_tree(str(dst))
    assert not os.path.lexists(dst)
    assert_same_tree(before, snapshot_tree(outside))
    assert (src / "a" / "to-outside-dir").is_symlink() and (src / "a" / "f640").exists()


def test_remove_tree_refuses_symlinks_and_files_and_ignores_missing(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    (d / "keep").write_text("x\n")
    os.symlink(d, tmp_path / "link")
    with pytest.raises(TreeCopyError, match="is a symlink"):
        remove_tree(str(tmp_path / "link"))
    with pytest.raises(TreeCopyError, match="not a directory"):
        remove_tree(str(d / "keep"))
    remove_tree(str(tmp_path / "missing"))
    assert (d / "keep").exists() and (tmp_path / "link").is_symlink()


# -- the comparison helper itself ---------------------------------------------------------------
def test_assert_same_tree_reports_differences_readably(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "f").write_text("1\n")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    os.chmod(b / "f", 0o600)
    os.chmod(a / "f", 0o644)
    (b / "new\nname").write_text("")
    diffs = tree_differences(snapshot_tree(a, atime=False), snapshot_tree(b, atime=False))
    assert "'f': mode: '0o644' != '0o600'" in diffs
    assert "'new\\nname': only in the second tree (file)" in diffs
    with pytest.raises(AssertionError, match="the trees differ"):
        assert_same_tree(snapshot_tree(a), snapshot_tree(b))


def test_copy_entry_copies_one_file_or_one_tree_under_the_same_name(tmp_path: Path) -> None:
    """copy_entry restores a single bind-mounted file (or a directory) into a staging folder."""
    from composeguard.storage.treecopy import copy_entry

    src = tmp_path / "src"
    src.mkdir()
    (src / "a.conf").write_text("setting=1\n")
    os.chmod(src / "a.conf", 0o640)
    os.utime(src / "a.conf", ns=(1_000_000_123, 2_000_000_456))
    (src / "other").write_text("not copied\n")
    (src / "dir").mkdir()
    (src / "dir" / "x").write_text("x\n")
    os.link(src / "dir" / "x", src / "dir" / "y")
    stage = tmp_path / "stage"
    stage.mkdir(mode=0o700)

    copy_entry(str(src), "a.conf", str(stage), method="copy")
    copy_entry(str(src), "dir", str(stage), method="copy")

    assert sorted(os.listdir(stage)) == ["a.conf", "dir"]
    st = os.lstat(stage / "a.conf")
    assert (stage / "a.conf").read_text() == "setting=1\n"
    assert (oct(st.st_mode & 0o7777), st.st_mtime_ns) == ("0o640", 2_000_000_456)
    assert os.lstat(stage / "dir" / "x").st_ino == os.lstat(stage / "dir" / "y").st_ino
    with pytest.raises(TreeCopyError):
        copy_entry(str(src), "a.conf", str(stage), method="copy")  # exists already
    with pytest.raises(TreeCopyError):
        copy_entry(str(src), "../src", str(stage), method="copy")
