"""The user's `up` arguments: finding the services, the upgrade's own `up` line, and what of it
the rollback's restart of the old version keeps."""

from __future__ import annotations

import pytest

from composeguard.compose.upargs import (
    parse_up_args,
    plainly_valid,
    rollback_up_options,
    up_options,
    upgrade_up_args,
)


@pytest.mark.parametrize(
    ("args", "services", "opts"),
    [
        (["-d", "--pull", "always", "app", "db"], ["app", "db"], {"--detach": True, "--pull": "always"}),
        (["--scale", "app=2", "app"], ["app"], {"--scale": "app=2"}),
        (["-t", "5", "app"], ["app"], {"--timeout": "5"}),
        # pflag's clusters of one-letter options: -t takes the next word or the rest
        (["-dt", "5", "app"], ["app"], {"--detach": True, "--timeout": "5"}),
        (["-dVt5", "app"], ["app"], {"--detach": True, "--renew-anon-volumes": True, "--timeout": "5"}),
        (["--no-start=false", "app"], ["app"], {"--no-start": False}),
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
        (["-t"], [], {"--timeout": ""}),
    ],
)
def test_parse_up_args(args, services, opts):
    assert parse_up_args(args) == (services, opts)


@pytest.mark.parametrize(
    ("args", "options"),
    [
        (["-d", "app", "db"], ["--detach"]),
        (["-dt", "5", "--scale", "app=2", "app"], ["--detach", "--timeout", "5", "--scale", "app=2"]),
        (["--wait-timeout=30", "--wait", "web"], ["--wait-timeout", "30", "--wait"]),
        (["--detach=true", "--", "app"], ["--detach=true"]),
    ],
)
def test_up_options_leave_out_the_services_and_nothing_else(args, options):
    assert up_options(args) == options


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


# -- the rollback's restart (step 13, point 7.1) ------------------------------------------------
# The journal's up_args are upgrade_up_args() of what the user typed; rollback_up_options() keeps
# what shapes the old version's containers (replicas, stop timeout, fresh anonymous volumes) and
# drops what roll_back() sets itself or what would make compose refuse, rebuild or touch
# something outside the unit.

def journal(*user: str) -> list[str]:
    return upgrade_up_args(list(user))


@pytest.mark.parametrize(
    ("user", "recreate", "want"),
    [
        (["-d", "--scale", "app=3"], True, ["--scale", "app=3"]),
        (["-d", "--scale=app=3"], True, ["--scale", "app=3"]),
        (["-d", "--scale", "app=3", "--scale", "app=2"], True, ["--scale", "app=3", "--scale", "app=2"]),
        # a scale of a service outside this call is not this call's business (compose may even
        # refuse a service the call does not select)
        (["-d", "--scale", "app=3", "--scale", "db=2", "--scale", "other=4"], True, ["--scale", "app=3"]),
        (["-d", "-t", "30"], True, ["--timeout", "30"]),
        (["-d", "-t30"], True, ["--timeout", "30"]),
        (["-d", "-t=30"], True, ["--timeout", "30"]),
        (["-d", "--timeout=30", "--timeout", "40"], True, ["--timeout", "40"]),
        (["-d", "-t", "soon"], True, []),  # compose refused it on the way up already
        (["-d", "-V"], True, ["--renew-anon-volumes"]),
        (["-dV"], True, ["--renew-anon-volumes"]),
        (["-dVt", "5"], True, ["--timeout", "5", "--renew-anon-volumes"]),
        (["-d", "--renew-anon-volumes"], True, ["--renew-anon-volumes"]),
        (["-d", "--renew-anon-volumes=false"], True, []),
        # the first call starts the stopped containers as they were: --no-recreate, which compose
        # refuses with -V (and their anonymous volumes were not renewed: not recreated)
        (["-d", "-V", "--scale", "db=2", "-t", "5"], False, ["--scale", "db=2", "--timeout", "5"]),
        (["-d", "--quiet-pull"], True, ["--quiet-pull"]),
        (["-d", "--build"], True, []),
        (["-d", "--no-build"], True, []),
        (["-d", "--pull", "always"], True, []),
        (["-d", "--force-recreate"], True, []),
        (["-d", "--no-recreate"], True, []),
        (["-d", "--always-recreate-deps"], True, []),
        (["-d", "--no-deps", "app"], True, []),
        (["-d", "--remove-orphans"], True, []),
        (["--wait", "--wait-timeout", "60"], True, []),
        (["--wait", "--wait-timeout=60"], True, []),
        (["-d", "--no-start"], True, []),
        (["-d", "--yes"], True, []),
        (["-dy"], True, []),
        (["-d", "--dry-run"], True, []),
        (["--attach", "app", "--no-attach", "db", "--exit-code-from", "app"], True, []),
        (["--abort-on-container-exit", "--attach-dependencies", "--timestamps", "--no-color"], True, []),
        (["-w", "--menu", "--no-log-prefix", "--quiet-build"], True, []),
        (["-d", "--some-future-flag", "app"], True, []),  # unknown: never risk the way back
        (["-d", "--", "--scale", "app=3"], True, []),  # after --: service names
        ([], True, []),
    ],
)
def test_rollback_up_options(user: list[str], recreate: bool, want: list[str]) -> None:
    services = ["app"] if recreate else ["db"]
    assert rollback_up_options(journal(*user), services, recreate=recreate) == want


def test_rollback_options_of_an_update_are_none() -> None:
    """`update` journals `--detach --no-deps SERVICES`: the rollback's own lists are complete."""
    args = journal("--detach", "--no-deps", "app", "db")
    assert rollback_up_options(args, ["app", "db"], recreate=True) == []


def test_rollback_options_keep_every_shaping_option_of_a_busy_line() -> None:
    args = journal("-d", "--pull", "always", "--build", "-V", "--scale", "app=3", "--scale", "db=2",
                   "-t", "20", "--remove-orphans", "--wait", "--wait-timeout", "90", "app")
    assert rollback_up_options(args, ["app"], recreate=True) == [
        "--scale", "app=3", "--timeout", "20", "--renew-anon-volumes",
    ]
    others = rollback_up_options(args, ["db", "cache"], recreate=False)
    assert others == ["--scale", "db=2", "--timeout", "20"]


def test_rollback_options_do_not_modify_the_journal() -> None:
    args = journal("-d", "--scale=app=3", "-t5")
    copy = list(args)
    rollback_up_options(args, ["app"], recreate=True)
    assert args == copy


@pytest.mark.parametrize(
    ("args", "valid"),
    [
        (["-d", "--pull", "always"], True),
        (["--detach", "--pull=missing", "app", "db"], True),
        (["--wait", "--wait-timeout", "30", "--no-deps", "app"], True),
        (["-d", "-t", "5", "--remove-orphans", "--quiet-pull", "--force-recreate"], True),
        ([], True),
        # left to compose's dry run: a typo, a missing or odd value, a cluster, another option,
        # a word that is no service of the project, '=' on a flag
        (["-d", "--detatch"], False),
        (["-d", "--pull"], False),
        (["-d", "--pull", "sometimes"], False),
        (["-t", "-5"], False),
        (["-t", "5s"], False),
        (["-dt", "5"], False),
        (["-d", "--scale", "app=2"], False),
        (["-d", "--abort-on-container-exit"], False),
        (["-d", "ap"], False),
        (["--detach=false"], False),
        (["-d", "--no-recreate"], False),
    ],
)
def test_plainly_valid_up_args_skip_the_dry_run(args: list[str], valid: bool) -> None:
    assert plainly_valid(args, {"app", "db"}) is valid
