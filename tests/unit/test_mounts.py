"""mountinfo parsing (REFERENCE §3.1) and the path -> mount lookup."""

from __future__ import annotations

import pytest

from composeguard.storage.mounts import Mount, mount_for, parse_mountinfo, read_mounts, unescape

MOUNTINFO = r"""22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro
25 22 0:23 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
36 22 0:39 /@data /mnt/pool rw,relatime shared:10 - btrfs /dev/vdb rw,ssd,subvolid=256,subvol=/@data
37 22 0:40 / /mnt/pool2 rw,relatime - btrfs /dev/vdc rw,space_cache=v2,subvolid=5,subvol=/
40 22 0:45 / /tank/my\040apps rw,noatime shared:1 master:2 - zfs tank/my\040apps rw,xattr,noacl
41 40 0:46 / /tank/my\040apps/.zfs/snapshot/before rw,relatime shared:21 - zfs tank/my\040apps@before ro
42 22 0:47 / /mnt/tab\011dir rw,relatime - tmpfs tmpfs rw,size=1024k
43 22 0:48 /sub/dir /srv/bind\134me rw,relatime shared:30 - zfs tank/data rw
44 22 0:49 / /mnt/a\040-\040b rw - tmpfs tmpfs rw
"""


def by_mountpoint(mounts: list[Mount], mp: str) -> Mount:
    found = [m for m in mounts if m.mountpoint == mp]
    assert len(found) == 1, f"{mp}: {found}"
    return found[0]


@pytest.fixture
def mounts() -> list[Mount]:
    return parse_mountinfo(MOUNTINFO)


def test_every_line_is_parsed(mounts):
    assert [m.mount_id for m in mounts] == [22, 25, 36, 37, 40, 41, 42, 43, 44]


def test_root_mount_fields(mounts):
    m = by_mountpoint(mounts, "/")
    # mount_id, parent_id, dev, root, mountpoint, options, fstype, source, super_options
    assert m == Mount(22, 1, "8:1", "/", "/", "rw,relatime", "ext4", "/dev/sda1", "rw,errors=remount-ro")


def test_btrfs_subvolume_mount_keeps_its_root(mounts):
    m = by_mountpoint(mounts, "/mnt/pool")
    assert m.root == "/@data"
    assert m.fstype == "btrfs"
    assert m.source == "/dev/vdb"
    assert m.dev == "0:39"
    assert "subvol=/@data" in m.super_options


def test_zfs_dataset_with_a_space_and_two_optional_fields(mounts):
    m = by_mountpoint(mounts, "/tank/my apps")
    assert m.source == "tank/my apps"
    assert m.fstype == "zfs"
    assert m.parent_id == 22
    assert m.options == "rw,noatime"  # the optional fields are not part of the options
    assert m.super_options == "rw,xattr,noacl"


def test_snapshot_automount_source_has_the_at_sign(mounts):
    m = by_mountpoint(mounts, "/tank/my apps/.zfs/snapshot/before")
    assert m.source == "tank/my apps@before"
    assert m.parent_id == 40


def test_tab_and_backslash_escapes(mounts):
    assert by_mountpoint(mounts, "/mnt/tab\tdir").fstype == "tmpfs"
    bind = by_mountpoint(mounts, "/srv/bind\\me")
    assert bind.root == "/sub/dir"
    assert bind.source == "tank/data"


def test_escaped_separator_in_a_mountpoint_does_not_split_the_line(mounts):
    m = by_mountpoint(mounts, "/mnt/a - b")
    assert (m.fstype, m.source) == ("tmpfs", "tmpfs")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (r"a\040b", "a b"),
        (r"a\011b", "a\tb"),
        (r"a\012b", "a\nb"),
        (r"a\134b", "a\\b"),
        (r"plain", "plain"),
        (r"\040\040", "  "),
    ],
)
def test_unescape(raw, expected):
    assert unescape(raw) == expected


def test_blank_and_malformed_lines_are_skipped():
    text = "\n   \nnot a mountinfo line\n1 2 3 - x\n" + MOUNTINFO.splitlines()[0] + "\n"
    mounts = parse_mountinfo(text)
    assert [m.mountpoint for m in mounts] == ["/"]


def test_missing_super_options_is_empty():
    (m,) = parse_mountinfo("50 22 0:50 / /x rw - tmpfs tmpfs")
    assert m.super_options == ""
    assert m.source == "tmpfs"


# -- mount_for ------------------------------------------------------------------------------


def test_mount_for_picks_the_longest_prefix(mounts):
    assert mount_for("/mnt/pool/app/db", mounts).mountpoint == "/mnt/pool"
    assert mount_for("/tank/my apps/x", mounts).mountpoint == "/tank/my apps"
    assert mount_for("/tank/my apps/.zfs/snapshot/before/f", mounts).source == "tank/my apps@before"
    assert mount_for("/etc/passwd", mounts).mountpoint == "/"


def test_mount_for_the_mountpoint_itself(mounts):
    assert mount_for("/mnt/pool", mounts).mountpoint == "/mnt/pool"
    assert mount_for("/", mounts).mountpoint == "/"


def test_mount_for_does_not_match_a_sibling_with_the_same_prefix(mounts):
    only_pool = [m for m in mounts if m.mountpoint in ("/", "/mnt/pool")]
    assert mount_for("/mnt/pool2/data", only_pool).mountpoint == "/"
    assert mount_for("/mnt/pool2/data", mounts).mountpoint == "/mnt/pool2"
    assert mount_for("/mnt/poolx", mounts).mountpoint == "/"


def test_mount_for_takes_the_last_of_equal_mountpoints():
    text = (
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "36 22 0:39 / /mnt/pool rw - btrfs /dev/vdb rw,subvol=/\n"
        "60 36 0:60 / /mnt/pool rw - zfs tank/over rw\n"
    )
    m = mount_for("/mnt/pool/data", parse_mountinfo(text))
    assert (m.mount_id, m.source) == (60, "tank/over")


def test_mount_for_order_of_lines_does_not_matter_for_the_longest_prefix():
    text = (
        "36 22 0:39 / /mnt/pool/deep rw - zfs tank/deep rw\n"
        "37 22 0:40 / /mnt/pool rw - zfs tank rw\n"
        "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"
    )
    assert mount_for("/mnt/pool/deep/x", parse_mountinfo(text)).source == "tank/deep"


def test_mount_for_without_mounts_is_none():
    assert mount_for("/anything", []) is None
    assert mount_for("/anything", parse_mountinfo("36 22 0:39 / /mnt rw - zfs t rw")) is None


def test_read_mounts_reads_a_file(tmp_path):
    f = tmp_path / "mountinfo"
    f.write_text(MOUNTINFO)
    assert read_mounts(str(f)) == parse_mountinfo(MOUNTINFO)
