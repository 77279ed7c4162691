"""Compose's global options, and the compose files composeguard must pass explicitly."""

from __future__ import annotations

from pathlib import Path

import pytest

from composeguard.compose.invocation import DEFAULT_FILE_NAMES, DEFAULT_OVERRIDE_NAMES, Invocation
from composeguard.errors import ConfigError

SERVICES = "services:\n  app:\n    image: busybox\n"


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(SERVICES)
    return path


def no_compose_file_above(d: Path) -> bool:
    return not any((p / n).is_file() for p in (d, *d.parents) for n in DEFAULT_FILE_NAMES)


# -- parse ----------------------------------------------------------------------------------


def test_parse_mixed_global_options():
    args = [
        "-f", "a.yml",
        "--file=b.yml",
        "-fc.yml",
        "--file", "d.yml",
        "-p", "shop",
        "--project-directory", "/srv/shop",
        "--env-file", ".env.prod",
        "--profile=debug",
        "--dry-run",
        "--ansi", "never",
        "--progress=plain",
        "--compatibility",
        "--parallel", "4",
    ]  # fmt: skip
    inv = Invocation.parse(args)
    assert inv.args == args
    assert inv.files == ["a.yml", "b.yml", "c.yml", "d.yml"]
    assert inv.project_name == "shop"
    assert inv.project_directory == "/srv/shop"
    assert inv.others == [
        "--env-file", ".env.prod",
        "--profile", "debug",
        "--dry-run",
        "--ansi", "never",
        "--progress", "plain",
        "--compatibility",
        "--parallel", "4",
    ]  # fmt: skip


def test_parse_long_forms_with_equals():
    inv = Invocation.parse(["--project-name=shop", "--project-directory=/srv", "-pother"])
    assert inv.project_name == "other"  # the last one wins, as in compose
    assert inv.project_directory == "/srv"
    assert inv.files == [] and inv.others == []


def test_parse_copies_its_input():
    args = ["-f", "a.yml"]
    inv = Invocation.parse(args)
    args.append("--dry-run")
    assert inv.args == ["-f", "a.yml"]


@pytest.mark.parametrize("args", [["-f"], ["--env-file"], ["-p", "x", "--profile"]])
def test_missing_option_value(args):
    with pytest.raises(ConfigError, match="needs a value"):
        Invocation.parse(args)


def test_parse_short_option_with_equals():
    inv = Invocation.parse(["-f=x.yml", "-p=shop"])
    assert inv.files == ["x.yml"]
    assert inv.project_name == "shop"


# -- config_files ---------------------------------------------------------------------------


def test_explicit_files_are_made_absolute_against_cwd(tmp_path):
    inv = Invocation.parse(["-f", "compose.yaml", "-f", "../other/extra.yml", "-f", "/abs/x.yml"])
    files = inv.config_files(str(tmp_path / "proj"))
    assert files == [
        str(tmp_path / "proj" / "compose.yaml"),
        str(tmp_path / "proj" / ".." / "other" / "extra.yml"),
        "/abs/x.yml",
    ]
    assert all(Path(f).is_absolute() for f in files)


def test_explicit_files_turn_discovery_off(tmp_path):
    touch(tmp_path / "compose.yaml")
    touch(tmp_path / "compose.override.yaml")
    files = Invocation.parse(["-f", "compose.yaml"]).config_files(str(tmp_path))
    assert files == [str(tmp_path / "compose.yaml")]


def test_compose_file_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSE_FILE", "a.yml:sub/b.yml::/abs/c.yml")
    files = Invocation.parse([]).config_files(str(tmp_path))
    assert files == [str(tmp_path / "a.yml"), str(tmp_path / "sub" / "b.yml"), "/abs/c.yml"]


def test_compose_file_env_with_a_custom_separator(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSE_FILE", "a.yml;b.yml")
    monkeypatch.setenv("COMPOSE_PATH_SEPARATOR", ";")
    files = Invocation.parse([]).config_files(str(tmp_path))
    assert files == [str(tmp_path / "a.yml"), str(tmp_path / "b.yml")]


def test_explicit_files_win_over_compose_file_env(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPOSE_FILE", "env.yml")
    files = Invocation.parse(["-f", "cli.yml"]).config_files(str(tmp_path))
    assert files == [str(tmp_path / "cli.yml")]


def test_compose_file_env_turns_discovery_off(tmp_path, monkeypatch):
    touch(tmp_path / "compose.yaml")
    touch(tmp_path / "compose.override.yaml")
    monkeypatch.setenv("COMPOSE_FILE", "compose.yaml")
    assert Invocation.parse([]).config_files(str(tmp_path)) == [str(tmp_path / "compose.yaml")]


def test_discovery_of_compose_yaml_and_its_override(tmp_path):
    touch(tmp_path / "compose.yaml")
    touch(tmp_path / "compose.override.yaml")
    files = Invocation.parse([]).config_files(str(tmp_path))
    assert files == [str(tmp_path / "compose.yaml"), str(tmp_path / "compose.override.yaml")]


def test_discovery_without_override(tmp_path):
    touch(tmp_path / "docker-compose.yml")
    assert Invocation.parse([]).config_files(str(tmp_path)) == [str(tmp_path / "docker-compose.yml")]


def test_discovery_uses_the_process_cwd_by_default(tmp_path, monkeypatch):
    touch(tmp_path / "compose.yml")
    monkeypatch.chdir(tmp_path)
    assert Invocation.parse([]).config_files() == [str(tmp_path / "compose.yml")]


def test_discovery_walks_up_to_a_parent(tmp_path):
    touch(tmp_path / "proj" / "compose.yaml")
    touch(tmp_path / "proj" / "docker-compose.override.yml")
    deep = tmp_path / "proj" / "src" / "deeper"
    deep.mkdir(parents=True)
    files = Invocation.parse([]).config_files(str(deep))
    assert files == [
        str(tmp_path / "proj" / "compose.yaml"),
        str(tmp_path / "proj" / "docker-compose.override.yml"),
    ]


def test_the_nearest_directory_wins(tmp_path):
    touch(tmp_path / "compose.yaml")
    touch(tmp_path / "child" / "docker-compose.yaml")
    files = Invocation.parse([]).config_files(str(tmp_path / "child"))
    assert files == [str(tmp_path / "child" / "docker-compose.yaml")]


def test_an_override_in_a_parent_is_not_used(tmp_path):
    touch(tmp_path / "compose.override.yaml")
    touch(tmp_path / "child" / "compose.yaml")
    files = Invocation.parse([]).config_files(str(tmp_path / "child"))
    assert files == [str(tmp_path / "child" / "compose.yaml")]


@pytest.mark.parametrize("present", [DEFAULT_FILE_NAMES[i:] for i in range(len(DEFAULT_FILE_NAMES))])
def test_file_name_precedence(tmp_path, present):
    # compose-go: compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml
    for name in present:
        touch(tmp_path / name)
    assert Invocation.parse([]).config_files(str(tmp_path)) == [str(tmp_path / present[0])]


def test_compose_yaml_wins_over_docker_compose_yml(tmp_path):
    touch(tmp_path / "docker-compose.yml")
    touch(tmp_path / "compose.yaml")
    assert Invocation.parse([]).config_files(str(tmp_path)) == [str(tmp_path / "compose.yaml")]


@pytest.mark.parametrize("present", [DEFAULT_OVERRIDE_NAMES[i:] for i in range(len(DEFAULT_OVERRIDE_NAMES))])
def test_override_name_precedence(tmp_path, present):
    touch(tmp_path / "compose.yaml")
    for name in present:
        touch(tmp_path / name)
    files = Invocation.parse([]).config_files(str(tmp_path))
    assert files == [str(tmp_path / "compose.yaml"), str(tmp_path / present[0])]


def test_project_directory_is_searched_instead_of_cwd(tmp_path):
    touch(tmp_path / "cwd" / "compose.yaml")
    touch(tmp_path / "proj" / "compose.yaml")
    inv = Invocation.parse(["--project-directory", str(tmp_path / "proj")])
    assert inv.config_files(str(tmp_path / "cwd")) == [str(tmp_path / "proj" / "compose.yaml")]


def test_discovery_walks_up_from_the_project_directory(tmp_path):
    touch(tmp_path / "proj" / "compose.yaml")
    (tmp_path / "proj" / "sub").mkdir()
    inv = Invocation.parse(["--project-directory", str(tmp_path / "proj" / "sub")])
    assert inv.config_files(str(tmp_path)) == [str(tmp_path / "proj" / "compose.yaml")]


def test_relative_project_directory_is_resolved_against_cwd_argument(tmp_path, monkeypatch):
    touch(tmp_path / "base" / "proj" / "compose.yaml")
    elsewhere = tmp_path / "elsewhere"
    touch(elsewhere / "proj" / "compose.yaml")
    monkeypatch.chdir(elsewhere)
    inv = Invocation.parse(["--project-directory", "proj"])
    files = inv.config_files(str(tmp_path / "base"))
    assert files == [str(tmp_path / "base" / "proj" / "compose.yaml")]


@pytest.mark.parametrize("args", [["-f", "-"], ["-f", "compose.yaml", "-f", "-"], ["--file=-"]])
def test_stdin_compose_file_is_refused(tmp_path, args):
    with pytest.raises(ConfigError, match="stdin"):
        Invocation.parse(args).config_files(str(tmp_path))


def test_no_compose_file_is_a_config_error(tmp_path):
    if not no_compose_file_above(tmp_path):
        pytest.skip("a compose file exists in a parent of the temporary directory")
    empty = tmp_path / "a" / "b"
    empty.mkdir(parents=True)
    with pytest.raises(ConfigError, match="no compose file found") as exc:
        Invocation.parse([]).config_files(str(empty))
    assert str(empty) in str(exc.value)


def test_no_compose_file_in_the_project_directory_is_a_config_error(tmp_path):
    if not no_compose_file_above(tmp_path):
        pytest.skip("a compose file exists in a parent of the temporary directory")
    touch(tmp_path / "cwd" / "compose.yaml")  # not used: --project-directory points elsewhere
    (tmp_path / "proj").mkdir()
    inv = Invocation.parse(["--project-directory", str(tmp_path / "proj")])
    with pytest.raises(ConfigError):
        inv.config_files(str(tmp_path / "cwd"))


# -- with_files -----------------------------------------------------------------------------


def test_with_files_puts_pins_last_and_keeps_other_options():
    inv = Invocation.parse(["-f", "a.yml", "-p", "old", "--profile", "dbg", "--env-file", "e", "--dry-run"])
    out = inv.with_files(["/p/a.yml", "/p/compose.override.yaml", "/state/pins.applied.yaml"], "shop")
    assert out == [
        "-f", "/p/a.yml",
        "-f", "/p/compose.override.yaml",
        "-f", "/state/pins.applied.yaml",
        "-p", "shop",
        "--profile", "dbg",
        "--env-file", "e",
        "--dry-run",
    ]  # fmt: skip


def test_with_files_keeps_the_project_directory():
    inv = Invocation.parse(["--project-directory=/srv/shop", "--ansi=never"])
    out = inv.with_files(["/srv/shop/compose.yaml"], "shop")
    assert out == [
        "-f", "/srv/shop/compose.yaml",
        "-p", "shop",
        "--project-directory", "/srv/shop",
        "--ansi", "never",
    ]  # fmt: skip
    # the user's own -f/-p never leak through twice
    assert out.count("-p") == 1


# -- COMPOSE_* settings from the project's .env / --env-file (step 8, point 4) -----------------


def test_compose_file_from_the_environment_compose_sees(tmp_path, monkeypatch):
    """COMPOSE_FILE and COMPOSE_PATH_SEPARATOR as compose reads them from `.env` (passed in by
    project.compose_environment) win over discovery, like the process environment does."""
    monkeypatch.delenv("COMPOSE_FILE", raising=False)
    touch(tmp_path / "compose.yaml")
    env = {"COMPOSE_FILE": "compose.yaml;extra,prod.yaml", "COMPOSE_PATH_SEPARATOR": ";"}
    files = Invocation.parse([]).config_files(str(tmp_path), env)
    assert files == [str(tmp_path / "compose.yaml"), str(tmp_path / "extra,prod.yaml")]


def test_explicit_files_win_over_compose_file_from_dotenv(tmp_path):
    files = Invocation.parse(["-f", "x.yml"]).config_files(str(tmp_path), {"COMPOSE_FILE": "a.yml"})
    assert files == [str(tmp_path / "x.yml")]


def test_env_files_are_read_from_the_options():
    inv = Invocation.parse(["--env-file", "a.env", "--profile", "x", "--env-file=b.env", "-p", "n"])
    assert inv.env_files == ["a.env", "b.env"]
    assert Invocation.parse(["--profile", "x"]).env_files == []


def test_an_env_file_can_only_matter_when_one_exists(tmp_path):
    proj = tmp_path / "proj" / "sub"
    proj.mkdir(parents=True)
    assert not Invocation.parse([]).may_read_an_env_file(str(proj))
    assert Invocation.parse(["--env-file", "x.env"]).may_read_an_env_file(str(proj))
    touch(tmp_path / "proj" / ".env")  # in a parent: compose may find the project there
    assert Invocation.parse([]).may_read_an_env_file(str(proj))
    other = tmp_path / "elsewhere"
    other.mkdir()
    touch(other / ".env")
    assert Invocation.parse(["--project-directory", str(other)]).may_read_an_env_file("/")
