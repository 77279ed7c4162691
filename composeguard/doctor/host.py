"""What doctor needs to know about the host, read once (:func:`gather_facts`): the CPUs online,
Docker's runtimes and CDI spec dirs, the networks that exist, the CDI specs and NVIDIA tools
installed. One ``docker info`` and one ``docker network ls``, each only when the project needs it."""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from composeguard import execute
from composeguard.compose.project import Project
from composeguard.dockercli import docker_binary
from composeguard.errors import CommandError, last_line

try:  # the C loader: NVIDIA's CDI spec lists every library and device node
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

NETWORK, GPU, CPU = "network", "gpu", "cpu"
Selection = Iterable[str] | None  # the services named on the command line; None: all
CPU_ONLINE = "/sys/devices/system/cpu/online"
DOCKER_INFO = ["info", "--format", "{{json .}}"]
NETWORK_LS = ["network", "ls", "--no-trunc", "--format", "{{json .}}"]
DEFAULT_CDI_DIRS = ("/etc/cdi", "/var/run/cdi")  # the CDI library's defaults (static, dynamic)
NVIDIA_KIND = "nvidia.com/gpu"
# The NVIDIA Container Toolkit. dockerd serves ``driver: nvidia`` device requests (and ``gpus:``)
# through the hook; ``runtime: nvidia`` needs the runtime registered in dockerd (docker info).
NVIDIA_HOOK = "nvidia-container-runtime-hook"
NVIDIA_TOOLS = (NVIDIA_HOOK, "nvidia-container-runtime", "nvidia-ctk")
SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
# A CDI device name, vendor.tld/class=name (the CDI spec's qualified-name syntax).
CDI_NAME = re.compile(r"([a-z0-9][a-z0-9.-]*\.[a-z0-9-]+/[a-zA-Z0-9][\w.-]*)=([a-zA-Z0-9][\w.:-]*)")


@dataclass(frozen=True)
class HostFacts:
    """What the host checks need to know about this host and its dockerd."""

    daemon: bool | None = True  # docker info answered; False: it failed, None: not asked
    runtimes: frozenset[str] = frozenset()  # docker info .Runtimes
    cdi_enabled: bool = False  # dockerd reads CDI specs (docker info .CDISpecDirs is not empty)
    cdi_dirs: tuple[str, ...] = DEFAULT_CDI_DIRS
    cdi_devices: Mapping[str, frozenset[str]] = field(default_factory=dict)  # kind -> device names
    nvidia_tools: frozenset[str] = frozenset()  # those of NVIDIA_TOOLS found on this host
    online_cpus: frozenset[int] | None = None  # None: not known
    networks: frozenset[str] | None = None  # names and IDs of dockerd's networks; None: not read
    notes: tuple[str, ...] = ()  # what could not be read, one line each


# --- gathering -------------------------------------------------------------------------------


def gather_facts(project: Project | None = None, *, timeout: float = 20.0) -> HostFacts:
    """The host facts; with ``project``, only those its checks need: ``docker info --format
    '{{json .}}'`` and the CDI specs when a service asks for a GPU, ``docker network ls
    --format '{{json .}}'`` when it uses an external network, and the online CPUs."""
    wants_gpu = project is None or any(gpu_requests(s.raw) for s in project.services.values())
    wants_networks = project is None or bool(external_networks(project))
    notes: list[str] = []
    info: dict[str, Any] | None = None
    if wants_gpu and (text := _docker(DOCKER_INFO, timeout, notes)) is not None:
        info = _json(text)
        if info is None or info.get("ServerErrors") or "Runtimes" not in info:
            notes.append("docker info: " + "; ".join((info or {}).get("ServerErrors") or ["no JSON"]))
            info = None
    spec_dirs = tuple((info or {}).get("CDISpecDirs") or ())
    networks = None
    if wants_networks and (text := _docker(NETWORK_LS, timeout, notes)) is not None:
        rows = [r for r in map(_json, text.splitlines()) if r]
        networks = frozenset(str(r[k]) for r in rows for k in ("Name", "ID") if r.get(k))
    online = None
    try:
        online = parse_cpuset(Path(CPU_ONLINE).read_text())
    except (OSError, ValueError) as e:
        notes.append(f"{CPU_ONLINE}: {e}")
    return HostFacts(
        daemon=(info is not None) if wants_gpu else None,
        runtimes=frozenset((info or {}).get("Runtimes") or {}),
        cdi_enabled=bool(spec_dirs),
        cdi_dirs=spec_dirs or DEFAULT_CDI_DIRS,
        cdi_devices=read_cdi_specs(spec_dirs or DEFAULT_CDI_DIRS, notes) if wants_gpu else {},
        nvidia_tools=frozenset(t for t in NVIDIA_TOOLS if _which(t)) if wants_gpu else frozenset(),
        online_cpus=online,
        networks=networks,
        notes=tuple(notes),
    )


def _docker(args: list[str], timeout: float, notes: list[str]) -> str | None:
    try:
        proc = execute.run([docker_binary(), *args], check=False, timeout=timeout)
    except CommandError as e:
        notes.append(f"docker {args[0]}: {e}")
        return None
    if proc.returncode != 0:
        notes.append(f"docker {args[0]}: {last_line(proc.stderr, f'exit {proc.returncode}')}")
        return None
    return proc.stdout


def _json(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def _which(name: str) -> bool:
    # dockerd's PATH has the system folders even when ours (sudo, cron) does not
    return shutil.which(name, path=os.pathsep.join([os.environ.get("PATH", ""), *SYSTEM_PATH])) is not None


def read_cdi_specs(dirs: Iterable[str], notes: list[str]) -> dict[str, frozenset[str]]:
    """kind -> device names, from every CDI spec file (.yaml, .yml, .json) in ``dirs``."""
    found: dict[str, set[str]] = {}
    for d in dirs:
        try:
            files = sorted(p for p in Path(d).iterdir() if p.suffix in (".yaml", ".yml", ".json"))
        except OSError:
            continue  # no such folder: no specs there
        for f in files:
            try:
                spec = yaml.load(f.read_text(), Loader=_Loader)  # noqa: S506 - the safe loader
            except (OSError, yaml.YAMLError) as e:
                notes.append(f"CDI spec {f}: {last_line(str(e))}")
                continue
            if isinstance(spec, dict) and isinstance(spec.get("kind"), str):
                devices = [d for d in spec.get("devices") or [] if isinstance(d, dict) and d.get("name")]
                found.setdefault(spec["kind"], set()).update(str(d["name"]) for d in devices)
    return {k: frozenset(v) for k, v in found.items()}



def selected(services: list[str] | None, *names: str) -> bool:
    return services is None or any(n in services for n in names)

def parse_cpuset(text: str) -> frozenset[int]:
    """'0-3,6' -> {0, 1, 2, 3, 6}: the list syntax of cpuset and /sys/devices/system/cpu/online."""
    cpus: set[int] = set()
    for part in str(text).strip().split(","):
        lo, dash, hi = (x.strip() for x in part.partition("-"))
        if not lo.isdigit() or (dash and not hi.isdigit()) or (dash and int(hi) < int(lo)):
            raise ValueError(f"not a CPU list: {text.strip()!r}")
        cpus.update(range(int(lo), int(hi if dash else lo) + 1))
    return frozenset(cpus)

def format_cpuset(cpus: Iterable[int]) -> str:
    """{0, 1, 2, 3, 6} -> '0-3,6'."""
    groups = itertools.groupby(enumerate(sorted(cpus)), lambda ic: ic[1] - ic[0])
    runs = [[c for _, c in g] for _, g in groups]
    return ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)

@dataclass(frozen=True)
class GpuRequest:
    kind: str  # runtime (runtime: nvidia) | nvidia (a device request for NVIDIA GPUs) | cdi
    device: str  # the CDI name for kind cdi, else ""
    where: str  # how the compose file asks, for the message

def gpu_requests(raw: Mapping[str, Any]) -> list[GpuRequest]:
    """The GPUs a service asks for, in each form compose knows. A device reservation without a
    driver that asks for the ``gpu`` capability is NVIDIA's: dockerd has no other such driver."""
    out = [GpuRequest("runtime", "", "runtime: nvidia")] if raw.get("runtime") == "nvidia" else []
    out += [GpuRequest("nvidia", "", "gpus:") for g in raw.get("gpus") or []
            if isinstance(g, dict) and (g.get("driver") or "nvidia") == "nvidia"]  # fmt: skip
    reservations = ((raw.get("deploy") or {}).get("resources") or {}).get("reservations") or {}
    where = "deploy.resources.reservations.devices"
    for d in (r for r in reservations.get("devices") or [] if isinstance(r, dict)):
        caps = {str(c) for c in itertools.chain.from_iterable(
            x if isinstance(x, list) else [x] for x in d.get("capabilities") or [])}  # fmt: skip
        if d.get("driver") == "cdi":
            ids = [str(i) for i in d.get("device_ids") or [] if CDI_NAME.fullmatch(str(i))]
            out += [GpuRequest("cdi", i, f"{where} (driver: cdi)") for i in ids]
        elif d.get("driver") == "nvidia" or (not d.get("driver") and "gpu" in caps):
            out.append(GpuRequest("nvidia", "", where))
    for d in raw.get("devices") or []:
        name = str(d.get("source") or "") if isinstance(d, dict) else str(d)
        if CDI_NAME.fullmatch(name):
            out.append(GpuRequest("cdi", name, f"devices: {name}"))
    return out

def networks_of(raw: Mapping[str, Any]) -> list[str]:
    """The keys of the project networks a service is on (none with a ``network_mode``)."""
    nets = raw.get("networks")
    return [str(k) for k in nets] if isinstance(nets, (dict, list)) else []

def network_name(project: Project, key: str) -> str:
    return str((project.networks.get(key) or {}).get("name") or key)

def is_external(project: Project, key: str) -> bool:
    return bool((project.networks.get(key) or {}).get("external"))

def external_networks(project: Project) -> dict[str, list[str]]:
    """External network name -> the services on it, sorted."""
    out: dict[str, list[str]] = {}
    for s, svc in sorted(project.services.items()):
        for key in networks_of(svc.raw):
            if is_external(project, key):
                out.setdefault(network_name(project, key), []).append(s)
    return out
