"""Exclusive or shared (storage/usage.py), on real temporary directories laid out like the
layouts self-hosters really have; container lists are made up (no Docker needed)."""

from __future__ import annotations

import os
from pathlib import Path

from composeguard.compose.docker import ContainerUse
from composeguard.storage.base import Dataset
from composeguard.storage.mounts import Mount
from composeguard.storage.usage import analyse, minimal_paths, uncovered_entries


def ds(root: Path) -> Dataset:
    return Dataset("btrfs", str(root), "/dev/loop0", str(root.parent))


def container(name: str, *paths: Path, project: str = "other") -> ContainerUse:
    return ContainerUse(name, name, project, "svc", tuple(("bind", str(p)) for p in paths))


def mount(mp: Path, fstype: str = "tmpfs", source: str = "tmpfs") -> Mount:
    return Mount(99, 1, "0:99", "/", str(mp), "rw", fstype, source, "rw")


def layout(tmp_path: Path, *dirs: str, files: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "docker"
    for d in dirs:
        (root / d).mkdir(parents=True)
    for f in files:
        (root / f).write_text("x")
    return root


def test_per_app_dataset_is_exclusive(tmp_path: Path) -> None:
    root = layout(tmp_path, "data", "config")
    use = analyse(ds(root), str(root), [str(root / "data"), str(root / "config")], [], None, [])
    assert use.exclusive and use.restore == "whole" and not use.conflicts


def test_volume_at_the_dataset_root_is_exclusive(tmp_path: Path) -> None:
    root = layout(tmp_path, "x", files=("a.db",))
    use = analyse(ds(root), str(root), [str(root)], [], None, [])
    assert use.restore == "whole"


def test_synology_share_with_an_app_per_directory_is_shared(tmp_path: Path) -> None:
    root = layout(tmp_path, "a", "b", files=("notes.txt",))
    b = container("b-1", root / "b", project="b")
    use = analyse(ds(root), str(root), [str(root / "a")], [b], None, [])
    assert use.restore == "paths" and use.unit_paths == [str(root / "a")]
    assert any("b-1 of project b" in o for o in use.others)
    assert any("notes.txt" in o for o in use.others)
    assert not use.conflicts


def test_a_stopped_directory_of_another_app_still_makes_it_shared(tmp_path: Path) -> None:
    # no container at all mounts b/ (its app is down): b/ is still someone's data
    root = layout(tmp_path, "a", "b")
    use = analyse(ds(root), str(root), [str(root / "a")], [], None, [])
    assert use.restore == "paths" and any(str(root / "b") in o for o in use.others)


def test_a_container_mounting_inside_the_units_data_is_a_conflict(tmp_path: Path) -> None:
    root = layout(tmp_path, "a/conf", "b")
    other = container("spy", root / "a" / "conf")
    use = analyse(ds(root), str(root), [str(root / "a"), str(root / "b")], [other], None, [])
    assert use.conflicts and "spy" in use.conflicts[0]


def test_a_backup_container_mounting_the_whole_share_is_not_a_conflict(tmp_path: Path) -> None:
    root = layout(tmp_path, "a")
    backup = container("duplicati", root)
    use = analyse(ds(root), str(root), [str(root / "a")], [backup], None, [])
    assert not use.conflicts and use.restore == "paths"


def test_containers_elsewhere_do_not_matter(tmp_path: Path) -> None:
    root = layout(tmp_path, "a")
    (tmp_path / "dockerish").mkdir()
    elsewhere = container("x", tmp_path / "dockerish", tmp_path / "docker-other")
    use = analyse(ds(root), str(root), [str(root / "a")], [elsewhere], None, [])
    assert use.restore == "whole"


def test_data_root_and_os_root_are_never_exclusive(tmp_path: Path) -> None:
    root = layout(tmp_path, "volumes/v/_data")
    use = analyse(ds(root), str(root), [str(root / "volumes/v/_data")], [], str(root), [])
    assert use.restore == "paths" and any("data-root" in o for o in use.others)
    os_root = analyse(Dataset("zfs", "rpool/ROOT/debian", "rpool", "/"), "/", ["/srv/x"], [], None, [])
    assert "it is the OS root" in os_root.others


def test_a_mount_below_a_restored_path_is_a_conflict(tmp_path: Path) -> None:
    root = layout(tmp_path, "a/cache", "b")
    use = analyse(ds(root), str(root), [str(root / "a")], [], None, [mount(root / "a" / "cache")])
    assert use.conflicts and "cache" in use.conflicts[0]
    # a ZFS snapshot automounted under .zfs is not: it is ZFS's own, read-only
    snap = mount(root / ".zfs" / "snapshot" / "s", "zfs", "pool/x@s")
    assert not analyse(ds(root), str(root), [str(root)], [], None, [snap]).conflicts


def test_nested_subvolumes(tmp_path: Path) -> None:
    root = layout(tmp_path, "a/sub", "b")
    inside = analyse(ds(root), str(root), [str(root / "a")], [], None, [], nested=[str(root / "a" / "sub")])
    assert inside.conflicts
    beside = analyse(ds(root), str(root), [str(root / "a")], [], None, [], nested=[str(root / "b")])
    assert not beside.conflicts and beside.restore == "paths"


def test_own_folders_are_not_other_data(tmp_path: Path) -> None:
    root = layout(tmp_path, "a", ".composeguard-snapshots", ".a.composeguard-old-T1")
    assert uncovered_entries(str(root), [str(root / "a")]) == []


def test_only_the_way_to_the_unit_is_listed(tmp_path: Path) -> None:
    root = layout(tmp_path, "apps/a/deep", "apps/b", "media")
    os.symlink("/etc", root / "apps" / "link")
    found = uncovered_entries(str(root), [str(root / "apps" / "a")])
    want = [str(root / "apps" / "b"), str(root / "apps" / "link"), str(root / "media")]
    assert sorted(found) == sorted(want)


def test_minimal_paths_drops_paths_inside_others() -> None:
    assert minimal_paths(["/s/a/db", "/s/a", "/s/ab", "/s/a/"]) == ["/s/a", "/s/ab"]
