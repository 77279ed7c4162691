"""The one place that starts processes: argument lists only, each logged at debug level."""

from __future__ import annotations

import logging
import shlex
import subprocess
from collections.abc import Sequence

from composeguard.dockercli import NoRealCompose, compose_argv
from composeguard.errors import CommandError, ConfigError

log = logging.getLogger("composeguard.execute")


def compose_command(*args: str) -> list[str]:
    """``docker compose ARGS`` as an argument list: the compose plugin run directly, as the
    docker CLI runs it (dockercli.compose_argv)."""
    try:
        return [*compose_argv(direct=True), *args]
    except NoRealCompose as e:
        raise ConfigError(f"{e}; install the compose plugin or remove the shim") from None


def run(
    args: Sequence[str],
    *,
    check: bool = True,
    capture: bool = True,
    input_text: str | None = None,
    timeout: float | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``args`` (never through a shell) and return the completed process.

    With ``capture=False`` the child writes straight to our stdout/stderr, which is how
    compose's own progress output reaches the user. ``check`` raises :class:`CommandError`.
    """
    argv = [str(a) for a in args]
    log.debug("run: %s", shlex.join(argv))
    try:
        proc = subprocess.run(  # noqa: S603 - argument list, no shell
            argv,
            check=False,
            text=True,
            input=input_text,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            timeout=timeout,
            env=env,
        )
    except FileNotFoundError as e:
        raise CommandError(argv, 127, str(e), f"{argv[0]} is not installed") from e
    except subprocess.TimeoutExpired as e:
        raise CommandError(argv, 124, "", f"{shlex.join(argv[:3])} timed out after {timeout:g}s") from e
    if proc.returncode != 0:
        log.debug("exit %d: %s", proc.returncode, (proc.stderr or "").strip()[-2000:])
        if check:
            raise CommandError(argv, proc.returncode, proc.stderr or "")
    return proc


class Background:
    """A command started now and read later (``result``) or stopped unread (``cancel``):
    compose's check of the ``up`` arguments and the pull run while composeguard reads what
    runs. With ``capture=False`` its output goes straight to ours (compose's pull progress)."""

    def __init__(self, args: Sequence[str], capture: bool = True) -> None:
        self.argv = [str(a) for a in args]
        log.debug("start: %s", shlex.join(self.argv))
        pipe = subprocess.PIPE if capture else None
        try:
            self.proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                self.argv, text=True, stdout=pipe, stderr=pipe
            )
        except FileNotFoundError as e:
            raise CommandError(self.argv, 127, str(e), f"{self.argv[0]} is not installed") from e

    def result(self) -> subprocess.CompletedProcess[str]:
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            log.debug("exit %d: %s", self.proc.returncode, (err or "").strip()[-2000:])
        return subprocess.CompletedProcess(self.argv, self.proc.returncode, out, err)

    def cancel(self) -> None:
        """Stop it if it still runs (its answer is not needed); nothing when it was read."""
        if self.proc.returncode is None:
            self.proc.kill()
            self.proc.communicate()
