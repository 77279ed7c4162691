"""Clone, the trial's journal field: a JSON round trip keeps every field."""

from __future__ import annotations

import json

from composeguard.storage.base import Clone, Dataset


def test_clone_json_round_trip() -> None:
    for c in (
        Clone(
            Dataset("zfs", "tank/app/db", "tank", "/srv/app/db"),
            "tank/app.composeguard-failed-T/db",
            "/run/composeguard/trial/T/tank/app/db",
        ),
        Clone(
            Dataset("btrfs", "/top/@data", "/dev/sdb", "/top", root="/srv/data"),
            "/top/.composeguard-snapshots/p/T/trial/@data",
            "/top/.composeguard-snapshots/p/T/trial/@data",
        ),
    ):
        back = Clone.from_json(json.loads(json.dumps(c.to_json())))
        assert back == c
        assert back.dataset.root == c.dataset.root
        assert set(c.to_json()) == {"dataset", "name", "files_at"}
