"""``composeguard doctor [SERVICE...] [--json] [-v]``: run every check, print the findings
grouped by service (one line each: severity, area, what is the case, the fix), and exit with
doctor's code (findings.py). Changes nothing."""

from __future__ import annotations

import json

import click

from composeguard.compose.project import Project
from composeguard.doctor.cpus import check_cpus
from composeguard.doctor.findings import SEVERITIES, Finding, exit_code
from composeguard.doctor.gpus import check_gpus
from composeguard.doctor.host import HostFacts, Selection, gather_facts
from composeguard.doctor.networks import check_name_resolution, check_networks
from composeguard.doctor.state import check_state
from composeguard.doctor.storage import check_storage
from composeguard.storage.resolve import StorageMapper
from composeguard.upgrade.planner import scope_of


def check_host(project: Project, facts: HostFacts, services: Selection = None) -> list[Finding]:
    """The network, GPU and CPU checks (name resolution is apart: it runs commands)."""
    chosen = None if services is None else list(services)
    return check_networks(project, facts, chosen) + check_gpus(project, facts, chosen) + check_cpus(
        project, facts, chosen
    )


def collect(project: Project, services: list[str]) -> list[Finding]:
    scope = scope_of(project, services, no_deps=True)
    findings = check_storage(project, scope, StorageMapper(project))
    findings += check_host(project, gather_facts(project), scope)
    findings += check_name_resolution(project, scope)
    findings += check_state(project.name, project.settings.retention)
    return findings


def doctor_command(project: Project, services: list[str], as_json: bool, verbose: bool) -> int:
    findings = collect(project, services)
    code = exit_code(findings)
    counts = {s: sum(f.severity == s for f in findings) for s in SEVERITIES}
    if as_json:
        doc = {
            "project": project.name,
            "exit": code,
            "counts": counts,
            "findings": [f.to_json() for f in findings],
        }
        click.echo(json.dumps(doc, indent=2))
        return code
    click.echo(f"project {project.name}")
    order = {s: i for i, s in enumerate(SEVERITIES)}
    shown = [f for f in findings if verbose or f.severity != "ok"]
    for group in sorted({f.service for f in shown}, key=lambda s: (s == "", s)):
        click.echo(group or "(the project and the host)")
        for f in sorted((f for f in shown if f.service == group), key=lambda f: order[f.severity]):
            fix = f" -> {f.fix}" if f.fix else ""
            click.echo(f"  {f.severity:<8} {f.area:<8} {f.message}{fix}")
    summary = ", ".join(f"{n} {s}{'s' if n != 1 else ''}" for s, n in counts.items() if n and s != "ok")
    click.echo(f"{summary or 'nothing wrong'} ({counts['ok']} checks passed)")
    return code
