"""The transaction journal and the state-directory primitives under it."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest

from composeguard.errors import ConfigError, GuardError
from composeguard.state import project_dir, read_json, safe_name, write_atomic, write_json
from composeguard.upgrade.journal import (
    ABORTED,
    COMMITTED,
    ROLLED_BACK,
    Journal,
    ServiceChange,
    projects_with_journals,
)


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def make(txn: str, project: str = "shop", outcome: str | None = None) -> Journal:
    j = Journal(id=txn, project=project, command="up", created="2025-01-01T00:00:00+00:00")
    if outcome:
        j.outcome = outcome
    j.save()
    return j


# -- Journal --------------------------------------------------------------------------------


def test_new_id_format_and_fields(state_dir):
    j = Journal.new("shop", "update")
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", j.id), j.id
    assert j.project == "shop" and j.command == "update"
    assert j.phase == "started" and j.outcome is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", j.created), j.created
    # the id's timestamp is the creation time
    assert j.id[:8] == j.created[:10].replace("-", "")
    assert not j.path.exists()  # new() alone writes nothing


def test_new_ids_differ(state_dir):
    assert len({Journal.new("shop", "up").id for _ in range(20)}) > 1


def test_step_persists(state_dir):
    j = Journal.new("shop", "up")
    j.changes["app"] = ServiceChange(
        service="app",
        old_image_id="sha256:old",
        old_ref="reg/app@sha256:1",
        old_digest="reg/app@sha256:1",
        new_image_id="sha256:new",
        new_ref="reg/app:latest",
        new_digest=None,
    )
    j.unit = ["app", "db"]
    j.step("snapshot", datasets=["tank/app", "tank/db"])
    assert j.phase == "snapshot"
    assert j.steps[-1]["phase"] == "snapshot"
    assert j.steps[-1]["datasets"] == ["tank/app", "tank/db"]
    assert j.path == state_dir / "projects" / "shop" / "txns" / f"{j.id}.json"

    again = Journal.load("shop", j.id)
    assert again == j
    assert isinstance(again.changes["app"], ServiceChange)
    assert again.changes["app"].new_digest is None

    j.step("start")
    again = Journal.load("shop", j.id)
    assert [s["phase"] for s in again.steps] == ["snapshot", "start"]
    assert again.phase == "start"


def test_journal_file_is_private_json(state_dir):
    j = Journal.new("shop", "up")
    j.step("record")
    assert mode(j.path) == 0o600
    assert mode(j.path.parent) == 0o700
    assert json.loads(j.path.read_text())["id"] == j.id


def test_finish_sets_the_outcome(state_dir):
    j = Journal.new("shop", "up")
    j.step("probe")
    j.finish(ROLLED_BACK, "app: probe http: 500")
    again = Journal.load("shop", j.id)
    assert again.outcome == ROLLED_BACK
    assert again.reason == "app: probe http: 500"
    assert again.finished is not None
    assert again.phase == ROLLED_BACK
    assert again.steps[-1]["phase"] == ROLLED_BACK


def test_finish_without_reason_keeps_the_earlier_reason(state_dir):
    j = Journal.new("shop", "up")
    j.reason = "earlier"
    j.finish(COMMITTED)
    assert Journal.load("shop", j.id).reason == "earlier"


def test_files_dir_is_private(state_dir):
    j = Journal.new("shop", "up")
    d = j.files_dir
    assert d.is_dir() and d == j.path.with_suffix("")
    assert mode(d) == 0o700


def test_unfinished_finds_the_latest_unfinished(state_dir):
    make("20250101T000000Z-aaaa")
    make("20250102T000000Z-aaaa")
    make("20250103T000000Z-aaaa", outcome=COMMITTED)
    j = Journal.unfinished("shop")
    assert j is not None and j.id == "20250102T000000Z-aaaa"


def test_unfinished_is_none_when_all_are_finished(state_dir):
    assert Journal.unfinished("shop") is None
    make("20250101T000000Z-aaaa", outcome=COMMITTED)
    make("20250102T000000Z-aaaa", outcome=ABORTED)
    assert Journal.unfinished("shop") is None


def test_all_is_chronological_and_ignores_other_files(state_dir):
    make("20250102T000000Z-aaaa")
    make("20250101T000000Z-ffff")
    folder = Journal.folder("shop")
    (folder / ".20250103T000000Z-aaaa.json.tmp.123").write_text("{half")
    (folder / "20250101T000000Z-ffff").mkdir(exist_ok=True)  # a files_dir
    assert [j.id for j in Journal.all("shop")] == ["20250101T000000Z-ffff", "20250102T000000Z-aaaa"]


def test_from_dict_ignores_unknown_keys(state_dir):
    j = make("20250101T000000Z-aaaa")
    d = json.loads(j.path.read_text())
    d["added_by_a_newer_version"] = 1
    assert Journal.from_dict(d) == j


def test_corrupt_journal_raises_guard_error_naming_the_file(state_dir):
    j = make("20250101T000000Z-aaaa")
    j.path.write_text('{"id": "20250101T000000Z-aaaa", "proj')
    with pytest.raises(GuardError) as exc:
        Journal.load("shop", j.id)
    assert str(j.path) in str(exc.value)
    with pytest.raises(GuardError) as exc:
        Journal.unfinished("shop")
    assert str(j.path) in str(exc.value)


def test_empty_journal_file_raises_guard_error(state_dir):
    j = make("20250101T000000Z-aaaa")
    j.path.write_text("")
    with pytest.raises(GuardError, match=re.escape(str(j.path))):
        Journal.load("shop", j.id)


@pytest.mark.parametrize("content", ["[]", "null", '{"id": "x"}'])
def test_wrong_shape_journal_raises_guard_error_naming_the_file(state_dir, content):
    j = make("20250101T000000Z-aaaa")
    j.path.write_text(content)
    with pytest.raises(GuardError) as exc:
        Journal.unfinished("shop")
    assert str(j.path) in str(exc.value)


def test_binary_journal_raises_guard_error_naming_the_file(state_dir):
    j = make("20250101T000000Z-aaaa")
    j.path.write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(GuardError) as exc:
        Journal.load("shop", j.id)
    assert str(j.path) in str(exc.value)


def test_projects_with_journals(state_dir):
    assert projects_with_journals() == []
    make("20250101T000000Z-aaaa", project="zeta")
    make("20250101T000000Z-aaaa", project="alpha")
    Journal.folder("empty")  # a txns folder without journals
    project_dir("nojournals")
    assert projects_with_journals() == ["alpha", "zeta"]


# -- write_atomic ---------------------------------------------------------------------------


def test_write_atomic_writes_and_leaves_no_temp_files(tmp_path):
    p = tmp_path / "f.json"
    write_atomic(p, "one")
    write_atomic(p, b"two")
    assert p.read_text() == "two"
    assert sorted(x.name for x in tmp_path.iterdir()) == ["f.json"]
    assert mode(p) == 0o600


def test_write_atomic_crash_before_rename_keeps_the_old_content(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    write_atomic(p, "old content")

    def crash(src, dst):
        raise OSError(5, "simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        write_atomic(p, "new content")
    assert p.read_text() == "old content"


def test_write_atomic_never_commits_a_short_write(tmp_path, monkeypatch):
    p = tmp_path / "f.json"
    write_atomic(p, "old content")
    new = "x" * 1000
    real_write = os.write

    def short_write(fd, data):
        return real_write(fd, bytes(data)[: max(1, len(data) // 2)])

    monkeypatch.setattr(os, "write", short_write)
    try:
        write_atomic(p, new)
    except OSError:
        monkeypatch.undo()
        assert p.read_text() == "old content"
    else:
        monkeypatch.undo()
        assert p.read_text() == new


def test_write_json_and_read_json(tmp_path):
    p = tmp_path / "x.json"
    write_json(p, {"b": [1, 2], "a": None})
    assert read_json(p) == {"a": None, "b": [1, 2]}
    assert p.read_text().endswith("\n")


# -- safe_name ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["shop", "my-app_2", "0day", "a"])
def test_safe_name_accepts_compose_project_names(name):
    assert safe_name(name, "project name") == name


@pytest.mark.parametrize("name", ["../x", "A", "a/b", "", ".", "..", "-a", "_a", "a b", "a.b", None])
def test_safe_name_rejects(name):
    with pytest.raises(ConfigError, match="project name"):
        safe_name(name, "project name")


def test_safe_name_rejects_a_trailing_newline():
    with pytest.raises(ConfigError):
        safe_name("shop\n", "project name")


def test_project_dir_refuses_traversal(state_dir):
    with pytest.raises(ConfigError):
        project_dir("../../etc")
    assert not state_dir.exists()


def test_unwritable_state_dir_is_a_guard_error(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(blocker / "state"))
    with pytest.raises(GuardError, match="COMPOSEGUARD_STATE_DIR"):
        project_dir("shop")


def test_write_atomic_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    """Step 8, point 11: the temp name is random and created O_EXCL|O_NOFOLLOW. Before, it
    was .<name>.tmp.<pid>: a symlink planted under that name in a folder other users can
    write (a Prometheus textfile folder) made root overwrite the link's target."""
    import os

    from composeguard.state import write_atomic

    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    target = tmp_path / "composeguard.prom"
    os.symlink(victim, tmp_path / f".composeguard.prom.tmp.{os.getpid()}")
    os.symlink(victim, target)  # even the final name: replaced, not followed

    write_atomic(target, "metrics\n", mode=0o644)

    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text() == "metrics\n"
    assert target.stat().st_mode & 0o777 == 0o644
