"""Filters for upgrade-fleet.yml: read what composeguard printed, and print the fleet summary.

Ansible loads this folder because it sits beside the playbook. Standard library only; every
filter takes plain data (registered results, lists, dicts) and returns plain data, so the
playbook stays a list of steps and the reading of composeguard's output lives in one place.

composeguard's contract (README "Exit codes"): 0 ok or nothing to do, 2 usage/configuration
(nothing changed), 3 upgrade failed and rolled back, 4 the rollback failed (a human must look),
5 another run holds the project's lock, 1 any other error.
"""

from __future__ import annotations

import fnmatch
import json

PREFIX = "com.docker.compose."

OUTCOMES = {
    0: "ok",
    1: "error",
    2: "not updated",
    3: "rolled back",
    4: "ROLLBACK FAILED",
    5: "locked",
}


def _short(ref):
    """'repo@sha256:0123456789ab…' -> 'sha256:0123456789ab', as composeguard prints it."""
    if not ref:
        return "(none)"
    digest = ref.split("@", 1)[1] if "@" in ref else ref
    return digest[:19] if digest.startswith("sha256:") else digest


def _last_line(text, default=""):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else default


def _json(text):
    try:
        return json.loads(text or "")
    except ValueError:
        return None


def _not_run(result):
    """Why a registered command result has no output to read, or ''."""
    if not isinstance(result, dict):
        return "no result"
    if result.get("unreachable"):
        return "unreachable: " + _last_line(result.get("msg"), "?")
    if result.get("skipped"):
        return "skipped"
    if "rc" not in result:
        return _last_line(result.get("msg"), "the command did not run")
    return ""


# -- check mode: the projects `update --all` would visit ----------------------------------------
def composeguard_projects(containers, pattern=""):
    """The compose projects on a host, from ``docker container inspect`` of its containers that
    carry compose's project label, the way composeguard's ``update --all`` reads them: the
    compose files, working folder and env files its containers were started with, and the
    services that have containers (one-off ``run`` containers left out). ``pattern``: only
    names that match the glob, as ``update --all --filter``.

    Returns ``[{name, args, services, problem}]``; ``args`` are the compose global options that
    run composeguard on the project as it was started. Unlike composeguard itself this runs on
    the controller and cannot look at the host's files: a comma-joined file list is split at
    every comma (a path with a comma in it makes ``plan`` fail for that project).
    """
    by_name = {}
    for c in containers or []:
        labels = (c.get("Config") or {}).get("Labels") or {}
        name = labels.get(PREFIX + "project")
        if not name or labels.get(PREFIX + "oneoff") == "True" or not labels.get(PREFIX + "service"):
            continue
        if pattern and not fnmatch.fnmatchcase(name, pattern):
            continue
        by_name.setdefault(name, []).append(labels)
    out = []
    for name, labels in sorted(by_name.items()):
        project = {"name": name, "args": [], "services": sorted({lb[PREFIX + "service"] for lb in labels}),
                   "problem": ""}
        seen = {}
        for key, what in (
            ("project.config_files", "compose files"),
            ("project.working_dir", "working folders"),
            ("project.environment_file", "env files"),
        ):
            values = {lb.get(PREFIX + key, "") for lb in labels}
            if len(values) > 1 and not project["problem"]:
                project["problem"] = f"its containers were started with different {what}"
            seen[key] = sorted(values)[0]
        if not project["problem"] and not (seen["project.config_files"] and seen["project.working_dir"]):
            project["problem"] = "its containers do not say which compose files started it"
        if not project["problem"]:
            args = ["-p", name, "--project-directory", seen["project.working_dir"]]
            for f in seen["project.config_files"].split(","):
                args += ["-f", f]
            for e in filter(None, seen["project.environment_file"].split(",")):
                args += ["--env-file", e]
            project["args"] = args
        out.append(project)
    return out


def composeguard_plan_rows(plan_results):
    """The registered loop of ``composeguard … plan --json`` (``item`` = a project from
    composeguard_projects) -> one row per project: what ``update`` would do."""
    rows = []
    for r in (plan_results or {}).get("results", []):
        project = r.get("item") or {}
        row = {"project": project.get("name", "?"), "exit_code": None, "outcome": "", "detail": "",
               "txn": "", "stop": False}
        why = project.get("problem") or _not_run(r)
        doc = _json(r.get("stdout")) if not why else None
        if project.get("problem"):
            row.update(outcome="not checked", detail=project["problem"])
        elif why:
            row.update(outcome="not checked", detail=why)
        elif r.get("rc") != 0 or not isinstance(doc, dict):
            row.update(exit_code=r.get("rc"), outcome=f"plan failed (exit {r.get('rc')})",
                       detail=_last_line(r.get("stderr"), _last_line(r.get("stdout"), "?")))
        else:
            changes = doc.get("changes") or []
            row["exit_code"] = 0
            if not changes:
                row["outcome"] = "up to date"
            else:
                row["outcome"] = "would upgrade"
                parts = [f"{c.get('service')}: {_short(c.get('old_digest') or c.get('old_image_id'))} -> "
                         f"{_short(c.get('new_digest') or c.get('new_image_id'))}" for c in changes]
                unprotected = [f"{s}:{u.get('target')}" for s, v in (doc.get("services") or {}).items()
                               for u in v.get("unprotected") or []]
                if unprotected:
                    parts.append("NOT protected: " + ", ".join(unprotected))
                row["detail"] = "; ".join(parts)
        rows.append(row)
    return rows


# -- the real run: update --all --json, and each project's history ------------------------------
def composeguard_update_projects(update):
    """The project names a registered ``update --all --json`` reported on ([] when unreadable)."""
    doc = None if _not_run(update) else _json(update.get("stdout"))
    return [r.get("project") for r in doc if r.get("project")] if isinstance(doc, list) else []


def composeguard_update_rows(update, histories=None, stamp="", stop_on=(3, 4)):
    """``update``: the registered ``composeguard update --all --json``; ``histories``: the
    registered loop of ``composeguard -p NAME history --json`` over its projects; ``stamp``:
    the host's UTC time before the update, as ``%Y%m%dT%H%M%SZ`` (how transaction ids begin).

    One row per project: exit code, outcome, detail, the transaction of this run, and ``stop``
    (the exit code is in ``stop_on``). Exit 0 means "upgraded" or "nothing to update" alike:
    a transaction of the project that began at or after ``stamp`` tells them apart. Output
    that cannot be read (composeguard missing, dockerd down, an unreachable host) is one row
    for the whole host that always stops the rollout: nothing is known about what happened.
    """
    stop_on = [int(c) for c in (stop_on or [])]
    why = _not_run(update)
    doc = None if why else _json(update.get("stdout"))
    if not isinstance(doc, list):
        rc = update.get("rc") if isinstance(update, dict) else None
        detail = why or _last_line(update.get("stderr")) or _last_line(update.get("stdout")) or _last_line(
            update.get("msg"), "no output")
        outcome = "error" if rc is None else f"error (exit {rc})"
        return [{"project": "(all)", "exit_code": rc, "outcome": outcome, "detail": detail, "txn": "",
                 "stop": True}]
    last_txn = {}
    for h in (histories or {}).get("results", []):
        journals = _json(h.get("stdout")) if not _not_run(h) and h.get("rc") == 0 else None
        if isinstance(journals, list) and journals:
            last_txn[h.get("item")] = journals[-1]
    rows = []
    for r in doc:
        code = int(r.get("exit_code", 1))
        name = r.get("project", "?")
        txn = last_txn.get(name) or {}
        ours = bool(stamp) and str(txn.get("id", ""))[:16] >= stamp
        row = {"project": name, "exit_code": code, "outcome": OUTCOMES.get(code, "error"),
               "detail": r.get("message") or "", "txn": txn.get("id", "") if ours else "",
               "stop": code in stop_on}
        if code == 0:
            if not ours:
                row["outcome"] = "up to date"
            elif txn.get("outcome") == "committed":
                row["outcome"] = "upgraded"
                row["detail"] = "; ".join(
                    f"{svc}: {_short(c.get('old_digest') or c.get('old_image_id'))} -> "
                    f"{_short(c.get('new_digest') or c.get('new_image_id'))}"
                    for svc, c in sorted((txn.get("changes") or {}).items()))
            else:
                row["outcome"] = str(txn.get("outcome") or "ok")
        if code != 0:
            row["outcome"] += f" (exit {code})"
        rows.append(row)
    return rows


# -- the summary ---------------------------------------------------------------------------------
def composeguard_fleet_summary(records, fleet):
    """``records``: what each host that ran recorded ({host, rows}), in the order they ran;
    ``fleet``: every host of the play. -> one row per host and project, hosts in ``fleet``
    order, with a ``not run`` row for each host after the host the rollout stopped at."""
    by_host = {r["host"]: r for r in records or []}
    stopped_at = composeguard_stopped_at(records)
    out = []
    for host in fleet or []:
        rec = by_host.get(host)
        if rec is None:
            why = f"rollout stopped at {stopped_at}" if stopped_at else "no result recorded (see the output)"
            out.append({"host": host, "project": "-", "exit_code": None, "outcome": "not run", "detail": why,
                        "txn": "", "stop": False})
            continue
        rows = rec.get("rows") or []
        if not rows:
            out.append({"host": host, "project": "-", "exit_code": 0, "outcome": "no projects",
                        "detail": "no compose project matched", "txn": "", "stop": False})
        for row in rows:
            out.append({"host": host, **row})
    return out


def composeguard_fleet_table(summary):
    """The summary (or one host's rows) as aligned text lines: [HOST] PROJECT OUTCOME DETAIL."""
    with_host = any("host" in r for r in summary or [])
    cells = [("HOST", "PROJECT", "OUTCOME", "DETAIL")] + [
        (
            r.get("host", ""),
            r["project"],
            r["outcome"] + (" <- rollout stopped here" if r.get("stop") else ""),
            " ".join(filter(None, [r.get("detail", ""), f"[txn {r['txn']}]" if r.get("txn") else ""])),
        )
        for r in summary or []
    ]
    if not with_host:
        cells = [c[1:] for c in cells]
    widths = [max(len(str(c[i])) for c in cells) for i in range(len(cells[0]) - 1)]
    padded = [[*(f"{v:<{w}}" for v, w in zip(c, widths, strict=False)), c[-1]] for c in cells]
    return ["  ".join(p).rstrip() for p in padded]


def composeguard_fleet_verdict(summary):
    """'' when every project that ran ended with exit 0; else one line for the failure: where the
    rollout stopped and why, the hosts not run, and the other projects that did not end well."""
    stop = [r for r in summary or [] if r.get("stop")]
    not_run = [r["host"] for r in summary or [] if r.get("outcome") == "not run"]
    bad = [r for r in summary or [] if not r.get("stop") and r.get("exit_code") not in (0, None)]
    parts = []
    if stop:
        parts.append(f"the rollout stopped at {stop[0]['host']} ({stop[0]['project']}: {stop[0]['outcome']})")
    if not_run:
        parts.append("not run: " + ", ".join(not_run))
    if bad:
        ended = [f"{r['host']} {r['project']}: {r['outcome']}" for r in bad]
        parts.append("did not end well: " + ", ".join(ended))
    return "; ".join(parts)


def composeguard_stopped_at(records):
    """The host the rollout stopped at, or ''."""
    return next((r["host"] for r in records or [] if any(x.get("stop") for x in r.get("rows") or [])), "")


class FilterModule:
    def filters(self):
        return {
            "composeguard_projects": composeguard_projects,
            "composeguard_plan_rows": composeguard_plan_rows,
            "composeguard_update_projects": composeguard_update_projects,
            "composeguard_update_rows": composeguard_update_rows,
            "composeguard_fleet_summary": composeguard_fleet_summary,
            "composeguard_fleet_table": composeguard_fleet_table,
            "composeguard_fleet_verdict": composeguard_fleet_verdict,
        }
