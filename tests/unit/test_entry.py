"""The entry point: find the command behind compose's global options, then guard or exec."""

from __future__ import annotations

import os
import sys

import pytest

from composeguard import entry
from composeguard.entry import main, wants_help
from composeguard.passthrough import GUARDED_COMMANDS, split_global_options


class Execed(Exception):
    """Raised by the fake execvp: a real exec never returns."""


@pytest.fixture
def execvp(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[str]]]:
    calls: list[tuple[str, list[str]]] = []

    def fake(file: str, argv: list[str]) -> None:
        calls.append((file, list(argv)))
        raise Execed

    monkeypatch.setattr(os, "execvp", fake)
    return calls


@pytest.fixture
def guarded(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Replace the click CLI: record what it would have been given."""
    import composeguard.cli.runner

    calls: list[list[str]] = []
    monkeypatch.setattr(composeguard.cli.runner, "run", lambda args: calls.append(list(args)))
    return calls


# -- split_global_options ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-f", "x", "ps"], (["-f", "x"], "ps", [])),
        (["--file=x", "ps"], (["--file=x"], "ps", [])),
        (["-fx", "ps"], (["-fx"], "ps", [])),
        (["--file", "x", "ps", "-a"], (["--file", "x"], "ps", ["-a"])),
        (["-p", "n", "--profile", "a", "up", "-d"], (["-p", "n", "--profile", "a"], "up", ["-d"])),
        (["--dry-run", "down"], (["--dry-run"], "down", [])),
        (["--env-file", "up", "ps"], (["--env-file", "up"], "ps", [])),
        (
            ["--ansi", "never", "--progress=plain", "logs", "-f", "app"],
            (["--ansi", "never", "--progress=plain"], "logs", ["-f", "app"]),
        ),
        (["-f", "x"], (["-f", "x"], None, [])),
        ([], ([], None, [])),
        (["--help"], (["--help"], None, [])),
        (["-f"], (["-f"], None, [])),
    ],
)
def test_split_global_options(args, expected):
    assert split_global_options(args) == expected


def test_split_stops_at_double_dash():
    assert split_global_options(["-f", "x", "--", "up"]) == (["-f", "x"], None, ["--", "up"])


def test_value_that_looks_like_a_command_is_consumed():
    # "up" is the project name here, "ps" the command
    assert split_global_options(["-p", "up", "ps"])[1] == "ps"


def test_wants_help():
    assert wants_help(["--help"])
    assert wants_help(["-f", "x", "-h"])
    assert not wants_help(["-f", "x"])


# -- main(): guard or pass through ---------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["ps"],
        ["-f", "x.yml", "ps", "-a"],
        ["--dry-run", "down", "-v"],
        ["logs", "-f", "--tail", "10", "app"],
        ["exec", "-T", "app", "sh", "-c", "echo up"],
        ["-p", "up", "ps"],  # "up" is a project name, not the command
        ["-f", "x.yml"],  # no command and no help: compose prints its own usage
        ["run", "--rm", "app", "up"],  # "up" is an argument of `run`
    ],
)
def test_passthrough_execs_docker_compose_with_exact_args(args, execvp, guarded):
    with pytest.raises(Execed):
        main(list(args))
    assert execvp == [("docker", ["docker", "compose", *args])]
    assert guarded == []


def test_passthrough_reads_sys_argv(monkeypatch, execvp, guarded):
    monkeypatch.setattr(sys, "argv", ["composeguard", "--profile", "a", "config", "--services"])
    with pytest.raises(Execed):
        main()
    assert execvp == [("docker", ["docker", "compose", "--profile", "a", "config", "--services"])]


def test_composeguard_docker_overrides_the_binary(monkeypatch, execvp, guarded):
    monkeypatch.setenv("COMPOSEGUARD_DOCKER", "/opt/bin/mydocker")
    with pytest.raises(Execed):
        main(["ps"])
    assert execvp == [("/opt/bin/mydocker", ["/opt/bin/mydocker", "compose", "ps"])]


@pytest.mark.parametrize(
    "args",
    [
        ["up", "-d"],
        ["-f", "x.yml", "-p", "n", "up"],
        ["--dry-run", "up"],
        ["update"],
        ["plan", "--json"],
        ["rollback"],
        ["history"],
        ["pins"],
        ["unpin", "app"],
        ["recover"],
        ["version"],
        [],
        ["--help"],
        ["-h"],
        ["-f", "x.yml", "--help"],
    ],
)
def test_guarded_commands_go_to_the_cli(args, execvp, guarded):
    main(list(args))
    assert guarded == [args]
    assert execvp == []


def test_every_guarded_command_is_covered():
    """The exec-fast entry point hands exactly composeguard's own click commands to click:
    a command missing here would be passed to compose, one too many would never reach it."""
    from composeguard.cli.app import main as cli_main

    assert set(cli_main.commands) == GUARDED_COMMANDS


def test_exec_failure_exits_127_when_docker_is_missing(monkeypatch, capsys):
    def missing(file, argv):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(os, "execvp", missing)
    monkeypatch.setenv("COMPOSEGUARD_DOCKER", "/nonexistent/docker")
    with pytest.raises(SystemExit) as exc:
        entry.exec_compose(["ps"])
    assert exc.value.code == 127
    assert "/nonexistent/docker" in capsys.readouterr().err


def test_exec_failure_exits_126_when_not_executable(monkeypatch):
    def denied(file, argv):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "execvp", denied)
    with pytest.raises(SystemExit) as exc:
        entry.exec_compose(["ps"])
    assert exc.value.code == 126


def test_debug_prints_the_command_line(monkeypatch, capsys, execvp):
    monkeypatch.setenv("COMPOSEGUARD_DEBUG", "1")
    with pytest.raises(Execed):
        entry.exec_compose(["ps", "-a"])
    assert "exec docker compose ps -a" in capsys.readouterr().err


def test_passthrough_path_does_not_import_heavy_modules():
    """The passthrough path must stay cheap: only os and sys (the module docstring's promise)."""
    import subprocess

    code = (
        "import sys, os\n"
        "os.execvp = lambda f, a: sys.exit(0)\n"
        "from composeguard.entry import main\n"
        "heavy = {'click', 'yaml', 'python_on_whales', 'composeguard.cli', 'logging', 'tenacity'}\n"
        "try:\n"
        "    main(['ps'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
