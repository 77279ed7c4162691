"""Exit codes (the contract's table) and the typed errors that carry them to the CLI edge.

Library code raises these; only ``cli/runner.py`` turns them into a process exit.
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    ERROR = 1  # any other error; the message says whether anything was changed
    USAGE = 2  # usage or configuration error: nothing was changed
    ROLLED_BACK = 3  # the upgrade failed its probe; the old version runs on the old data
    ROLLBACK_FAILED = 4  # the rollback failed or is incomplete: a human must look
    LOCKED = 5  # another composeguard run holds this project's lock


class GuardError(Exception):
    """An error with a one-line message for the user and an exit code."""

    exit_code: ExitCode = ExitCode.ERROR

    def __init__(self, message: str, *, exit_code: ExitCode | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(GuardError):
    """Bad input: compose file, settings, service names, unprotected volumes. Nothing changed."""

    exit_code = ExitCode.USAGE


class LockedError(GuardError):
    exit_code = ExitCode.LOCKED


def last_line(text: str | None, default: str = "unknown error") -> str:
    """The last non-blank line of a command's output: what the user needs of its stderr."""
    return next((ln.strip() for ln in reversed((text or "").splitlines()) if ln.strip()), default)


class CommandError(GuardError):
    """An external command failed; carries its arguments, exit code and stderr."""

    def __init__(self, args: list[str], returncode: int, stderr: str, message: str = "") -> None:
        self.args_list = list(args)
        self.returncode = returncode
        self.stderr = stderr
        last = last_line(stderr, "")
        super().__init__(
            message
            or f"{args[0]} {args[1] if len(args) > 1 else ''} failed (exit {returncode}): {last}".replace(
                "  ", " "
            )
        )


class StorageError(GuardError):
    """A snapshot, restore or storage lookup failed."""


class RolledBack(GuardError):
    """The upgrade failed its probe and was rolled back (exit 3)."""

    exit_code = ExitCode.ROLLED_BACK


class RollbackFailed(GuardError):
    """The rollback itself failed: the message says what state things are in and what to run."""

    exit_code = ExitCode.ROLLBACK_FAILED
