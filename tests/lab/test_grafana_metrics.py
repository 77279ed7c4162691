"""The Grafana dashboard (contrib/grafana) against the metrics textfile of a real failing upgrade
on the lab: one guarded ``up --pull always`` of the bad lab image, rolled back, with
COMPOSEGUARD_PROMETHEUS_FILE set. The dashboard's own queries are then evaluated over the
textfile before and after (two scrapes a minute apart) by the PromQL subset evaluator of
tests/unit/test_grafana_dashboard.py, and must answer: this project, one rollback, last outcome
rolled-back (shown through the panel's value mapping), no failed rollback, one upgrade."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, LabProject, app_service, bad_upgrade_is_rolled_back
from tests.unit.test_grafana_dashboard import (
    Timeline,
    all_queries,
    by_labels,
    catalogue,
    expr_of,
    interpolate,
    label_values_problems,
    load_dashboard,
    name_problems,
    panel,
    parse_textfile,
    query,
    snapshot,
    value_mapping,
    variable,
)

pytestmark = pytest.mark.lab

DATA = {"db.txt": "precious data G\n"}


def read_textfile(path: Path):  # noqa: ANN201
    return parse_textfile(path.read_text(encoding="utf-8")) if path.exists() else []


def test_the_dashboard_answers_from_the_textfile_of_a_real_rollback(
    lab_project: LabProject, tmp_path: Path
) -> None:
    p = lab_project
    prom = tmp_path / "node_exporter-textfile" / "composeguard.prom"
    p.env["COMPOSEGUARD_PROMETHEUS_FILE"] = str(prom)
    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", DATA)
    p.write_compose({"x-composeguard": FAST, "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr
    before = read_textfile(prom)

    started = time.time()
    bad_upgrade_is_rolled_back(p, v1, vol)  # exit 3, v1 back on byte-identical data
    ended = time.time()

    assert p.history()[-1]["outcome"] == "rolled-back"
    assert prom.exists(), "composeguard wrote no metrics textfile"
    assert stat.S_IMODE(prom.stat().st_mode) & 0o044 == 0o044, "node_exporter (not root) must read it"
    after = read_textfile(prom)
    assert after, "the textfile holds no sample"
    # The textfile is this test's own: every sample is this project's.
    assert {s.labels.get("project") for s in after} == {p.name}
    raw = {(s.name, s.labels.get("outcome", "")): s.value for s in after}
    assert raw[("composeguard_rollbacks_total", "")] == 1
    assert raw[("composeguard_last_outcome", "rolled-back")] == 1
    assert [o for (n, o), v in raw.items() if n == "composeguard_last_outcome" and v == 1] == ["rolled-back"]

    dash = load_dashboard()
    written = catalogue(after)
    for title, expr in all_queries(dash):
        # what is not written yet (no rollback failed) is allowed to match nothing; names must exist
        problems = [x for x in name_problems(interpolate(expr, p.name), written) if "no such value" not in x]
        assert problems == [], title
    assert label_values_problems(variable(dash, "project")["query"], written) == []

    # Two scrapes, before the upgrade and after it; the panels are read at the second.
    now = 3600.0 * 24
    timeline: Timeline = [(now - 60, snapshot(before)), (now, snapshot(after))]

    def panel_result(title: str, at: float = now, tl: Timeline = timeline):  # noqa: ANN202
        return query(expr_of(panel(dash, title)), tl, at, p.name)

    last = by_labels(panel_result("Last upgrade transaction"), "project")
    assert list(last) == [(p.name,)]
    assert started * 1000 - 1000 <= last[(p.name,)] <= ended * 1000 + 1000

    rows = by_labels(panel_result("Last outcome"), "project", "outcome")
    assert list(rows) == [(p.name, "rolled-back")]
    shown = value_mapping(panel(dash, "Last outcome"))["rolled-back"]
    assert shown["text"] == "rolled back" and shown["color"] == "orange"

    assert panel_result("Failed rollbacks (all time)") == {}  # the stat shows its noValue
    assert panel(dash, "Failed rollbacks (all time)")["fieldConfig"]["defaults"]["noValue"] == "0"

    assert by_labels(panel_result("Rollbacks per project"), "project") == {(p.name,): 1.0}
    upgrades = panel_result("Upgrades per project and outcome")
    assert by_labels(upgrades, "project", "outcome") == {(p.name, "rolled-back"): 1.0}

    # An hour later, with no further transaction, the interval panels show no new event.
    later = [*timeline, *[(now + m * 60.0, snapshot(after)) for m in range(1, 61)]]
    assert set(panel_result("Rollbacks per project", now + 3600, later).values()) == {0.0}
