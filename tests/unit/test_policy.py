"""The update policy (policy.py) without the lab: the settings, the cooldown's clock and its
store, what is told instead of installed, the veto's verdicts, and what changed. The lab test
(tests/lab/test_policy.py) runs each against dockerd and the registry."""

from __future__ import annotations

import json
import subprocess

import pytest

from composeguard import execute
from composeguard.compose.images import ImageInfo
from composeguard.compose.invocation import Invocation
from composeguard.compose.project import parse_project
from composeguard.errors import ConfigError, ExitCode
from composeguard.settings import ProjectSettings, ServiceSettings, parse_duration
from composeguard.upgrade import policy
from composeguard.upgrade.planner import Change

# -- settings ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(0, 0), (90, 90), ("45s", 45), ("30m", 1800), ("12h", 43200), ("3d", 259200), ("1.5h", 5400), ("7", 7)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw, "min_age") == seconds


@pytest.mark.parametrize("raw", ["3 weeks", "", "d", "-1h", True, -5, "nanh", [1]])
def test_bad_durations_say_what_a_duration_is(raw: object) -> None:
    with pytest.raises(ConfigError, match="must be a duration like 45s, 30m, 12h or 3d") as e:
        ServiceSettings.parse({"min_age": raw}, "service app")
    assert e.value.exit_code == ExitCode.USAGE


def test_policy_settings_merge_and_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    p = ProjectSettings.parse(
        {"min_age": "3d", "update": "notify", "before_host": "/usr/local/bin/ok --quiet"}, "p"
    )
    assert (p.min_age, p.update, p.before_host) == (259200, "notify", ("/usr/local/bin/ok", "--quiet"))
    s = ServiceSettings.parse({"min_age": "1h", "update": True, "before": "test ! -e /busy"}, "service app")
    eff = p.for_service(s)
    assert (eff.min_age, eff.update, eff.before) == (3600, True, ("sh", "-c", "test ! -e /busy"))
    assert eff.before_host == ("/usr/local/bin/ok", "--quiet"), "the project's veto applies to every service"
    assert p.for_service(ServiceSettings()).update == "notify"
    monkeypatch.setenv("COMPOSEGUARD_MIN_AGE", "2h")
    monkeypatch.setenv("COMPOSEGUARD_UPDATE", "notify")
    p = ProjectSettings.parse({"min_age": "3d"}, "p")
    assert (p.min_age, p.update) == (7200, "notify")
    with pytest.raises(
        ConfigError, match="x-composeguard.update in service app must be true, false or notify"
    ):
        ServiceSettings.parse({"update": "sometimes"}, "service app")
    with pytest.raises(ConfigError, match="before in service app must be a command"):
        ServiceSettings.parse({"before": []}, "service app")


# -- the cooldown ----------------------------------------------------------------------------------
COMPOSE = """
name: media
x-composeguard: {min_age: 1h}
services:
  jellyfin: {image: "reg/jellyfin:latest"}
  sonarr: {image: "reg/sonarr:latest", x-composeguard: {min_age: 0}}
  radarr: {image: "reg/radarr:latest", x-composeguard: {update: notify}}
"""


def change(svc: str, digest: str, created: str = "") -> Change:
    return Change(
        svc,
        "sha256:old",
        f"reg/{svc}@sha256:{'0' * 64}",
        f"reg/{svc}:latest",
        "sha256:new",
        f"reg/{svc}@{digest}",
        new_created=created,
    )


class Clock:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, t: float) -> None:
        self.t = t
        monkeypatch.setattr(policy.time, "time", lambda: self.t)


@pytest.fixture
def project():
    return parse_project(COMPOSE, Invocation.parse([]), ["/srv/media/compose.yaml"])


def test_a_new_digest_waits_its_min_age_from_when_it_was_first_seen(project, monkeypatch) -> None:
    clock = Clock(monkeypatch, 1_800_000_000.0)
    changes = {
        "jellyfin": change("jellyfin", "sha256:" + "a" * 64),
        "sonarr": change("sonarr", "sha256:" + "b" * 64),
    }
    held = policy.hold_back(project, changes)
    assert list(held.install) == ["sonarr"], "min_age 0 at the service overrides the project's 1h"
    (w,) = held.waiting
    assert (w.service, w.min_age) == ("jellyfin", 3600)
    assert w.first_seen == "2027-01-15T08:00:00+00:00" and w.installable_from == "2027-01-15T09:00:00+00:00"

    clock.t += 3599
    assert [w.service for w in policy.hold_back(project, changes).waiting] == ["jellyfin"]
    clock.t += 1
    assert list(policy.hold_back(project, changes).install) == ["jellyfin", "sonarr"], "the hour has passed"

    # a newer digest that appears meanwhile starts its own clock
    newer = {"jellyfin": change("jellyfin", "sha256:" + "c" * 64)}
    held = policy.hold_back(project, newer)
    assert not held.install and held.waiting[0].first_seen == "2027-01-15T09:00:00+00:00"


def test_not_before_the_image_was_built_and_not_written_by_plan(project, monkeypatch, tmp_path) -> None:
    Clock(monkeypatch, 1_800_000_000.0)
    built_later = "2027-01-15T08:30:00.123456789Z"  # a clock ahead of ours, or a re-pushed old digest
    changes = {"jellyfin": change("jellyfin", "sha256:" + "d" * 64, created=built_later)}
    held = policy.hold_back(project, changes, record=False)
    assert held.waiting[0].installable_from == "2027-01-15T09:30:00+00:00"
    assert not policy.SeenDigests("media").path.exists(), "plan records nothing"
    policy.hold_back(project, changes)
    seen = json.loads(policy.SeenDigests("media").path.read_text())
    assert seen == {"reg/jellyfin:latest": {"reg/jellyfin@sha256:" + "d" * 64: 1_800_000_000.0}}


def test_now_installs_what_waits_and_notify_only_tells_once(project, monkeypatch) -> None:
    Clock(monkeypatch, 1_800_000_000.0)
    changes = {
        "jellyfin": change("jellyfin", "sha256:" + "e" * 64),
        "radarr": change("radarr", "sha256:" + "f" * 64),
    }
    held = policy.hold_back(project, changes)
    assert not held.install and list(held.available) == ["radarr"] and held.fresh == ["radarr"]
    held = policy.hold_back(project, changes)
    assert held.fresh == [], "told once per digest, not every night"
    held = policy.hold_back(project, changes, now_for={"jellyfin", "radarr"})
    assert sorted(held.install) == ["jellyfin", "radarr"] and not held.waiting and not held.available


def test_an_unreadable_store_restarts_the_clock_rather_than_failing(project, monkeypatch) -> None:
    Clock(monkeypatch, 1_800_000_000.0)
    store = policy.SeenDigests("media").path
    store.parent.mkdir(parents=True, exist_ok=True)
    store.write_text("{not json")
    held = policy.hold_back(project, {"jellyfin": change("jellyfin", "sha256:" + "a" * 64)})
    assert held.waiting and json.loads(store.read_text()), "rewritten whole"


# -- the veto ------------------------------------------------------------------------------------
VETO = """
name: media
x-composeguard: {before_host: [/usr/local/bin/not-during-backup]}
services:
  jellyfin: {image: "reg/jellyfin:latest", x-composeguard: {before: [sh, -c, "test ! -e /config/streaming"]}}
  sonarr: {image: "reg/sonarr:latest"}
"""


class Rep:
    def verbose(self, msg: str) -> None:
        pass


def vetoes(monkeypatch, answers: dict[str, tuple[int, str]]) -> list[list[str]]:
    ran: list[list[str]] = []

    def run(args, **kw):
        argv = [str(a) for a in args]
        ran.append(argv)
        assert kw.get("timeout") == policy.VETO_TIMEOUT, "every veto is time-limited"
        key = "exec" if "exec" in argv else argv[0]
        rc, out = answers.get(key, (0, ""))
        if rc == 124:
            raise execute.CommandError(argv, 124, "", "timed out")
        return subprocess.CompletedProcess(argv, rc, out, "")

    monkeypatch.setattr(execute, "run", run)
    project = parse_project(VETO, Invocation.parse([]), ["/srv/media/compose.yaml"])
    policy.run_vetoes(project, ["jellyfin", "sonarr"], [], Rep())  # type: ignore[arg-type]
    return ran


def test_every_veto_is_asked_and_the_host_one_once(monkeypatch) -> None:
    ran = vetoes(monkeypatch, {})
    execs = [a for a in ran if "exec" in a]
    assert len(execs) == 1 and execs[0][-4:] == ["jellyfin", "sh", "-c", "test ! -e /config/streaming"]
    assert execs[0][execs[0].index("exec") :][:3] == ["exec", "-T", "jellyfin"]
    assert [a for a in ran if a[0] == "/usr/local/bin/not-during-backup"] == [
        ["/usr/local/bin/not-during-backup"]
    ]


@pytest.mark.parametrize(
    ("answers", "said"),
    [
        (
            {"exec": (1, "a stream is playing\n")},
            "vetoed by jellyfin's before command (exit 1: a stream is playing)",
        ),
        (
            {"/usr/local/bin/not-during-backup": (75, "")},
            "before_host command /usr/local/bin/not-during-backup",
        ),
        ({"exec": (124, "")}, "did not answer within 60 s"),
    ],
)
def test_a_veto_is_one_line_and_changes_nothing(monkeypatch, answers, said) -> None:
    with pytest.raises(policy.Vetoed) as e:
        vetoes(monkeypatch, answers)
    assert said in str(e.value) and str(e.value).endswith("nothing was changed")
    assert e.value.exit_code == ExitCode.USAGE, "`up` exits 2; `update` turns a veto into exit 0"


# -- what changed ----------------------------------------------------------------------------------
def image(labels: dict[str, str]) -> ImageInfo:
    return ImageInfo("sha256:x", (), (), labels=tuple(sorted(labels.items())))


def test_what_changed_names_both_versions_and_the_releases_page() -> None:
    old = image({"org.opencontainers.image.version": "10.9.1", "maintainer": "x"})
    new = image(
        {
            "org.opencontainers.image.version": "10.10.0",
            "org.opencontainers.image.revision": "abc123",
            "org.opencontainers.image.source": "https://github.com/jellyfin/jellyfin.git",
        }
    )
    got = policy.what_changed(old, new)
    assert got == {
        "old": {"version": "10.9.1"},
        "new": {
            "version": "10.10.0",
            "revision": "abc123",
            "source": "https://github.com/jellyfin/jellyfin.git",
        },
        "releases": "https://github.com/jellyfin/jellyfin/releases",
    }
    assert policy.describe(got) == "10.9.1 -> 10.10.0, https://github.com/jellyfin/jellyfin/releases"
    assert policy.what_changed(None, image({})) == {} and policy.describe({}) == ""


@pytest.mark.parametrize(
    ("source", "page"),
    [
        ("https://gitlab.com/o/r", "https://gitlab.com/o/r/-/releases"),
        ("https://codeberg.org/o/r/", "https://codeberg.org/o/r/releases"),
        ("git@github.com:o/r.git", "https://github.com/o/r/releases"),
        ("https://github.com/o", ""),  # an organisation, not a repository
        ("https://example.org/o/r", ""),  # not a forge we know the layout of
    ],
)
def test_releases_pages_of_known_forges_only(source: str, page: str) -> None:
    assert policy.releases_page({"source": source}) == page
