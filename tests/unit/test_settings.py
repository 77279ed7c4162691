"""x-composeguard settings: defaults, validation (unknown key or wrong type is an error),
environment overrides and the per-service merge."""

from __future__ import annotations

import math

import pytest

from composeguard.errors import ConfigError, ExitCode
from composeguard.settings import (
    EffectiveSettings,
    Probe,
    ProjectSettings,
    ServiceSettings,
    parse_size_or_percent,
)

# -- defaults -------------------------------------------------------------------------------


def test_service_defaults():
    for raw in (None, {}):
        s = ServiceSettings.parse(raw, "service app")
        assert s == ServiceSettings()
        assert (s.probe, s.timeout, s.settle, s.quiesce, s.unprotected, s.update) == (None,) * 6


def test_project_defaults():
    p = ProjectSettings.parse(None, "the project")
    assert p == ProjectSettings()
    assert (p.timeout, p.settle, p.unprotected, p.update, p.retention, p.min_free) == (
        120.0,
        10.0,
        "refuse",
        True,
        3,
        "5%",
    )
    assert p.btrfs_snapshot_dir == ".composeguard-snapshots"


def test_service_settings_all_keys():
    s = ServiceSettings.parse(
        {
            "probe": {"http": "http://localhost:8080/health", "status": 204},
            "timeout": 60,
            "settle": 2.5,
            "quiesce": "pause",
            "unprotected": "allow",
            "update": False,
        },
        "service app",
    )
    assert s.probe == Probe(kind="http", target="http://localhost:8080/health", status=204)
    assert (s.timeout, s.settle, s.quiesce, s.unprotected, s.update) == (60.0, 2.5, "pause", "allow", False)
    assert isinstance(s.timeout, float)


def test_project_settings_all_keys():
    p = ProjectSettings.parse(
        {
            "timeout": 300,
            "settle": 0,
            "unprotected": "allow",
            "update": False,
            "retention": 7,
            "min_free": "2G",
            "btrfs_snapshot_dir": "/mnt/pool/.snaps",
            "keep_rollbacks": 5,
        },
        "the project",
    )
    assert p == ProjectSettings(300.0, 0.0, "allow", False, 7, "2G", "/mnt/pool/.snaps", keep_rollbacks=5)


# -- validation -----------------------------------------------------------------------------


def error_of(fn, *args) -> str:
    with pytest.raises(ConfigError) as exc:
        fn(*args)
    assert exc.value.exit_code == ExitCode.USAGE
    return str(exc.value)


@pytest.mark.parametrize("key", ["timeout_s", "probes", "healthcheck", "retention", "min_free"])
def test_unknown_service_key_is_named(key):
    msg = error_of(ServiceSettings.parse, {key: 1}, "service app")
    assert repr(key) in msg
    assert "service app" in msg


@pytest.mark.parametrize("key", ["quiesce", "probe", "extra", "retain"])
def test_unknown_project_key_is_named(key):
    msg = error_of(ProjectSettings.parse, {key: 1}, "the project")
    assert repr(key) in msg


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"timeout": "soon"}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"timeout": True}, "timeout"),
        ({"settle": "10s"}, "settle"),
        ({"quiesce": "freeze"}, "quiesce"),
        ({"unprotected": "maybe"}, "unprotected"),
        ({"update": "yes"}, "update"),
        ({"update": 1}, "update"),
        ({"probe": {"http": "http://x/", "tcp": "x:1"}}, "probe"),
        ({"probe": {}}, "probe"),
        ({"probe": "http://x/"}, "probe"),
        ({"probe": {"tcp": "db"}}, "tcp"),
        ({"probe": {"http": ""}}, "http"),
        ({"probe": {"http": 80}}, "http"),
        ({"probe": {"exec": []}}, "exec"),
        ({"probe": {"exec": ["ok", 1]}}, "exec"),
        ({"probe": {"http": "http://x/", "status": "200"}}, "status"),
        ({"probe": {"http": "http://x/", "status": True}}, "status"),
        ({"probe": {"http": "http://x/", "expect": 200}}, "expect"),
    ],
)
def test_wrong_service_value_names_the_key(raw, key):
    msg = error_of(ServiceSettings.parse, raw, "service app")
    assert key in msg
    assert "service app" in msg


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ({"retention": 0}, "retention"),
        ({"retention": "3"}, "retention"),
        ({"retention": True}, "retention"),
        ({"retention": 2.5}, "retention"),
        ({"timeout": "soon"}, "timeout"),
        ({"update": "yes"}, "update"),
        ({"unprotected": "yes"}, "unprotected"),
        ({"min_free": "lots"}, "min_free"),
        ({"btrfs_snapshot_dir": ""}, "btrfs_snapshot_dir"),
        ({"btrfs_snapshot_dir": 5}, "btrfs_snapshot_dir"),
    ],
)
def test_wrong_project_value_names_the_key(raw, key):
    assert key in error_of(ProjectSettings.parse, raw, "the project")


@pytest.mark.parametrize("raw", [["timeout", 5], "timeout: 5", 5])
def test_settings_must_be_a_mapping(raw):
    assert "mapping" in error_of(ServiceSettings.parse, raw, "service app")
    assert "mapping" in error_of(ProjectSettings.parse, raw, "the project")


@pytest.mark.parametrize("target", ["db:", "db:http", ":5432x"])
def test_tcp_probe_needs_a_numeric_port(target):
    with pytest.raises(ConfigError):
        Probe.parse({"tcp": target}, "service app")


@pytest.mark.parametrize("target", ["/health", "app/health", "http//app/health"])
def test_http_probe_needs_an_http_url(target):
    with pytest.raises(ConfigError):
        Probe.parse({"http": target}, "service app")


def test_timeout_nan_is_refused():
    with pytest.raises(ConfigError):
        ServiceSettings.parse({"timeout": math.nan}, "service app")


# -- probes ---------------------------------------------------------------------------------


def test_probe_kinds():
    assert Probe.parse({"tcp": "db:5432"}, "s") == Probe("tcp", "db:5432", 200)
    assert Probe.parse({"exec": ["pg_isready", "-q"]}, "s") == Probe("exec", ["pg_isready", "-q"])
    # a string runs through the container's shell, like HEALTHCHECK CMD-SHELL
    assert Probe.parse({"exec": "curl -f localhost"}, "s").target == ["sh", "-c", "curl -f localhost"]
    assert Probe.parse({"http": "http://app/", "status": 301}, "s").status == 301


# -- environment overrides ------------------------------------------------------------------


def test_env_timeout_overrides_the_file(monkeypatch):
    monkeypatch.setenv("COMPOSEGUARD_TIMEOUT", "30")
    assert ProjectSettings.parse({"timeout": 300}, "the project").timeout == 30.0
    assert ProjectSettings.parse(None, "the project").timeout == 30.0


@pytest.mark.parametrize(
    ("var", "value", "attr", "expected"),
    [
        ("COMPOSEGUARD_SETTLE", "2.5", "settle", 2.5),
        ("COMPOSEGUARD_UPDATE", "no", "update", False),
        ("COMPOSEGUARD_UPDATE", "TRUE", "update", True),
        ("COMPOSEGUARD_UPDATE", "0", "update", False),
        ("COMPOSEGUARD_RETENTION", "9", "retention", 9),
        ("COMPOSEGUARD_UNPROTECTED", "allow", "unprotected", "allow"),
        ("COMPOSEGUARD_MIN_FREE", "10G", "min_free", "10G"),
        ("COMPOSEGUARD_BTRFS_SNAPSHOT_DIR", "/snaps", "btrfs_snapshot_dir", "/snaps"),
    ],
)
def test_env_overrides(monkeypatch, var, value, attr, expected):
    monkeypatch.setenv(var, value)
    assert getattr(ProjectSettings.parse({}, "the project"), attr) == expected


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("COMPOSEGUARD_TIMEOUT", "soon"),
        ("COMPOSEGUARD_TIMEOUT", "-5"),
        ("COMPOSEGUARD_UPDATE", "maybe"),
        ("COMPOSEGUARD_RETENTION", "3.5"),
        ("COMPOSEGUARD_RETENTION", "0"),
        ("COMPOSEGUARD_UNPROTECTED", "sure"),
        ("COMPOSEGUARD_MIN_FREE", "lots"),
    ],
)
def test_bad_env_values_are_config_errors(monkeypatch, var, value):
    """The message names the variable the bad value came from, not the compose file."""
    monkeypatch.setenv(var, value)
    message = error_of(ProjectSettings.parse, {}, "the project")
    assert var in message
    assert "x-composeguard" not in message


def test_unrelated_composeguard_env_is_ignored(monkeypatch):
    monkeypatch.setenv("COMPOSEGUARD_DOCKER", "/bin/false")
    monkeypatch.setenv("COMPOSEGUARD_DEBUG", "1")
    assert ProjectSettings.parse({}, "the project") == ProjectSettings()


# -- merge ----------------------------------------------------------------------------------


def test_for_service_uses_project_defaults():
    project = ProjectSettings(timeout=300.0, settle=5.0, unprotected="allow", update=False)
    eff = project.for_service(ServiceSettings())
    assert eff == EffectiveSettings(
        probe=None, timeout=300.0, settle=5.0, quiesce="none", unprotected="allow", update=False
    )


def test_for_service_overrides_win_even_when_falsy():
    project = ProjectSettings(timeout=300.0, settle=5.0, unprotected="allow", update=True)
    probe = Probe("tcp", "db:5432")
    svc = ServiceSettings(
        probe=probe, timeout=0.0, settle=0.0, quiesce="stop", unprotected="refuse", update=False
    )
    eff = project.for_service(svc)
    assert eff == EffectiveSettings(
        probe=probe, timeout=0.0, settle=0.0, quiesce="stop", unprotected="refuse", update=False
    )


# -- sizes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5%", ("percent", 5.0)),
        (" 12.5% ", ("percent", 12.5)),
        ("512M", ("bytes", 512 * 2**20)),
        ("1g", ("bytes", 2**30)),
        ("1.5T", ("bytes", 1.5 * 2**40)),
        ("64K", ("bytes", 65536.0)),
        ("1000", ("bytes", 1000.0)),
    ],
)
def test_parse_size_or_percent(text, expected):
    assert parse_size_or_percent(text) == expected


@pytest.mark.parametrize("text", ["", "%", "lots", "5 %%", "M", "12X", "1.2.3G"])
def test_parse_size_or_percent_rejects(text):
    assert "min_free" in error_of(parse_size_or_percent, text)
