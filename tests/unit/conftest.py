"""Shared fixtures for the fast unit tests: no root, no Docker, no network.

Every test gets a clean environment: no ``COMPOSEGUARD_*`` or ``COMPOSE_*`` variable leaks in
from the caller's shell, and the state directory is a fresh folder under ``tmp_path``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in list(os.environ):
        if name.startswith(("COMPOSEGUARD_", "COMPOSE_")):
            monkeypatch.delenv(name)
    # Docker's state is read through the CLI, which the tests replace; never the real socket
    # (test_engine.py gives the Engine API reads a stand-in daemon of their own)
    monkeypatch.setenv("COMPOSEGUARD_NO_ENGINE_API", "1")
    state = tmp_path / "state"
    monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(state))
    return state


@pytest.fixture
def state_dir(clean_env: Path) -> Path:
    """The (not yet created) state directory composeguard uses in this test."""
    return clean_env
