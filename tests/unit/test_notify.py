"""A notifier, hook or metrics file that fails is a warning (step 8, point 8): it never
changes the exit code of the upgrade and never stops ``update --all``."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from composeguard.settings import ProjectSettings
from composeguard.upgrade.journal import Journal
from composeguard.upgrade.notify import notify


def rolled_back() -> Journal:
    return Journal(id="20261129T000000Z-abcd", project="demo", command="up",
                   created="2026-11-29T00:00:00+00:00", outcome="rolled-back", reason="app: unhealthy")


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def test_an_unwritable_prometheus_file_is_a_warning(state: Path, monkeypatch, caplog) -> None:
    blocker = state / "not-a-dir"
    blocker.write_text("a file where the textfile folder should be\n")
    monkeypatch.setenv("COMPOSEGUARD_PROMETHEUS_FILE", str(blocker / "composeguard.prom"))
    with caplog.at_level(logging.WARNING, logger="composeguard.notify"):
        notify(ProjectSettings(), rolled_back())  # must not raise
    assert any("Prometheus" in r.getMessage() for r in caplog.records)


def test_a_corrupt_metrics_store_is_a_warning_and_the_hook_still_runs(
    state: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (state / "state").mkdir(mode=0o700)
    (state / "state" / "metrics.json").write_text("{not json")
    monkeypatch.setenv("COMPOSEGUARD_PROMETHEUS_FILE", str(state / "m.prom"))
    out = state / "hook-ran"
    hook = ("sh", "-c", f"cat > {out}")
    with caplog.at_level(logging.WARNING, logger="composeguard.notify"):
        notify(ProjectSettings(hook=hook), rolled_back())
    assert '"outcome": "rolled-back"' in out.read_text()
    assert any("Prometheus" in r.getMessage() for r in caplog.records)


def test_a_hook_that_cannot_run_is_a_warning(state: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="composeguard.notify"):
        notify(ProjectSettings(hook=("/nonexistent/notifier",)), rolled_back())
    assert any("hook" in r.getMessage() for r in caplog.records)
