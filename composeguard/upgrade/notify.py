"""Tell the owner what a transaction did: a hook command, Apprise, a Prometheus textfile.

The hook gets the outcome in ``COMPOSEGUARD_*`` environment variables and as JSON on stdin,
so any notifier works (a mail script, ntfy, curl to a webhook). A failing notifier is a
warning, never a reason to change the outcome of an upgrade.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from composeguard import execute
from composeguard.errors import CommandError
from composeguard.settings import ProjectSettings
from composeguard.state import make_private_dir, read_json, state_dir, write_atomic, write_json
from composeguard.upgrade.journal import Journal

log = logging.getLogger("composeguard.notify")

EXIT_CODES = {"committed": 0, "aborted": 1, "rolled-back": 3, "rollback-failed": 4}


def service_doc(c: Any) -> dict[str, Any]:
    """One change: the old and new digest (or image ID) and what changed (OCI labels)."""
    return {"old": c.old_digest or c.old_image_id, "new": c.new_digest or c.new_image_id, "labels": c.labels}


def summary(j: Journal) -> dict[str, Any]:
    return {
        "project": j.project,
        "txn": j.id,
        "command": j.command,
        "outcome": j.outcome,
        "exit_code": EXIT_CODES.get(j.outcome or "", 1),
        "reason": j.reason,
        "services": {s: service_doc(c) for s, c in j.changes.items()},
        "snapshots": [s.name for s in j.snapshots],
        "failed_states": j.failed_states,
        "started": j.created,
        "finished": j.finished,
    }


def notify(settings: ProjectSettings, j: Journal) -> None:
    """Run every configured notifier. Each one that fails, whatever the error (a corrupt
    metrics store, an unwritable textfile folder, an Apprise plugin raising), is a warning:
    it never changes the exit code of the upgrade and never stops ``update --all``."""
    send(settings, summary(j))


def notify_available(project: Any, changes: dict[str, Any]) -> None:
    """``update: notify``: tell that new digests are there (once per digest), installing
    nothing. The outcome is ``available``, the exit code 0, there is no transaction."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    doc = {
        "project": project.name,
        "txn": "",
        "command": "update",
        "outcome": "available",
        "exit_code": 0,
        "reason": f"a new image is available for {', '.join(sorted(changes))} (update: notify)",
        "services": {s: service_doc(c) for s, c in sorted(changes.items())},
        "snapshots": [],
        "failed_states": [],
        "started": now,
        "finished": now,
    }
    send(project.settings, doc)


def send(settings: ProjectSettings, doc: dict[str, Any]) -> None:
    prom = os.environ.get("COMPOSEGUARD_PROMETHEUS_FILE")
    jobs: list[tuple[str, Any]] = []
    if settings.hook:
        jobs.append(("the notification hook", lambda: run_hook(list(settings.hook), doc)))
    if settings.notify:
        jobs.append(("Apprise", lambda: send_apprise(list(settings.notify), doc)))
    if prom:
        jobs.append((f"the Prometheus file {prom}", lambda: write_prometheus(Path(prom), doc)))
    for what, job in jobs:
        try:
            job()
        except Exception as e:  # noqa: BLE001 - a notifier must never change the outcome
            log.warning("%s failed: %s", what, e)


def run_hook(cmd: list[str], doc: dict[str, Any]) -> None:
    env = {
        **os.environ,
        "COMPOSEGUARD_PROJECT": doc["project"],
        "COMPOSEGUARD_TXN": doc["txn"],
        "COMPOSEGUARD_OUTCOME": str(doc["outcome"]),
        "COMPOSEGUARD_EXIT_CODE": str(doc["exit_code"]),
        "COMPOSEGUARD_SERVICES": ",".join(doc["services"]),
        "COMPOSEGUARD_REASON": doc["reason"],
    }
    try:
        proc = execute.run(cmd, input_text=json.dumps(doc) + "\n", env=env, check=False, timeout=120)
        if proc.returncode != 0:
            log.warning("the notification hook %s exited with %d", cmd[0], proc.returncode)
    except CommandError as e:
        log.warning("the notification hook could not run: %s", e)


def send_apprise(urls: list[str], doc: dict[str, Any]) -> None:
    try:
        import apprise  # type: ignore[import-not-found]
    except ImportError:
        log.warning(
            "x-composeguard.notify is set but Apprise is not installed (pip install 'composeguard[apprise]')"
        )
        return
    a = apprise.Apprise()
    for u in urls:
        a.add(u)
    title = f"composeguard: {doc['project']} {doc['outcome']}"
    body = "\n".join(
        [f"{s}: {v['old']} -> {v['new']}" + _versions(v) for s, v in doc["services"].items()]
        + ([f"reason: {doc['reason']}"] if doc["reason"] else [])
    )
    if not a.notify(title=title, body=body):
        log.warning("Apprise could not deliver the notification")


def _versions(v: dict[str, Any]) -> str:
    from composeguard.upgrade.policy import describe

    said = describe(v.get("labels") or {})
    return f" ({said})" if said else ""


def write_prometheus(path: Path, doc: dict[str, Any]) -> None:
    """A node_exporter textfile: last run, last outcome and counters per project."""
    store = state_dir() / "metrics.json"
    # One store for every project, but the transaction locks are per project: two projects
    # ending at once must not lose each other's counts.
    make_private_dir(state_dir())
    with open(state_dir() / "metrics.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data: dict[str, Any] = read_json(store) if store.exists() else {}
        p = data.setdefault(doc["project"], {"transactions": {}, "rollbacks": 0})
        if doc["outcome"] == "available":  # told, not installed: no transaction
            p["available"] = sorted({*p.get("available", []), *doc["services"]})
        else:
            p["last_run"] = time.time()
            p["last_outcome"] = doc["outcome"]
            p["transactions"][doc["outcome"]] = p["transactions"].get(doc["outcome"], 0) + 1
            if doc["outcome"] in ("rolled-back", "rollback-failed"):
                p["rollbacks"] += 1
            if doc["outcome"] == "committed":
                p["available"] = [s for s in p.get("available", []) if s not in doc["services"]]
        write_json(store, data)
    lines = [
        "# HELP composeguard_last_run_timestamp_seconds When the last transaction of a project ended.",
        "# TYPE composeguard_last_run_timestamp_seconds gauge",
    ]
    lines += [
        f'composeguard_last_run_timestamp_seconds{{project="{k}"}} {v["last_run"]:.0f}'
        for k, v in sorted(data.items())
        if "last_run" in v
    ]
    lines += [
        "# HELP composeguard_updates_available Services with a new image update: notify did not install.",
        "# TYPE composeguard_updates_available gauge",
    ]
    lines += [
        f'composeguard_updates_available{{project="{k}"}} {len(v.get("available", []))}'
        for k, v in sorted(data.items())
    ]
    lines += [
        "# HELP composeguard_last_outcome 1 for the outcome of the last transaction.",
        "# TYPE composeguard_last_outcome gauge",
    ]
    for k, v in sorted(data.items()):
        if "last_outcome" not in v:
            continue
        for o in ("committed", "rolled-back", "rollback-failed", "aborted"):
            lines.append(
                f'composeguard_last_outcome{{project="{k}",outcome="{o}"}} '
                f"{1 if v['last_outcome'] == o else 0}"
            )
    lines += [
        "# HELP composeguard_rollbacks_total Upgrades rolled back (or failed to roll back).",
        "# TYPE composeguard_rollbacks_total counter",
    ]
    lines += [
        f'composeguard_rollbacks_total{{project="{k}"}} {v["rollbacks"]}' for k, v in sorted(data.items())
    ]
    lines += [
        "# HELP composeguard_transactions_total Transactions by outcome.",
        "# TYPE composeguard_transactions_total counter",
    ]
    for k, v in sorted(data.items()):
        for o, n in sorted(v["transactions"].items()):
            lines.append(f'composeguard_transactions_total{{project="{k}",outcome="{o}"}} {n}')
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "\n".join(lines) + "\n", mode=0o644)  # node_exporter reads it
