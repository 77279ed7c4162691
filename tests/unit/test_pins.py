"""The pin file: a plain compose override with the reasons under x-composeguard-pins."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from composeguard.errors import GuardError
from composeguard.pins.pinfile import PinFile, pinned_projects

OLD = "reg:5000/shop/app@sha256:" + "a" * 64
BAD1 = "reg:5000/shop/app@sha256:" + "b" * 64
BAD2 = "reg:5000/shop/app@sha256:" + "c" * 64
DB_OLD = "postgres@sha256:" + "d" * 64


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_new_project_has_no_pins(state_dir):
    pins = PinFile("shop")
    assert pins.pins == {}
    assert pins.image_for("app") is None
    assert not pins.path.exists()
    assert pins.path == state_dir / "projects" / "shop" / "pins.yaml"


def test_round_trip(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "20250101T000000Z-abcd", BAD1, "probe http: 500")
    pins.pin("db", DB_OLD, "20250101T000000Z-abcd", None, "in the unit")
    pins.save()

    again = PinFile("shop")
    assert again.pins == pins.pins
    assert again.image_for("app") == OLD
    assert again.image_for("db") == DB_OLD
    app = again.pins["app"]
    assert app.txn == "20250101T000000Z-abcd"
    assert [b.digest for b in app.bad] == [BAD1]
    assert app.bad[0].reason == "probe http: 500"
    assert app.bad[0].txn == "20250101T000000Z-abcd"
    assert app.since and app.bad[0].date
    assert again.pins["db"].bad == []


def test_render_is_a_valid_compose_override(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "exited")
    pins.pin("db", DB_OLD, "t1", None, "")
    text = pins.render()
    assert text.startswith("# composeguard pins for project shop.")
    doc = yaml.safe_load(text)
    assert doc["services"] == {"app": {"image": OLD}, "db": {"image": DB_OLD}}
    meta = doc["x-composeguard-pins"]
    assert meta["app"]["image"] == OLD
    assert meta["app"]["bad"][0]["digest"] == BAD1
    assert "service" not in meta["app"]
    # nothing but services and the extension at top level: compose must accept it as is
    assert set(doc) == {"services", "x-composeguard-pins"}


def test_render_for_a_subset_of_services(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", None, "")
    pins.pin("db", DB_OLD, "t1", None, "")
    doc = yaml.safe_load(pins.render({"db", "other"}))
    assert doc["services"] == {"db": {"image": DB_OLD}}
    assert set(doc["x-composeguard-pins"]) == {"db"}


def test_bad_digests_accumulate_without_duplicates(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "first")
    pins.pin("app", OLD, "t2", BAD1, "again the same digest")
    pins.pin("app", OLD, "t3", BAD2, "a newer digest failed too")
    pins.pin("app", OLD, "t4", None, "no new bad digest")
    pins.save()
    bad = PinFile("shop").pins["app"].bad
    assert [b.digest for b in bad] == [BAD1, BAD2]
    assert bad[0].reason == "first" and bad[0].txn == "t1"
    assert bad[1].txn == "t3"
    assert PinFile("shop").pins["app"].txn == "t4"


def test_repinning_changes_the_image(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "x")
    pins.pin("app", BAD2, "t2", None, "")
    assert pins.image_for("app") == BAD2
    assert [b.digest for b in pins.pins["app"].bad] == [BAD1]


def test_unpin_removes_and_deletes_the_file_when_empty(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "x")
    pins.pin("db", DB_OLD, "t1", None, "")
    pins.save()
    assert pins.unpin("app", "unpinned by hand") is True
    assert pins.unpin("app", "unpinned by hand") is False
    pins.save()
    assert pins.path.exists()
    assert set(PinFile("shop").pins) == {"db"}

    assert pins.unpin("db", "sha256:good passed its probe (t2)") is True
    pins.save()
    assert not pins.path.exists()
    assert PinFile("shop").pins == {}
    # ... but what they were, and why they were released, stays in the history
    released = PinFile("shop").history()
    assert [(r.service, r.image, r.txn, r.why) for r in released] == [
        ("app", OLD, "t1", "unpinned by hand"),
        ("db", DB_OLD, "t1", "sha256:good passed its probe (t2)"),
    ]
    assert [b.digest for b in released[0].bad] == [BAD1] and released[1].bad == []


def test_a_corrupt_history_is_one_clear_error(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "x")
    pins.unpin("app", "unpinned by hand")
    pins.save()
    pins.history_path.write_text("{not json")
    with pytest.raises(GuardError, match="pin history .* is corrupt"):
        PinFile("shop").history()


def test_unpin_unknown_service(state_dir):
    assert PinFile("shop").unpin("nope", "unpinned by hand") is False


def test_save_without_pins_and_without_a_file_is_a_no_op(state_dir):
    pins = PinFile("shop")
    pins.save()
    assert not pins.path.exists()


def test_applied_file_only_includes_services_that_exist(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "x")
    pins.pin("removed", DB_OLD, "t1", None, "")
    files = pins.applied_file({"app", "db"})
    assert files == [str(pins.applied_path)]
    doc = yaml.safe_load(Path(files[0]).read_text())
    assert doc["services"] == {"app": {"image": OLD}}
    assert mode(pins.applied_path) == 0o600


def test_applied_file_is_empty_when_no_pin_applies(state_dir):
    pins = PinFile("shop")
    assert pins.applied_file({"app"}) == []
    pins.pin("removed", OLD, "t1", None, "")
    assert pins.applied_file({"app", "db"}) == []
    assert not pins.applied_path.exists()


def test_applied_file_is_rewritten_when_pins_change(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", None, "")
    pins.applied_file({"app"})
    pins.pin("app", BAD2, "t2", None, "")
    (f,) = pins.applied_file({"app"})
    assert yaml.safe_load(Path(f).read_text())["services"]["app"]["image"] == BAD2


@pytest.mark.parametrize(
    "content",
    [
        "services: [unclosed\n",
        "- a list\n- not a mapping\n",
        "x-composeguard-pins: [a, b]\n",
        "x-composeguard-pins:\n  app: just a string\n",
        "x-composeguard-pins:\n  app: {since: x}\n",  # no image
        "x-composeguard-pins:\n  app: {image: x, bad: [{digest: d}]}\n",
        "x-composeguard-pins:\n  app: {image: x, bad: [{digest: d, reason: r, date: t, txn: t, z: 1}]}\n",
        b"\xff\xfe\x00garbage",  # not even text
    ],
)
def test_a_corrupt_pin_file_is_a_guard_error_naming_the_file(state_dir, content):
    path = state_dir / "projects" / "shop" / "pins.yaml"
    path.parent.mkdir(parents=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GuardError) as exc:
        PinFile("shop")
    assert str(path) in str(exc.value)


def test_an_empty_pin_file_has_no_pins(state_dir):
    path = state_dir / "projects" / "shop" / "pins.yaml"
    path.parent.mkdir(parents=True)
    path.write_text("")
    assert PinFile("shop").pins == {}


def test_file_mode_0600_and_state_dir_0700(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", None, "")
    pins.save()
    assert mode(pins.path) == 0o600
    assert mode(state_dir) == 0o700
    assert mode(state_dir / "projects") == 0o700
    assert mode(pins.path.parent) == 0o700


def test_an_existing_project_dir_is_made_private_when_pins_are_written(state_dir):
    """Reading pins creates nothing (a non-root alias user may read); writing makes it 0700."""
    d = state_dir / "projects" / "shop"
    d.mkdir(parents=True, mode=0o755)
    d.chmod(0o755)
    pins = PinFile("shop")
    assert mode(d) == 0o755
    pins.pin("app", "reg/app@sha256:" + "a" * 64, "T1", None, "test")
    pins.save()
    assert mode(d) == 0o700


def test_invalid_project_name_is_refused(state_dir):
    from composeguard.errors import ConfigError

    with pytest.raises(ConfigError):
        PinFile("../etc")
    assert not (state_dir / "etc").exists()


def test_pinned_projects(state_dir):
    for name in ("zeta", "alpha"):
        p = PinFile(name)
        p.pin("app", OLD, "t1", None, "")
        p.save()
    PinFile("nopins")  # a project folder without a pin file
    assert pinned_projects(state_dir) == ["alpha", "zeta"]


def test_no_stale_overlay_once_pins_are_gone(state_dir):
    """unpin (or a released pin) leaves no applied overlay behind for compose to pick up."""
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "x")
    pins.save()
    pins.applied_file({"app"})
    assert pins.applied_path.exists()
    assert pins.unpin("app", "by hand")
    pins.save()
    assert not pins.applied_path.exists() and not pins.path.exists()


def test_an_overlay_for_pins_that_no_longer_apply_is_removed(state_dir):
    pins = PinFile("shop")
    pins.pin("app", OLD, "t1", BAD1, "x")
    pins.applied_file({"app"})
    assert pins.without({"app"}).applied_file({"app"}) == []
    assert not pins.applied_path.exists()
