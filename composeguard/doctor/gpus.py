"""doctor's GPU check: a service that reserves NVIDIA devices (``deploy`` reservations,
``runtime: nvidia``, ``gpus:``, CDI device names) needs the runtime or a CDI spec on this host."""

from __future__ import annotations

from composeguard.compose.project import Project
from composeguard.doctor.findings import Finding
from composeguard.doctor.host import (
    GPU,
    NVIDIA_HOOK,
    NVIDIA_KIND,
    GpuRequest,
    HostFacts,
    Selection,
    gpu_requests,
    selected,
)

# --- GPUs ------------------------------------------------------------------------------------






def _toolkit_fix(facts: HostFacts) -> str:
    configure = "sudo nvidia-ctk runtime configure --runtime=docker && sudo systemctl restart docker"
    if "nvidia-ctk" in facts.nvidia_tools:
        return configure
    return f"install the NVIDIA driver and the NVIDIA Container Toolkit, then {configure}"


def _gpu_problem(r: GpuRequest, facts: HostFacts) -> tuple[str, str] | None:
    """(message, fix) when ``r`` cannot be served on this host, else None."""
    if r.kind == "runtime" and "nvidia" not in facts.runtimes:
        have = ", ".join(sorted(facts.runtimes)) or "none"
        return f"{r.where}, but dockerd has no nvidia runtime (runtimes: {have})", _toolkit_fix(facts)
    if r.kind == "nvidia":
        if "nvidia" in facts.runtimes or NVIDIA_HOOK in facts.nvidia_tools:
            return None
        if facts.cdi_enabled and NVIDIA_KIND in facts.cdi_devices:
            return None
        what = f"reserves an NVIDIA GPU ({r.where}), but this host has no NVIDIA container runtime"
        return f"{what} and no CDI spec for {NVIDIA_KIND}", _toolkit_fix(facts)
    if r.kind != "cdi":
        return None
    kind, _, name = r.device.partition("=")
    generate = (
        "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
        if kind.startswith("nvidia.com/")
        else f"install the vendor's CDI spec for {kind} in /etc/cdi"
    )
    if kind not in facts.cdi_devices:
        return f"asks for {r.device}, but no CDI spec in {', '.join(facts.cdi_dirs)} defines {kind}", generate
    if name not in facts.cdi_devices[kind]:
        return f"asks for {r.device}; the CDI spec has {', '.join(sorted(facts.cdi_devices[kind]))}", generate
    if not facts.cdi_enabled:
        what = f"asks for CDI device {r.device}, but dockerd does not read CDI specs"
        return what, 'set "features": {"cdi": true} in /etc/docker/daemon.json (Docker >= 25); restart it'
    return None


def check_gpus(project: Project, facts: HostFacts, services: Selection = None) -> list[Finding]:
    """Every GPU a service reserves can be given to it on this host."""
    chosen = None if services is None else list(services)
    out: list[Finding] = []
    for s, svc in sorted(project.services.items()):
        reqs = gpu_requests(svc.raw)
        if not reqs or not selected(chosen, s):
            continue
        if not facts.daemon:
            out.append(Finding(s, GPU, "hint", "GPU reservation not checked: docker info failed", ""))
            continue
        problems = dict.fromkeys(p for p in (_gpu_problem(r, facts) for r in reqs) if p)
        out += [Finding(s, GPU, "error", what, fix) for what, fix in problems]
        if not problems:
            asked = ", ".join(dict.fromkeys(r.device or r.where for r in reqs))
            out.append(Finding(s, GPU, "ok", f"GPU available for {asked}"))
    return out
