"""provision's pure parts: the hardlink check, the new dataset's name, the journal record."""

from __future__ import annotations

import os
from pathlib import Path

from composeguard.provision.plan import Move, ProvisionPlan, describe, hardlinks_leaving
from composeguard.storage.base import Dataset
from composeguard.storage.newdataset import new_name

TANK = Dataset("zfs", "tank/appdata", "tank", "/tank/appdata")
POOL = Dataset("btrfs", "/pool/docker", "/dev/sdb", "/pool")


def test_hardlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "a").write_text("x")
    os.link(tmp_path / "db" / "a", tmp_path / "db" / "b")
    assert hardlinks_leaving(str(tmp_path / "db")) == ""


def test_hardlink_leaving_the_folder_is_named(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "outside").write_text("x")
    os.link(tmp_path / "outside", tmp_path / "db" / "inside")
    assert hardlinks_leaving(str(tmp_path / "db")) == str(tmp_path / "db" / "inside")


def test_symlinks_are_not_followed(tmp_path: Path) -> None:
    (tmp_path / "db").mkdir()
    (tmp_path / "outside").write_text("x")
    os.link(tmp_path / "outside", tmp_path / "outside2")
    (tmp_path / "db" / "link").symlink_to(tmp_path / "outside")
    assert hardlinks_leaving(str(tmp_path / "db")) == ""


def test_zfs_child_of_a_folder_directly_in_the_dataset_inherits_its_mountpoint() -> None:
    assert new_name(TANK, "/tank/appdata/nextcloud") == ("tank/appdata/nextcloud", False)


def test_zfs_child_of_a_deeper_folder_gets_its_own_mountpoint() -> None:
    assert new_name(TANK, "/tank/appdata/arrs/sonarr") == ("tank/appdata/arrs_sonarr", True)


def test_zfs_name_characters_zfs_does_not_allow_are_replaced() -> None:
    assert new_name(TANK, "/tank/appdata/my data") == ("tank/appdata/my_data", True)


def test_btrfs_subvolume_is_the_path_itself() -> None:
    assert new_name(POOL, "/pool/docker/app") == ("/pool/docker/app", False)


def test_move_survives_the_journal_round_trip() -> None:
    m = Move(["db"], "/tank/appdata/db", TANK, "tank/appdata/db", {"recordsize": "8K"}, "PostgreSQL",
             "copy", 5, "/tank/appdata/db.composeguard-provision-x", ["aside"])
    assert Move.from_json(m.to_json()) == m


def test_describe_says_what_would_happen() -> None:
    m = Move(["db", "backup"], "/tank/appdata/db", TANK, "tank/appdata/db", {"recordsize": "8K"},
             "PostgreSQL", "copy", 3 << 20)
    lines = describe(ProvisionPlan(moves=[m], refusals=["no room"], warnings=["snapshots without -r"]))
    assert lines[0] == (
        "would make zfs tank/appdata/db at /tank/appdata/db (recordsize=8K; PostgreSQL) for db, backup, "
        "moving the data in by copy, 3.0 MiB"
    )
    assert "warning: snapshots without -r" in lines and "CANNOT: no room" in lines
