"""doctor's CPU pinning check: ``cpuset``/``cpus`` that this host cannot give, and services
pinned to the same CPUs."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

from composeguard.compose.project import Project
from composeguard.doctor.findings import Finding
from composeguard.doctor.host import (
    CPU,
    CPU_ONLINE,
    HostFacts,
    Selection,
    format_cpuset,
    parse_cpuset,
    selected,
)

# --- CPU pinning -----------------------------------------------------------------------------






def _cpu_limits(raw: Mapping[str, Any]) -> list[tuple[str, float]]:
    """(where, value) of ``cpus:`` and ``deploy.resources.limits.cpus`` (compose applies both)."""
    limits = ((raw.get("deploy") or {}).get("resources") or {}).get("limits") or {}
    out = []
    for where, value in (("cpus", raw.get("cpus")), ("deploy.resources.limits.cpus", limits.get("cpus"))):
        try:
            out += [(where, float(value))] if value is not None else []
        except (TypeError, ValueError):
            pass  # compose would have refused it
    return out


def check_cpus(project: Project, facts: HostFacts, services: Selection = None) -> list[Finding]:
    """cpuset names online CPUs only, cpus is not more than there are, no two cpusets overlap."""
    chosen = None if services is None else list(services)
    online = facts.online_cpus
    out: list[Finding] = []
    pinned: dict[str, frozenset[int]] = {}
    for s, svc in sorted(project.services.items()):
        text, limits = svc.raw.get("cpuset"), _cpu_limits(svc.raw)
        if text is not None:
            try:
                pinned[s] = parse_cpuset(str(text))
            except ValueError as e:
                fix = 'write it as a list of CPUs and ranges, e.g. "0-3,6"'
                out += [Finding(s, CPU, "error", f"cpuset: {e}", fix)] if selected(chosen, s) else []
                continue
        if not selected(chosen, s) or (text is None and not limits):
            continue
        if online is None:
            out.append(Finding(s, CPU, "hint", f"CPU pinning not checked: {CPU_ONLINE} unreadable", ""))
            continue
        have = format_cpuset(online)
        if s in pinned and pinned[s] - online:
            what = f"cpuset {text} names CPU {format_cpuset(pinned[s] - online)}, not online (online: {have})"
            out.append(Finding(s, CPU, "error", what + ": the container cannot start", f"use CPUs of {have}"))
        elif s in pinned:
            out.append(Finding(s, CPU, "ok", f"cpuset {text}: all online"))
        for where, value in limits:
            if value > len(online):
                what = f"{where}: {value:g}, but this host has {len(online)} online CPUs: dockerd refuses it"
                out.append(Finding(s, CPU, "error", what, f"set {where} to at most {len(online)}"))
    for a, b in itertools.combinations(sorted(pinned), 2):
        shared = pinned[a] & pinned[b]
        if shared and selected(chosen, a, b):
            what = (
                f"cpuset {format_cpuset(pinned[a])} overlaps {b}'s cpuset {format_cpuset(pinned[b])} "
                f"on CPU {format_cpuset(shared)}: {a} and {b} compete for them"
            )
            out.append(Finding(a, CPU, "warning", what, f"give {a} and {b} disjoint cpusets (or unpin one)"))
    return out
