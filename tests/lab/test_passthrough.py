"""The passthrough is exact: ``composeguard ARGS`` behaves like ``docker compose ARGS``.

Every compose command composeguard does not guard is exec'd as ``docker compose ARGS``
(composeguard/entry.py). These tests run each case both ways -- the real console script and
plain ``docker compose`` -- with the same argument list, cwd, environment and stdin, and
compare exit code, stdout and stderr byte for byte. Nothing is normalised; where compose's
own output depends on the clock (``ps``'s STATUS column) the pair is re-run instead, see
``compare``.

Needs the lab (root, dockerd, Compose v2, the registry at 127.0.0.1:5000):

    bash lab/lab.sh up
    .venv/bin/python -m pytest -m lab tests/lab/test_passthrough.py -q
"""

from __future__ import annotations

import errno
import os
import pty
import select
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import clean_env

from tests.lab.labproject import composeguard_bin, run

pytestmark = pytest.mark.lab

IMAGE = "127.0.0.1:5000/lab/app:v1"
PLAIN_IMAGE = "127.0.0.1:5000/lab/plain:v1"
GUARDED = (
    "up", "update", "plan", "rollback", "history", "pins", "unpin", "recover", "doctor", "provision",
    "version",
)

# `app` echoes $GREETING (from .env, or another --env-file) to stdout and a line to stderr,
# then runs the lab image's own entrypoint (busybox httpd + /health), so `logs` has
# something stable to show once it is healthy. `extra` only exists with --profile extra.
COMPOSE_YAML = """\
name: {name}
services:
  app:
    image: {image}
    environment:
      GREETING: ${{GREETING:?set GREETING in .env}}
    entrypoint:
      - /bin/sh
      - -c
      - 'echo "greeting=$$GREETING"; echo "app says hi on stderr" >&2; exec /bin/sh /entrypoint.sh'
  side:
    image: {plain_image}
  extra:
    image: {image}
    profiles: [extra]
"""


def docker(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return run(["docker", *args], cwd=cwd, timeout=timeout)


def must(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        pytest.fail(f"{proc.args!r} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def require_lab() -> None:
    """tests/conftest.py already skips lab tests without root/dockerd; this also checks the
    Compose plugin. Under COMPOSEGUARD_REQUIRE_LAB=1 (lab/test.sh) a missing lab fails."""
    stop = pytest.fail if os.environ.get("COMPOSEGUARD_REQUIRE_LAB") == "1" else pytest.skip
    if shutil.which("docker") is None:
        stop("docker CLI not found: run `bash lab/lab.sh up` (as root)")
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=20)
        comp = docker("compose", "version", "--short", timeout=20)
    except subprocess.TimeoutExpired:
        stop("dockerd does not answer: run `bash lab/lab.sh up` (as root)")
    if info.returncode != 0:
        stop(f"dockerd not reachable ({info.stderr.strip()}): run `bash lab/lab.sh up` (as root)")
    if comp.returncode != 0:
        stop("the Compose v2 plugin is missing: run `bash lab/lab.sh up` (as root)")


@dataclass(frozen=True)
class Project:
    name: str
    dir: Path


def make_project(root: Path) -> Project:
    name = f"cgpass{uuid.uuid4().hex[:10]}"
    d = root / name
    d.mkdir()
    (d / "compose.yaml").write_text(COMPOSE_YAML.format(name=name, image=IMAGE, plain_image=PLAIN_IMAGE))
    (d / ".env").write_text("GREETING=hello-from-dotenv\n")
    (d / "alt.env").write_text("GREETING=hello-from-alt-env\n")
    return Project(name, d)


def bring_up(p: Project) -> None:
    must(docker("compose", "up", "-d", "--wait", "--wait-timeout", "60", cwd=p.dir))


def tear_down(p: Project) -> None:
    docker("compose", "down", "-v", "-t", "1", "--remove-orphans", cwd=p.dir)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Project]:
    require_lab()
    p = make_project(tmp_path_factory.mktemp("passthrough"))
    try:
        bring_up(p)
        # `logs` must be complete before we compare it: both lines are written before httpd
        # starts, and --wait returned only once /health answered.
        logs = must(docker("compose", "logs", "--no-log-prefix", "app", cwd=p.dir))
        assert "greeting=hello-from-dotenv" in logs.stdout
        yield p
    finally:
        tear_down(p)


def run_both(
    args: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    stdin_data: bytes | None = None,
    timeout: float = 120,
    **popen: object,
) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """Run ``composeguard ARGS`` then ``docker compose ARGS``, back to back, identically
    (stdout and stderr captured unless ``popen`` says otherwise)."""
    results = []
    for argv in ([composeguard_bin(), *args], ["docker", "compose", *args]):
        results.append(
            subprocess.run(
                argv,
                cwd=cwd,
                env=env if env is not None else clean_env(),
                input=stdin_data if stdin_data is not None else None,
                stdin=None if stdin_data is not None else subprocess.DEVNULL,
                timeout=timeout,
                check=False,
                **{"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **popen},
            )
        )
    return results[0], results[1]


# How a case is compared. Nothing is ever normalised away except what compose itself does
# not reproduce from one run to the next:
EXACT = "exact"  # exit code, stdout and stderr byte for byte, one run each
# Output contains compose's own clock ("Up 3 seconds", "2 seconds ago"): two back-to-back
# runs can straddle a one-second tick. We re-run the *pair* (up to 5 times) rather than
# edit the text; one byte-exact match is required. A passthrough bug is deterministic and
# fails every attempt.
CLOCK = "clock"
# Lines whose order varies between two runs of plain `docker compose` itself, because compose
# walks the services concurrently: `config --services` / `config --images` (observed with
# v2.40.3: "app extra side", then "side app extra") and the progress lines of
# `--dry-run down` on stderr (one container's "Stopping/Stopped/Removing/Removed" block
# before or after the other's). The exit code must be equal and stdout and stderr must each
# hold the same lines, each as often (a multiset), in any order.
UNORDERED = "unordered"


def outcome(proc: subprocess.CompletedProcess, mode: str = EXACT) -> tuple[int, object, object]:
    if mode == UNORDERED:
        return (
            proc.returncode,
            sorted(proc.stderr.splitlines(keepends=True)),
            sorted(proc.stdout.splitlines(keepends=True)),
        )
    return proc.returncode, proc.stderr, proc.stdout


def compare(
    args: list[str],
    cwd: Path,
    *,
    env: dict[str, str] | None = None,
    stdin_data: bytes | None = None,
    mode: str = EXACT,
) -> subprocess.CompletedProcess:
    """Assert composeguard and compose give the same (exit code, stdout, stderr), see the
    modes above; return compose's own result."""
    attempts = 5 if mode == CLOCK else 1
    for _ in range(attempts):
        guarded, plain = run_both(args, cwd, env=env, stdin_data=stdin_data)
        if outcome(guarded, mode) == outcome(plain, mode):
            return plain
    assert outcome(guarded, mode) == outcome(plain, mode), (
        f"composeguard {args!r} differs from docker compose"
    )
    return plain  # unreachable


# (id, args, exit code compose itself must give, comparison mode). The expected code keeps
# the test from being vacuous: a case that is meant to fail must really fail, both ways.
NAME = "{name}"
CASES = [
    ("ps", ["ps"], 0, CLOCK),
    ("ps-all", ["ps", "-a"], 0, CLOCK),
    (
        "ps-format",
        ["ps", "-a", "--format", "{{.Name}} {{.Service}} {{.Image}} {{.State}} {{.Health}}"],
        0,
        EXACT,
    ),
    ("ps-quiet", ["ps", "-q"], 0, EXACT),
    ("ps-services", ["ps", "--services"], 0, EXACT),
    ("-p NAME ps", ["-p", NAME, "ps", "--format", "{{.Name}} {{.State}}"], 0, EXACT),
    ("--project-name=NAME ps", [f"--project-name={NAME}", "ps", "-q"], 0, EXACT),
    ("-pNAME ps", [f"-p{NAME}", "ps", "-q"], 0, EXACT),
    # A project or profile named like a guarded command: the option's value must not be
    # taken for the command.
    ("-p up ps", ["-p", "up", "ps"], 0, EXACT),
    ("--profile version config", ["--profile", "version", "config", "--services"], 0, UNORDERED),
    ("-fcompose.yaml ps", ["-fcompose.yaml", "ps", "-q"], 0, EXACT),
    ("-f --env-file .env config", ["-f", "compose.yaml", "--env-file", ".env", "config"], 0, EXACT),
    ("--env-file alt.env config", ["--env-file", "alt.env", "config"], 0, EXACT),
    ("--env-file=alt.env config", ["--env-file=alt.env", "config", "--format", "json"], 0, EXACT),
    ("--profile extra config", ["--profile", "extra", "config", "--services"], 0, UNORDERED),
    ("--profile=extra ps", ["--profile=extra", "ps", "-a", "--services"], 0, EXACT),
    ("--project-directory config", ["--project-directory", ".", "config", "--images"], 0, UNORDERED),
    ("config --format json", ["config", "--format", "json"], 0, EXACT),
    ("--ansi never --progress plain ps", ["--ansi", "never", "--progress", "plain", "ps", "-q"], 0, EXACT),
    ("--dry-run --parallel 1 ps", ["--dry-run", "--parallel", "1", "ps", "-q"], 0, EXACT),
    ("--dry-run down", ["--dry-run", "down"], 0, UNORDERED),
    ("logs app", ["logs", "--no-log-prefix", "app"], 0, EXACT),
    ("logs side", ["logs", "--no-color", "side"], 0, EXACT),
    ("exec cat version", ["exec", "-T", "app", "cat", "/www/version"], 0, EXACT),
    ("exec exit 7", ["exec", "-T", "app", "sh", "-c", "exit 7"], 7, EXACT),
    ("exec out+err exit 3", ["exec", "-T", "app", "sh", "-c", "echo out; echo err >&2; exit 3"], 3, EXACT),
    ("exec -e", ["exec", "-T", "-e", "X=from flag", "app", "sh", "-c", 'echo "$X"'], 0, EXACT),
    ("ps --help", ["ps", "--help"], 0, EXACT),
    ("logs -h", ["logs", "-h"], 0, EXACT),
    ("--unknown-flag ps", ["--unknown-flag", "ps"], 1, EXACT),
    ("ps --nope", ["ps", "--nope"], 1, EXACT),
    ("nosuchcommand", ["nosuchcommand"], 1, EXACT),
    ("-f missing.yaml ps", ["-f", "missing.yaml", "ps"], 1, EXACT),
    ("--env-file missing", ["--env-file", "missing.env", "config"], 1, EXACT),
    ("exec no such service", ["exec", "-T", "nosuchservice", "true"], 1, EXACT),
]


@pytest.mark.parametrize(
    ("args", "expected_rc", "mode"),
    [pytest.param(a, rc, m, id=i) for i, a, rc, m in CASES],
)
def test_passthrough_is_exact(project: Project, args: list[str], expected_rc: int, mode: str) -> None:
    args = [a.replace(NAME, project.name) for a in args]
    plain = compare(args, project.dir, mode=mode)
    assert plain.returncode == expected_rc, plain.stderr.decode(errors="replace")


@pytest.mark.parametrize(
    ("args", "env_extra", "marker"),
    [
        pytest.param(
            ["config", "--services"], {"COMPOSE_PROFILES": "extra"}, b"extra\n", id="COMPOSE_PROFILES"
        ),
        pytest.param(
            ["config"], {"GREETING": "from-the-shell"}, b"from-the-shell", id="shell-overrides-.env"
        ),
        pytest.param(
            ["ps", "-a"], {"COMPOSE_PROJECT_NAME": "cgpass-nobody"}, b"NAME", id="COMPOSE_PROJECT_NAME"
        ),
    ],
)
def test_environment_is_passed_through(
    project: Project, args: list[str], env_extra: dict[str, str], marker: bytes
) -> None:
    """Variables compose reads from its environment reach it. (Not `config --environment`:
    that dumps the whole client environment, including DOCKER_CLI_PLUGIN_SOCKET, which the
    docker CLI picks at random for every run.)"""
    mode = UNORDERED if "--services" in args else EXACT
    plain = compare(args, project.dir, env=clean_env(**env_extra), mode=mode)
    assert plain.returncode == 0
    assert marker in plain.stdout


def test_other_cwd_with_project_directory(project: Project, tmp_path: Path) -> None:
    compare(["--project-directory", str(project.dir), "ps", "-q"], tmp_path)
    compare(["-f", str(project.dir / "compose.yaml"), "ps", "--services"], tmp_path)


def test_stdin_is_passed_through(project: Project) -> None:
    text = b"first line\nsecond line \xe2\x9c\x93\n\x00binary\xff tail without newline"
    plain = compare(["exec", "-T", "app", "cat"], project.dir, stdin_data=text)
    assert plain.returncode == 0
    assert plain.stdout == text


def test_broken_stdout_pipe(project: Project) -> None:
    """Writing into a pipe nobody reads: compose's reaction (exit code, stderr) must be the
    same, i.e. composeguard must not leave SIGPIPE ignored or otherwise change it."""
    r, w = os.pipe()
    os.close(r)
    try:
        guarded, plain = run_both(["config"], project.dir, timeout=60, stdout=w)
    finally:
        os.close(w)
    assert (guarded.returncode, guarded.stderr) == (plain.returncode, plain.stderr)


@pytest.mark.parametrize(
    ("closed_fd", "args"),
    [
        pytest.param(0, ["exec", "-T", "app", "cat"], id="stdin"),
        pytest.param(1, ["ps", "-q"], id="stdout"),
        pytest.param(2, ["ps", "-q"], id="stderr"),
    ],
)
def test_closed_standard_fd(project: Project, closed_fd: int, args: list[str]) -> None:
    """``composeguard ps >&-`` (a standard fd closed, as cron jobs, daemons and careless
    scripts do) must behave like ``docker compose ps >&-``: same exit code, and the same
    output on the streams that are still open."""
    # preexec_fn runs in the child, after the redirections
    guarded, plain = run_both(args, project.dir, timeout=60, preexec_fn=lambda: os.close(closed_fd))
    assert (guarded.returncode, guarded.stdout) == (plain.returncode, plain.stdout)
    assert guarded.stderr == plain.stderr


def _run_on_pty(argv: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run argv with stdin/stdout/stderr on a fresh pseudo-terminal; return (rc, output)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=clean_env(TERM="dumb"),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
        )
    finally:
        os.close(slave)
    out = b""
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError as e:  # EIO: every slave end is closed
                if e.errno == errno.EIO:
                    break
                raise
            if not chunk:
                break
            out += chunk
        rc = proc.wait(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return rc, out


def test_tty_is_passed_through(project: Project) -> None:
    """On a terminal, ``exec`` allocates a TTY in the container for both."""
    cmd = ["exec", "app", "sh", "-c", "test -t 0 && test -t 1 && echo tty-ok"]
    guarded = _run_on_pty([composeguard_bin(), *cmd], project.dir)
    plain = _run_on_pty(["docker", "compose", *cmd], project.dir)
    assert guarded == plain
    assert plain[0] == 0 and b"tty-ok" in plain[1]


def _proc_status(pid: int) -> dict[str, str]:
    status = Path(f"/proc/{pid}/status").read_text()
    return dict(line.split(":\t", 1) for line in status.splitlines() if ":\t" in line)


def _start_follow(argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_cmdline(pid: int, want: list[str], timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    cmdline: list[str] = []
    while time.monotonic() < deadline:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
        cmdline = [a.decode() for a in raw.split(b"\0")[:-1]]
        if cmdline == want:
            return cmdline
        time.sleep(0.05)
    return cmdline


def test_process_is_replaced_and_signals_behave_the_same(project: Project) -> None:
    """composeguard execs: the very same pid becomes ``docker compose ARGS`` (no wrapper
    process in between to swallow signals), with the same signal state, and SIGINT ends it
    with the same exit code."""
    args = ["logs", "-f", "app"]
    guarded = _start_follow([composeguard_bin(), *args], project.dir)
    plain = _start_follow(["docker", "compose", *args], project.dir)
    try:
        want = ["docker", "compose", *args]
        assert _wait_cmdline(guarded.pid, want) == want
        assert _wait_cmdline(plain.pid, want) == want
        # Ignored (SigIgn) dispositions survive exec, so a wrapper that ignores a signal
        # (Python itself ignores SIGPIPE and SIGXFSZ) could leak that into compose; caught
        # ones (SigCgt) are what the Go runtime installs once it is up, so poll until both
        # have settled. Not SigBlk: the docker CLI's main thread blocks and unblocks signals
        # as the Go runtime works (observed 0 and fffffffc3bba3a00 on the same process);
        # the SIGINT below checks the end-to-end signal behaviour instead.
        fields = ("SigIgn", "SigCgt")
        deadline = time.monotonic() + 10
        while True:
            g, p = _proc_status(guarded.pid), _proc_status(plain.pid)
            if all(g[f] == p[f] for f in fields) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        for field in fields:
            assert g[field] == p[field], field
        time.sleep(0.5)  # both are streaming logs now; interrupt them in the same state
        for proc in (guarded, plain):
            proc.send_signal(signal.SIGINT)
        assert guarded.wait(timeout=30) == plain.wait(timeout=30)
    finally:
        for proc in (guarded, plain):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_own_help_lists_guarded_commands() -> None:
    proc = run([composeguard_bin(), "--help"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    commands = {line.split()[0] for line in text.splitlines() if line.startswith("  ") and line.split()}
    missing = [c for c in GUARDED if c not in commands]
    assert not missing, f"guarded commands missing from --help: {missing}\n{text}"
    flat = " ".join(text.split())
    assert "passes through to `docker compose`" in flat, text


# --- down: destructive, so it gets its own project, and runs last in this module. ---------


@pytest.fixture
def doomed_project(tmp_path: Path) -> Iterator[Project]:
    require_lab()
    p = make_project(tmp_path)
    try:
        yield p
    finally:
        tear_down(p)


def _containers(p: Project) -> str:
    return must(docker("compose", "ps", "-a", "-q", cwd=p.dir)).stdout.strip()


def test_down(doomed_project: Project) -> None:
    """``down`` can only run once per project, so the two sides run one after the other on
    the same project (same name, same containers, brought up identically in between).

    stdout and the exit code must be equal. stderr is compose's progress output, one line per
    resource event (" Container x  Stopping" / "Stopped" / "Removing" / "Removed", " Network
    x  Removing" ...); compose stops and removes the two containers concurrently, so the
    interleaving of their lines is a race inside compose itself. We therefore compare the
    *multiset* of stderr lines, not their order: every line must be there, exactly as often.
    """
    p = doomed_project
    def down(argv: list[str]) -> subprocess.CompletedProcess[bytes]:
        bring_up(p)
        assert _containers(p)
        r = subprocess.run(argv, cwd=p.dir, env=clean_env(), stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert _containers(p) == "", f"{argv[0]} down left containers behind"
        return r

    guarded = down([composeguard_bin(), "down"])
    plain = down(["docker", "compose", "down"])

    assert guarded.returncode == plain.returncode
    assert guarded.stdout == plain.stdout
    assert sorted(guarded.stderr.splitlines()) == sorted(plain.stderr.splitlines())
