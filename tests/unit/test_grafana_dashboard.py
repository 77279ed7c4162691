"""contrib/grafana/composeguard-dashboard.json against Grafana's published dashboard schema and
against what composeguard's metrics writer (notify.write_prometheus, reached through notify())
really writes: every metric, label and label value a query names, every label a legend or a
table column shows, the outcome value mappings.

The queries are also *evaluated*, by the small PromQL subset evaluator below, over textfiles the
real writer produced in a simulated scrape history. It is not Prometheus: it implements exactly
the constructs the dashboard uses (a query using anything else fails to parse, so extend it with
the dashboard), a 5-minute lookback with staleness at the next scrape as for a textfile series
that disappears, and increase() without Prometheus's extrapolation to the window's edges.

The lab test (tests/lab/test_grafana_metrics.py) reuses these helpers on the textfile of a real
rolled-back upgrade.
"""

from __future__ import annotations

import ast
import copy
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from composeguard.settings import ProjectSettings
from composeguard.upgrade.journal import Journal
from composeguard.upgrade.notify import notify

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "contrib" / "grafana" / "composeguard-dashboard.json"
SCHEMA = Path(__file__).resolve().parent / "data" / "grafana" / "dashboard.jsonschema.json"

OUTCOMES = ("committed", "rolled-back", "rollback-failed", "aborted")
# What Grafana's exporter puts around the dashboard model for "Export for sharing externally"
# and its importer consumes (the schema describes the model only).
EXPORT_ENVELOPE = ("__inputs", "__elements", "__requires")
# Labels Prometheus itself adds, or Grafana's table format adds as columns: not composeguard's.
NOT_WRITER_FIELDS = {"Time", "Value", "__name__", "instance", "job"}
LOOKBACK = 300.0  # Prometheus's default query.lookback-delta


def load_dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


# -- the textfile: Prometheus text exposition format, as node_exporter's textfile collector reads it


class Sample(NamedTuple):
    name: str
    labels: dict[str, str]
    value: float


_SAMPLE = re.compile(
    r"(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>[^}]*)\})?[ \t]+(?P<value>\S+)(?:[ \t]+-?\d+)?"
)
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\.)*)"[ \t]*(?:,|$)')
_TYPE = re.compile(r"# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)")


def parse_textfile(text: str) -> list[Sample]:
    """Every sample of a textfile; ValueError on any line the format does not allow, and on a
    sample whose metric has no TYPE line before it."""
    typed: set[str] = set()
    samples: list[Sample] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            m = _TYPE.fullmatch(line)
            if m:
                typed.add(m.group(1))
            elif line.startswith("# TYPE"):
                raise ValueError(f"line {n}: bad TYPE line {line!r}")
            continue
        m = _SAMPLE.fullmatch(line)
        if not m:
            raise ValueError(f"line {n}: not a sample: {line!r}")
        labels: dict[str, str] = {}
        raw, pos = m.group("labels") or "", 0
        while pos < len(raw):
            lm = _LABEL.match(raw, pos)
            if not lm or lm.end() == pos:
                raise ValueError(f"line {n}: bad labels {raw!r}")
            labels[lm.group(1)] = ast.literal_eval(f'"{lm.group(2)}"')
            pos = lm.end()
        if m.group("name") not in typed:
            raise ValueError(f"line {n}: {m.group('name')} has no TYPE line")
        samples.append(Sample(m.group("name"), labels, float(m.group("value"))))
    return samples


Catalogue = dict[str, dict[str, set[str]]]  # metric -> label -> the values written


def catalogue(samples: list[Sample]) -> Catalogue:
    cat: Catalogue = {}
    for s in samples:
        labels = cat.setdefault(s.name, {})
        for k, v in s.labels.items():
            labels.setdefault(k, set()).add(v)
    return cat


Key = tuple[tuple[str, str], ...]  # a series: its sorted labels, __name__ included
Snapshot = dict[Key, float]
Timeline = list[tuple[float, Snapshot]]  # (scrape time, what that scrape read), ascending


def snapshot(samples: list[Sample]) -> Snapshot:
    return {tuple(sorted({**s.labels, "__name__": s.name}.items())): s.value for s in samples}


# -- the PromQL subset -------------------------------------------------------------------


class PromQLError(ValueError):
    pass


@dataclass(frozen=True)
class Num:
    value: float


@dataclass(frozen=True)
class Selector:
    metric: str
    matchers: tuple[tuple[str, str, str], ...]  # (label, op, value)
    range: float | None = None
    offset: float = 0.0


@dataclass(frozen=True)
class Call:
    func: str
    arg: Any


@dataclass(frozen=True)
class Agg:
    op: str
    grouping: str  # "by" or "without"
    labels: tuple[str, ...]
    expr: Any


@dataclass(frozen=True)
class Binary:
    op: str
    lhs: Any
    rhs: Any
    bool_: bool = False


_TOKEN = re.compile(
    r"""(?P<ws>\s+)
      | (?P<str>"(?:[^"\\]|\\.)*")
      | (?P<dur>(?:\d+(?:ms|[smhdwy]))+)(?![A-Za-z0-9_:])
      | (?P<num>\d+(?:\.\d+)?)
      | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
      | (?P<op>==|!=|=~|!~|>=|<=|[-+*/%<>=])
      | (?P<punct>[(){}\[\],])""",
    re.X,
)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
AGGREGATIONS = {"sum", "min", "max", "count"}
FUNCTIONS = {"increase"}
COMPARISONS = {"==", "!=", ">", "<", ">=", "<="}


def duration(text: str) -> float:
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)(ms|[smhdwy])", text))


class _Parser:
    def __init__(self, expr: str) -> None:
        self.toks: list[tuple[str, str]] = []
        pos = 0
        while pos < len(expr):
            m = _TOKEN.match(expr, pos)
            if not m:
                raise PromQLError(f"cannot read {expr[pos:pos + 20]!r}")
            if m.lastgroup != "ws":
                self.toks.append((m.lastgroup or "", m.group()))
            pos = m.end()
        self.i = 0

    def peek(self, text: str | None = None) -> str | None:
        if self.i >= len(self.toks):
            return None
        t = self.toks[self.i][1]
        return t if text is None or t == text else None

    def take(self, kind: str | None = None, text: str | None = None) -> str:
        if self.i >= len(self.toks):
            raise PromQLError(f"unexpected end, wanted {text or kind}")
        k, t = self.toks[self.i]
        if (kind and k != kind) or (text and t != text):
            raise PromQLError(f"unexpected {t!r}, wanted {text or kind}")
        self.i += 1
        return t

    def parse(self) -> Any:
        node = self.or_()
        if self.i != len(self.toks):
            raise PromQLError(f"unexpected {self.toks[self.i][1]!r}")
        return node

    def _binary(self, ops: set[str], lower) -> Any:  # noqa: ANN001
        lhs = lower()
        while self.peek() in ops:
            op = self.take()
            is_bool = op in COMPARISONS and self.peek("bool") is not None
            if is_bool:
                self.take()
            lhs = Binary(op, lhs, lower(), is_bool)
        return lhs

    def or_(self) -> Any:
        return self._binary({"or"}, self.and_)

    def and_(self) -> Any:
        return self._binary({"and", "unless"}, self.cmp)

    def cmp(self) -> Any:
        return self._binary(COMPARISONS, self.add)

    def add(self) -> Any:
        return self._binary({"+", "-"}, self.mul)

    def mul(self) -> Any:
        return self._binary({"*", "/", "%"}, self.primary)

    def labels(self) -> tuple[str, ...]:
        self.take(text="(")
        out = []
        while not self.peek(")"):
            out.append(self.take("ident"))
            if not self.peek(")"):
                self.take(text=",")
        self.take(text=")")
        return tuple(out)

    def primary(self) -> Any:
        kind, text = self.toks[self.i] if self.i < len(self.toks) else ("", "")
        if kind == "num":
            self.i += 1
            return Num(float(text))
        if text == "(":
            self.i += 1
            node = self.or_()
            self.take(text=")")
            return node
        name = self.take("ident")
        if name in AGGREGATIONS:
            grouping, labels = "without", ()
            if self.peek() in ("by", "without"):
                grouping, labels = self.take(), self.labels()
            self.take(text="(")
            expr = self.or_()
            self.take(text=")")
            if self.peek() in ("by", "without"):
                grouping, labels = self.take(), self.labels()
            return Agg(name, grouping, labels, expr)
        if self.peek("("):
            if name not in FUNCTIONS:
                raise PromQLError(f"function {name}() is outside the evaluated subset")
            self.take(text="(")
            arg = self.or_()
            self.take(text=")")
            if not (isinstance(arg, Selector) and arg.range is not None):
                raise PromQLError(f"{name}() needs a range selector")
            return Call(name, arg)
        matchers = []
        if self.peek("{"):
            self.take(text="{")
            while not self.peek("}"):
                label = self.take("ident")
                op = self.take("op")
                if op not in ("=", "!=", "=~", "!~"):
                    raise PromQLError(f"bad matcher operator {op}")
                matchers.append((label, op, ast.literal_eval(self.take("str"))))
                if not self.peek("}"):
                    self.take(text=",")
            self.take(text="}")
        rng = None
        if self.peek("["):
            self.take(text="[")
            rng = duration(self.take("dur"))
            self.take(text="]")
        offset = 0.0
        if self.peek("offset"):
            self.take()
            offset = duration(self.take("dur"))
        return Selector(name, tuple(matchers), rng, offset)


def parse_promql(expr: str) -> Any:
    return _Parser(expr).parse()


def walk(node: Any) -> Iterator[Any]:
    yield node
    if isinstance(node, Call):
        yield from walk(node.arg)
    elif isinstance(node, Agg):
        yield from walk(node.expr)
    elif isinstance(node, Binary):
        yield from walk(node.lhs)
        yield from walk(node.rhs)


def selectors(node: Any) -> list[Selector]:
    return [n for n in walk(node) if isinstance(n, Selector)]


# -- the names a query uses, against what the writer writes -------------------------------


def name_problems(expr: str, cat: Catalogue) -> list[str]:
    """Why ``expr`` (already interpolated) would show nothing or wrong series over composeguard's
    textfile: a metric, label, or label value the writer does not write, a grouping label that
    a selected metric does not have. Empty when all is well."""
    try:
        tree = parse_promql(expr)
    except PromQLError as e:
        return [f"{expr!r}: {e}"]
    out = []
    for s in selectors(tree):
        if s.metric not in cat:
            out.append(f"metric {s.metric} is not written by composeguard (it writes {sorted(cat)})")
            continue
        for label, op, value in s.matchers:
            if label not in cat[s.metric]:
                out.append(f"{s.metric} has no label {label!r} (it has {sorted(cat[s.metric])})")
            elif op == "=" and value not in cat[s.metric][label]:
                out.append(
                    f'{s.metric}{{{label}="{value}"}}: the writer writes no such value '
                    f"(it writes {sorted(cat[s.metric][label])})"
                )
            elif op == "=~" and not any(re.fullmatch(value, v) for v in cat[s.metric][label]):
                out.append(f'{s.metric}{{{label}=~"{value}"}} matches no value the writer writes')
    for node in walk(tree):
        if isinstance(node, Agg) and node.grouping == "by":
            for s in selectors(node.expr):
                for label in node.labels:
                    if s.metric in cat and label not in cat[s.metric]:
                        out.append(f"{node.op} by ({label}): {s.metric} has no label {label!r}")
    return out


def output_labels(node: Any, cat: Catalogue) -> set[str]:
    """The labels the result series of ``node`` carry (what a legend or a table can show)."""
    if isinstance(node, Selector):
        return set(cat.get(node.metric, {}))
    if isinstance(node, Call):
        return output_labels(node.arg, cat)
    if isinstance(node, Agg):
        inner = output_labels(node.expr, cat)
        return set(node.labels) & inner if node.grouping == "by" else inner - set(node.labels)
    if isinstance(node, Binary):
        lhs, rhs = output_labels(node.lhs, cat), output_labels(node.rhs, cat)
        if node.op == "or":
            return lhs | rhs
        return lhs if not isinstance(node.lhs, Num) else rhs
    return set()


def label_values_problems(query: str, cat: Catalogue) -> list[str]:
    m = re.fullmatch(r"label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_]\w*)\s*\)", query)
    if not m:
        return [f"not a label_values(metric, label) query: {query!r}"]
    metric, label = m.groups()
    if metric not in cat:
        return [f"metric {metric} is not written by composeguard"]
    if label not in cat[metric]:
        return [f"{metric} has no label {label!r}"]
    return []


def duplicate_panel_ids(panels: list[dict[str, Any]]) -> list[int]:
    seen: set[int] = set()
    dup = []
    for p in panels:
        for q in [p, *p.get("panels", [])]:  # a row's panels share the dashboard's id space
            if q.get("id") in seen:
                dup.append(q["id"])
            seen.add(q.get("id"))
    return dup


# -- Grafana's interpolation and the evaluation --------------------------------------------


def interpolate(expr: str, project: str, interval: str = "1h", range_: str = "1d") -> str:
    """What Grafana sends for a single selected project (``.*`` for All, the allValue)."""
    assert project == ".*" or re.fullmatch(r"[a-z0-9][a-z0-9_-]*", project), project
    return (
        expr.replace("${project}", project).replace("$project", project)
        .replace("$__interval", interval).replace("$__range", range_)
    )


def _sig(key: Key) -> Key:
    return tuple(kv for kv in key if kv[0] != "__name__")


def _matches(key: Key, matchers: tuple[tuple[str, str, str], ...]) -> bool:
    labels = dict(key)
    for label, op, value in matchers:
        have = labels.get(label, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


def _selects(sel: Selector, key: Key) -> bool:
    return dict(key)["__name__"] == sel.metric and _matches(key, sel.matchers)


def _arith(op: str, a: float, b: float) -> float:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else float("nan"), "%": a % b}[op]


def _compare(op: str, a: float, b: float) -> bool:
    return {"==": a == b, "!=": a != b, ">": a > b, "<": a < b, ">=": a >= b, "<=": a <= b}[op]


def evaluate(node: Any, timeline: Timeline, at: float) -> dict[Key, float] | float:
    """The instant value of ``node`` at time ``at`` over the scrapes in ``timeline``."""
    if isinstance(node, Num):
        return node.value
    if isinstance(node, Selector):
        if node.range is not None:
            raise PromQLError("a range selector outside increase()")
        t = at - node.offset
        scrapes = [snap for ts, snap in timeline if t - LOOKBACK < ts <= t]
        latest = scrapes[-1] if scrapes else {}
        return {k: v for k, v in latest.items() if _selects(node, k)}
    if isinstance(node, Call):  # increase(): the counter's rise over (t - range, t], resets counted
        sel, t = node.arg, at - node.arg.offset
        points: dict[Key, list[float]] = {}
        for ts, snap in timeline:
            if t - sel.range < ts <= t:
                for k, v in snap.items():
                    if _selects(sel, k):
                        points.setdefault(_sig(k), []).append(v)
        return {
            k: sum(b - a if b >= a else b for a, b in zip(vs, vs[1:], strict=False))
            for k, vs in points.items()
            if len(vs) >= 2
        }
    if isinstance(node, Agg):
        vec = evaluate(node.expr, timeline, at)
        assert isinstance(vec, dict)
        groups: dict[Key, list[float]] = {}
        for k, v in vec.items():
            labels = dict(_sig(k))
            if node.grouping == "by":
                gk = tuple(sorted((n, labels[n]) for n in node.labels if labels.get(n)))
            else:
                gk = tuple(sorted((n, x) for n, x in labels.items() if n not in node.labels))
            groups.setdefault(gk, []).append(v)
        fn = {"sum": sum, "min": min, "max": max, "count": len}[node.op]
        return {k: float(fn(vs)) for k, vs in groups.items()}
    assert isinstance(node, Binary)
    lhs, rhs = evaluate(node.lhs, timeline, at), evaluate(node.rhs, timeline, at)
    if node.op in ("or", "and", "unless"):
        assert isinstance(lhs, dict) and isinstance(rhs, dict), "set operators need two vectors"
        rsigs, lsigs = {_sig(k) for k in rhs}, {_sig(k) for k in lhs}
        if node.op == "and":
            return {k: v for k, v in lhs.items() if _sig(k) in rsigs}
        if node.op == "unless":
            return {k: v for k, v in lhs.items() if _sig(k) not in rsigs}
        return {**lhs, **{k: v for k, v in rhs.items() if _sig(k) not in lsigs}}
    if isinstance(lhs, dict) and isinstance(rhs, dict):
        raise PromQLError("vector-to-vector arithmetic is outside the evaluated subset")
    if not isinstance(lhs, dict) and not isinstance(rhs, dict):
        if node.op in COMPARISONS:
            return float(_compare(node.op, lhs, rhs))
        return _arith(node.op, lhs, rhs)
    vec, scalar, vec_left = (lhs, rhs, True) if isinstance(lhs, dict) else (rhs, lhs, False)
    out: dict[Key, float] = {}
    for k, v in vec.items():
        a, b = (v, scalar) if vec_left else (scalar, v)
        if node.op in COMPARISONS:
            if node.bool_:
                out[_sig(k)] = float(_compare(node.op, a, b))
            elif _compare(node.op, a, b):
                out[k] = v  # a filter keeps the sample as it is, its name included
        else:
            out[_sig(k)] = _arith(node.op, a, b)
    return out


def query(expr: str, timeline: Timeline, at: float, project: str) -> dict[Key, float]:
    result = evaluate(parse_promql(interpolate(expr, project)), timeline, at)
    assert isinstance(result, dict), f"{expr} is a scalar"
    return result


def by_labels(result: dict[Key, float], *names: str) -> dict[tuple[str, ...], float]:
    """``result`` keyed by the values of ``names`` (one series per combination expected)."""
    out: dict[tuple[str, ...], float] = {}
    for k, v in result.items():
        labels = dict(k)
        key = tuple(labels.get(n, "") for n in names)
        assert key not in out, f"two series for {key}: {result}"
        out[key] = v
    return out


# -- the dashboard's parts -----------------------------------------------------------------


def panels(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for p in dash["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return [p for p in out if p["type"] != "row"]


def panel(dash: dict[str, Any], title: str) -> dict[str, Any]:
    (found,) = [p for p in panels(dash) if p.get("title") == title]
    return found


def expr_of(p: dict[str, Any]) -> str:
    (target,) = p["targets"]
    return target["expr"]


def variable(dash: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [v for v in dash["templating"]["list"] if v["name"] == name]
    return found


def value_mapping(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The panel's value -> {text, color} mappings of type "value"."""
    out: dict[str, dict[str, Any]] = {}
    for m in p["fieldConfig"]["defaults"].get("mappings", []):
        if m["type"] == "value":
            out.update(m["options"])
    return out


def all_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target."""
    return [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]


# -- the real writer ------------------------------------------------------------------------


def finished_journal(project: str, outcome: str, n: int) -> Journal:
    """A transaction's journal as it stands when notify() runs: finished and saved (which, as in
    a real run, makes the state directory the writer keeps its counters in)."""
    j = Journal(id=f"20260101T0000{n % 60:02d}Z-{n:04x}", project=project, command="update",
                created="2026-01-01T00:00:00+00:00")
    j.finish(outcome, "" if outcome == "committed" else "app: unhealthy")
    return j


class Writer:
    """composeguard's notify() with only the Prometheus textfile configured, as in production:
    COMPOSEGUARD_PROMETHEUS_FILE and a private COMPOSEGUARD_STATE_DIR (the counters' store)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture):
        self.path = tmp_path / "textfile" / "composeguard.prom"
        monkeypatch.setenv("COMPOSEGUARD_STATE_DIR", str(tmp_path / "cg-state"))
        monkeypatch.setenv("COMPOSEGUARD_PROMETHEUS_FILE", str(self.path))
        self.caplog, self.n = caplog, 0

    def transaction(self, project: str, outcome: str) -> None:
        self.n += 1
        with self.caplog.at_level(logging.WARNING, logger="composeguard.notify"):
            notify(ProjectSettings(), finished_journal(project, outcome, self.n))
        warnings = [r.getMessage() for r in self.caplog.records if r.name == "composeguard.notify"]
        assert not warnings, f"the writer failed: {warnings}"

    def samples(self) -> list[Sample]:
        return parse_textfile(self.path.read_text(encoding="utf-8")) if self.path.exists() else []


@pytest.fixture
def writer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Writer:
    return Writer(tmp_path, monkeypatch, caplog)


@pytest.fixture
def written(writer: Writer) -> Catalogue:
    """What the writer writes once it has seen every outcome (and a second project)."""
    for o in OUTCOMES:
        writer.transaction("alpha", o)
    writer.transaction("beta", "committed")
    return catalogue(writer.samples())


# -- the tests ----------------------------------------------------------------------------


def test_the_writer_output_parses_and_is_what_the_readme_names(written: Catalogue) -> None:
    # The README promises these five; the dashboard is checked against the writer itself below.
    assert set(written) == {
        "composeguard_last_run_timestamp_seconds", "composeguard_last_outcome",
        "composeguard_rollbacks_total", "composeguard_transactions_total",
        "composeguard_updates_available",
    }
    assert written["composeguard_last_outcome"]["outcome"] == set(OUTCOMES)
    assert written["composeguard_rollbacks_total"]["project"] == {"alpha", "beta"}


def test_the_textfile_parser_rejects_what_node_exporter_would() -> None:
    with pytest.raises(ValueError, match="not a sample"):
        parse_textfile("# TYPE a gauge\na{project=\"x\"\n")
    with pytest.raises(ValueError, match="no TYPE"):
        parse_textfile('b{project="x"} 1\n')
    with pytest.raises(ValueError, match="bad labels"):
        parse_textfile('# TYPE a gauge\na{project=x} 1\n')


def test_it_is_a_grafana_export_with_a_prometheus_input() -> None:
    dash = load_dashboard()
    (inp,) = dash["__inputs"]
    assert inp["name"] == "DS_PROMETHEUS"
    assert (inp["type"], inp["pluginId"]) == ("datasource", "prometheus")
    assert {"label", "pluginName"} <= set(inp)
    text = DASHBOARD.read_text(encoding="utf-8")
    # The importer replaces ${NAME} of each input everywhere; any other ${...} must be a variable
    # of the dashboard (or Grafana's own), else it would stay unresolved.
    names = {v["name"] for v in dash["templating"]["list"]}
    for ref in set(re.findall(r"\$\{([A-Za-z0-9_]+)\}", text)):
        assert ref == "DS_PROMETHEUS" or ref in names, f"${{{ref}}} is neither an input nor a variable"
    assert "${DS_PROMETHEUS}" in text, "the input is used nowhere"

    requires = {(r["type"], r["id"]) for r in dash["__requires"]}
    assert {("grafana", "grafana"), ("datasource", "prometheus")} <= requires
    for p in panels(dash):
        assert ("panel", p["type"]) in requires, f"__requires lacks the {p['type']} panel"

    ds = variable(dash, "datasource")
    assert (ds["type"], ds["query"]) == ("datasource", "prometheus")
    assert ds["current"]["value"] == "${DS_PROMETHEUS}"
    via_variable = {"type": "prometheus", "uid": "${datasource}"}
    project = variable(dash, "project")
    assert project["type"] == "query" and project["datasource"] == via_variable
    for p in panels(dash):
        assert p["datasource"] == via_variable, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"], p["title"]
            assert '"$project"' in t["expr"], f"{p['title']} ignores $project"
    assert isinstance(dash["schemaVersion"], int) and dash["schemaVersion"] >= 39


def schema_validator():  # noqa: ANN201 - jsonschema is imported here, the lab test imports this module
    import jsonschema

    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    # The one place the published schema and Grafana's own serialisation disagree for this
    # dashboard: the first threshold step is -Infinity, which Grafana writes as null (the
    # schema's own description of Threshold.value says so). Everything else is as published.
    # Other things Grafana's exporter writes that this schema rejects are left out of the
    # dashboard instead (Grafana accepts it without them): "id": null, "timepicker": {}, a query
    # variable's "definition" and its query as {query, refId} (a plain string here), a datasource
    # variable's "queryValue", and field overrides (their matcher options are strings).
    schema["definitions"]["Threshold"]["properties"]["value"] = {"type": ["number", "null"]}
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def schema_errors(dash: dict[str, Any]) -> list[str]:
    model = {k: v for k, v in dash.items() if k not in EXPORT_ENVELOPE}
    errors = schema_validator().iter_errors(model)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors]


def test_the_dashboard_is_valid_against_grafanas_published_schema() -> None:
    assert schema_errors(load_dashboard()) == []


@pytest.mark.parametrize(
    "spoil",
    [
        lambda d: d["panels"][0]["gridPos"].update(w=30),
        lambda d: d.update(colour="red"),
        lambda d: d["panels"][1]["fieldConfig"]["defaults"].update(mapings=[]),
        lambda d: d["templating"]["list"][1].update(type="labels"),
        lambda d: d.pop("schemaVersion"),
    ],
    ids=["panel-wider-than-grid", "unknown-top-level-key", "misspelt-field-option", "bad-variable-type",
         "no-schemaVersion"],
)
def test_the_schema_check_catches_a_broken_dashboard(spoil) -> None:  # noqa: ANN001
    dash = copy.deepcopy(load_dashboard())
    spoil(dash)
    assert schema_errors(dash), "the schema accepted a broken dashboard"


def test_panel_ids_are_unique() -> None:
    dash = load_dashboard()
    assert all(isinstance(p.get("id"), int) for p in panels(dash))
    assert duplicate_panel_ids(dash["panels"]) == []
    assert duplicate_panel_ids([{"id": 1}, {"id": 2, "panels": [{"id": 1}]}]) == [1]  # the helper works


def test_every_query_names_only_what_the_writer_writes(written: Catalogue) -> None:
    dash = load_dashboard()
    queries = all_queries(dash)
    assert len(queries) >= 5
    for title, expr in queries:
        for project in ("alpha", ".*"):
            assert name_problems(interpolate(expr, project), written) == [], title
    assert label_values_problems(variable(dash, "project")["query"], written) == []


@pytest.mark.parametrize(
    ("expr", "why"),
    [
        ('composeguard_rollback_total{project=~"$project"}', "composeguard_rollback_total is not written"),
        ("composeguard_last_run_seconds", "composeguard_last_run_seconds is not written"),
        ('composeguard_rollbacks_total{service="app"}', "no label 'service'"),
        ('composeguard_transactions_total{outcome="rolled_back"}', "no such value"),
        ('composeguard_last_outcome{outcome=~"roll.*_back"}', "matches no value"),
        ("sum by (outcome) (increase(composeguard_rollbacks_total[$__interval]))", "has no label 'outcome'"),
        ("rate(composeguard_rollbacks_total[5m])", "outside the evaluated subset"),
    ],
)
def test_the_name_check_fails_a_query_the_writer_cannot_answer(
    written: Catalogue, expr: str, why: str
) -> None:
    problems = name_problems(interpolate(expr, "alpha"), written)
    assert any(why in p for p in problems), problems


def test_a_variable_query_on_an_unwritten_label_fails(written: Catalogue) -> None:
    good = "label_values(composeguard_last_run_timestamp_seconds, project)"
    assert label_values_problems(good, written) == []
    assert label_values_problems(good.replace("project", "service"), written)
    assert label_values_problems("label_values(composeguard_runs_total, project)", written)


def test_legends_and_table_columns_show_labels_the_results_carry(written: Catalogue) -> None:
    dash = load_dashboard()
    for p in panels(dash):
        for t in p["targets"]:
            have = output_labels(parse_promql(interpolate(t["expr"], "alpha")), written)
            shown = set(re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", t.get("legendFormat", "")))
            assert shown <= have, f"{p['title']}: legend shows {shown - have}, the query gives {have}"
        for tr in p.get("transformations", []):
            if tr["id"] == "organize":
                opts = tr["options"]
                named = set(opts.get("indexByName", {})) | set(opts.get("renameByName", {}))
                have = set().union(*(output_labels(parse_promql(interpolate(t["expr"], "alpha")), written)
                                     for t in p["targets"]))
                assert named - NOT_WRITER_FIELDS <= have, f"{p['title']}: columns {named - have} do not exist"
    # and the check sees a wrong legend: sum by (project) drops outcome
    wrong = parse_promql('sum by (project) (composeguard_transactions_total{project=~"alpha"})')
    assert "outcome" not in output_labels(wrong, written)


def test_the_outcome_mapping_covers_exactly_the_outcomes_the_writer_writes(written: Catalogue) -> None:
    p = panel(load_dashboard(), "Last outcome")
    mapping = value_mapping(p)
    assert set(mapping) == written["composeguard_last_outcome"]["outcome"]
    assert all(m.get("text") and m.get("color") for m in mapping.values())
    assert mapping["rollback-failed"]["color"] == "red" and mapping["committed"]["color"] == "green"


def test_the_panels_over_a_scrape_history_of_the_real_writer(writer: Writer) -> None:
    """Scrapes once a minute for three hours; the transactions happen at the given minutes.
    Every value below comes from textfiles composeguard's writer wrote."""
    events = {30: ("alpha", "rolled-back"), 90: ("alpha", "committed"), 100: ("alpha", "rolled-back"),
              120: ("beta", "rollback-failed")}
    timeline: Timeline = []
    wall: dict[str, tuple[float, float]] = {}
    for minute in range(0, 181):
        if minute in events:
            project, outcome = events[minute]
            before = time.time()
            writer.transaction(project, outcome)
            wall[project] = (before, time.time())
        timeline.append((minute * 60.0, snapshot(writer.samples())))
    dash = load_dashboard()

    rollbacks = expr_of(panel(dash, "Rollbacks per project"))
    hourly = {h: by_labels(query(rollbacks, timeline, h * 3600.0, ".*"), "project") for h in (1, 2, 3)}
    # alpha's first rollback is its first transaction: the series is born at 1 and still counts
    assert hourly == {1: {("alpha",): 1.0}, 2: {("alpha",): 1.0, ("beta",): 1.0},
                      3: {("alpha",): 0.0, ("beta",): 0.0}}
    assert by_labels(query(rollbacks, timeline, 7200.0, "beta"), "project") == {("beta",): 1.0}

    upgrades = expr_of(panel(dash, "Upgrades per project and outcome"))
    assert by_labels(query(upgrades, timeline, 7200.0, ".*"), "project", "outcome") == {
        ("alpha", "committed"): 1.0, ("alpha", "rolled-back"): 1.0, ("beta", "rollback-failed"): 1.0,
    }
    total = {}
    for h in (1, 2, 3):
        for k, v in by_labels(query(upgrades, timeline, h * 3600.0, ".*"), "project", "outcome").items():
            total[k] = total.get(k, 0.0) + v
    assert total == {
        ("alpha", "rolled-back"): 2.0, ("alpha", "committed"): 1.0, ("beta", "rollback-failed"): 1.0
    }

    end = 180 * 60.0
    outcome = query(expr_of(panel(dash, "Last outcome")), timeline, end, ".*")
    assert by_labels(outcome, "project", "outcome") == {("alpha", "rolled-back"): 1.0,
                                                        ("beta", "rollback-failed"): 1.0}
    failed = query(expr_of(panel(dash, "Failed rollbacks (all time)")), timeline, end, ".*")
    assert by_labels(failed, "project") == {("beta",): 1.0}

    last = by_labels(query(expr_of(panel(dash, "Last upgrade transaction")), timeline, end, ".*"), "project")
    for project, (lo, hi) in wall.items():  # milliseconds, for Grafana's dateTimeFromNow unit
        assert lo * 1000 - 1000 <= last[(project,)] <= hi * 1000 + 1000


def test_the_evaluator_agrees_with_promql_on_the_basics() -> None:
    """The evaluator's own rules the panel checks above rely on, on hand-made series."""
    a = ("__name__", "c")
    tl: Timeline = [(0.0, {}), (60.0, {(a, ("project", "x")): 1.0}), (120.0, {(a, ("project", "x")): 3.0}),
                    (180.0, {(a, ("project", "x")): 0.0})]  # a reset
    assert evaluate(parse_promql("increase(c[10m])"), tl, 180.0) == {(("project", "x"),): 2.0}
    assert evaluate(parse_promql("c unless c offset 1m"), tl, 60.0) == {(a, ("project", "x")): 1.0}
    assert evaluate(parse_promql("c unless c offset 1m"), tl, 120.0) == {}
    assert evaluate(parse_promql("c == 3"), tl, 120.0) == {(a, ("project", "x")): 3.0}
    assert evaluate(parse_promql("c"), tl, 180.0 + LOOKBACK - 1) == {(a, ("project", "x")): 0.0}
    assert evaluate(parse_promql("c"), tl, 180.0 + LOOKBACK + 1) == {}  # past the lookback
    assert evaluate(parse_promql("sum by (project) (c * 2)"), tl, 120.0) == {(("project", "x"),): 6.0}
    with pytest.raises(PromQLError):
        parse_promql("c{project=}")
