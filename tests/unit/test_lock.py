"""The per-project flock."""

from __future__ import annotations

import os

import pytest

from composeguard.errors import ExitCode, LockedError
from composeguard.lock import project_lock


def test_lock_records_the_pid_and_is_reentrant_after_release(state_dir):
    path = state_dir / "projects" / "shop" / "lock"
    with project_lock("shop"):
        assert path.read_text() == f"{os.getpid()}\n"
    with project_lock("shop"):  # released on exit
        pass


def test_second_holder_is_refused_with_the_holders_pid(state_dir):
    with project_lock("shop"):
        with pytest.raises(LockedError) as exc:
            with project_lock("shop"):
                pytest.fail("the lock was taken twice")
    assert f"pid {os.getpid()}" in str(exc.value)
    assert exc.value.exit_code == ExitCode.LOCKED


def test_locks_of_different_projects_are_independent(state_dir):
    with project_lock("shop"), project_lock("blog"):
        assert (state_dir / "projects" / "blog" / "lock").exists()


def test_lock_is_released_when_the_body_raises(state_dir):
    with pytest.raises(RuntimeError):
        with project_lock("shop"):
            raise RuntimeError("boom")
    with project_lock("shop"):
        pass
