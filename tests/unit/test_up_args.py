"""The user's `up` arguments: finding the services, and the upgrade's own `up` line."""

from __future__ import annotations

import pytest

from composeguard.upargs import parse_up_args, upgrade_up_args


@pytest.mark.parametrize(
    ("args", "services", "opts"),
    [
        (["-d", "--pull", "always", "app", "db"], ["app", "db"], {"-d": True, "--pull": "always"}),
        (["--scale", "app=2", "app"], ["app"], {"--scale": "app=2"}),
        (["-t", "5", "app"], ["app"], {"-t": "5"}),
        (["--wait-timeout=30"], [], {"--wait-timeout": "30"}),
        (["--wait", "--wait-timeout", "30", "web"], ["web"], {"--wait": True, "--wait-timeout": "30"}),
        (["--pull=never", "--no-deps", "web"], ["web"], {"--pull": "never", "--no-deps": True}),
        (
            ["--timeout", "10", "--exit-code-from", "app", "app"],
            ["app"],
            {"--timeout": "10", "--exit-code-from": "app"},
        ),
        (
            ["--attach", "app", "--no-attach", "db", "app", "db"],
            ["app", "db"],
            {"--attach": "app", "--no-attach": "db"},
        ),
        (["--detach=true"], [], {"--detach": True}),
        ([], [], {}),
        (["-t"], [], {"-t": ""}),
    ],
)
def test_parse_up_args(args, services, opts):
    assert parse_up_args(args) == (services, opts)


def test_option_values_are_not_services():
    services, _ = parse_up_args(["--scale", "worker=3", "-t", "app", "--pull", "db", "web"])
    assert services == ["web"]


def test_upgrade_adds_detach_when_missing():
    assert upgrade_up_args(["app"]) == ["--pull", "missing", "--detach", "app"]
    assert upgrade_up_args([]) == ["--pull", "missing", "--detach"]


@pytest.mark.parametrize(
    "args",
    [["-d", "app"], ["--detach", "app"], ["--wait", "app"], ["--wait", "--wait-timeout", "60"]],
)
def test_upgrade_keeps_the_users_detach_or_wait(args):
    out = upgrade_up_args(args)
    assert out == ["--pull", "missing", *args]


@pytest.mark.parametrize(
    ("args", "rest"),
    [
        (["-d", "--pull", "always", "app"], ["-d", "app"]),
        (["-d", "--pull=always", "app"], ["-d", "app"]),
        (["--pull", "never", "-d"], ["-d"]),
        # a --pull without its value is left for compose to refuse (composeguard checks the
        # arguments with `docker compose --dry-run up` before it stops anything)
        (["-d", "app", "--pull"], ["-d", "app", "--pull"]),
    ],
)
def test_upgrade_drops_the_users_pull(args, rest):
    out = upgrade_up_args(args)
    assert out[:2] == ["--pull", "missing"]
    assert out[2:] == rest
    assert out.count("--pull") == 1 + rest.count("--pull")
    assert not any(a.startswith("--pull=") for a in out)


def test_upgrade_keeps_everything_else_in_order():
    args = ["--scale", "app=2", "-t", "5", "--remove-orphans", "app", "db"]
    out = upgrade_up_args(args)
    assert out == ["--pull", "missing", "--detach", *args]


def test_upgrade_does_not_modify_its_input():
    args = ["--pull", "always", "app"]
    upgrade_up_args(args)
    assert args == ["--pull", "always", "app"]
