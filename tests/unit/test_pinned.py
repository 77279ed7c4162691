"""Which passed-through commands get the pins, and the one-listing check of the fast path."""

from __future__ import annotations

from pathlib import Path

import pytest

from composeguard.pins.pinned import host_has_pins, named_services


@pytest.mark.parametrize(
    ("command", "args", "services"),
    [
        ("run", ["--rm", "app", "sh", "-c", "echo hi"], ["app"]),
        ("run", ["-e", "A=1", "--name", "x", "-T", "db", "psql"], ["db"]),
        ("run", ["--entrypoint=/bin/sh", "-v", "/a:/b", "web", "ls", "-l"], ["web"]),
        ("run", ["--rm"], []),
        ("create", ["--pull", "always", "app", "db"], ["app", "db"]),
        ("create", ["--scale", "app=2", "--force-recreate"], []),
        ("create", ["--", "app"], []),
    ],
)
def test_named_services(command: str, args: list[str], services: list[str]) -> None:
    assert named_services(command, args) == services


def test_host_has_pins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(tmp_path))
    assert not host_has_pins()  # no projects folder at all
    (tmp_path / "projects" / "web" / "txns").mkdir(parents=True)
    assert not host_has_pins()  # a project with history but no pins
    (tmp_path / "projects" / "db").mkdir()
    (tmp_path / "projects" / "db" / "pins.yaml").write_text("services: {}\n")
    assert host_has_pins()

