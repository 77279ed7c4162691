"""doctor's network checks: external networks that do not exist, services that publish ports
although a proxy network reaches them, and (:func:`check_name_resolution`, the one check that
looks inside running containers; its command runner can be faked) name resolution by service
name between the services of an external network."""

from __future__ import annotations

import itertools
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from composeguard import execute
from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.dockercli import docker_binary
from composeguard.doctor.findings import Finding
from composeguard.doctor.host import (
    NETWORK,
    HostFacts,
    Selection,
    external_networks,
    is_external,
    network_name,
    networks_of,
    selected,
)
from composeguard.doctor.workload import image_path
from composeguard.errors import CommandError, GuardError, last_line

# --- networks --------------------------------------------------------------------------------

# Reverse proxies by the last part of their repository path: they publish ports on purpose.
PROXY_IMAGES = frozenset(
    {"traefik", "caddy", "caddy-docker-proxy", "nginx-proxy", "nginx-proxy-manager", "swag", "haproxy"}
)
PROXY_LABELS = ("com.github.jrcs.letsencrypt_nginx_proxy_companion.nginx_proxy",)
ROUTING_LABELS = ("traefik.", "caddy")  # how a proxy elsewhere is told to route to a service
ROUTING_ENV = ("VIRTUAL_HOST",)  # nginx-proxy's
PROXY_WORDS = ("proxy", "traefik", "caddy")
LOOPBACK = ("127.", "::1", "localhost")











def _published(raw: Mapping[str, Any]) -> list[str]:
    """The ports a service publishes beyond loopback (from which nothing bypasses the proxy
    from outside), as ``[ip:]host:container``."""
    out = []
    for p in raw.get("ports") or []:
        ip = str(p.get("host_ip") or "") if isinstance(p, dict) else ""
        if isinstance(p, dict) and not ip.startswith(LOOPBACK):
            out.append(f"{ip + ':' if ip else ''}{p.get('published') or 'random'}:{p.get('target')}")
    return out


def _is_proxy(raw: Mapping[str, Any]) -> bool:
    """A reverse proxy: by image or label, or one built locally that publishes 80 or 443 and
    watches dockerd (nextcloud's nginx-proxy example builds its own)."""
    if raw.get("image") and image_path(str(raw["image"])).rsplit("/", 1)[-1] in PROXY_IMAGES:
        return True
    if any(k in (raw.get("labels") or {}) for k in PROXY_LABELS):
        return True
    web = any(isinstance(p, dict) and str(p.get("target")) in ("80", "443") for p in raw.get("ports") or [])
    vols = [str(v.get("source", "")) for v in raw.get("volumes") or [] if isinstance(v, dict)]
    return web and any(v.endswith("docker.sock") for v in vols)


def _routed(raw: Mapping[str, Any]) -> bool:
    env = raw.get("environment") or {}
    return any(str(k).startswith(ROUTING_LABELS) for k in raw.get("labels") or {}) or any(
        isinstance(env, dict) and env.get(k) is not None for k in ROUTING_ENV
    )


def proxy_networks(project: Project) -> dict[str, str]:
    """Network key -> why it is a proxy network: a reverse proxy of the project is on it, or it
    is external and a service on it is routed by labels, or it is named so."""
    members: dict[str, list[str]] = {}
    for s, svc in sorted(project.services.items()):
        for key in networks_of(svc.raw):
            members.setdefault(key, []).append(s)
    out: dict[str, str] = {}
    for key, names in members.items():
        proxies = [n for n in names if _is_proxy(project.services[n].raw)]
        routed = [n for n in names if _routed(project.services[n].raw)]
        if proxies:
            out[key] = f"{proxies[0]} proxies on it"
        elif is_external(project, key) and routed:
            out[key] = f"external; {routed[0]} is routed by a proxy on it"
        elif is_external(project, key) and any(w in network_name(project, key).lower() for w in PROXY_WORDS):
            out[key] = "external; a proxy's network by its name"
    return out


def check_networks(project: Project, facts: HostFacts, services: Selection = None) -> list[Finding]:
    """External networks exist (one finding per network, service ""); no service on a proxy
    network also publishes ports on the host."""
    chosen = None if services is None else list(services)
    out: list[Finding] = []
    for name, users in sorted(external_networks(project).items()):
        if not selected(chosen, *users):
            continue
        if facts.networks is None:
            out.append(Finding("", NETWORK, "hint", f"external network {name}: not checked (no list)"))
        elif name in facts.networks:
            out.append(Finding("", NETWORK, "ok", f"external network {name} exists"))
        else:
            what = f"external network {name} does not exist: compose cannot start {', '.join(users)}"
            out.append(Finding("", NETWORK, "error", what, f"docker network create {name}"))
    proxied = proxy_networks(project)
    for s, svc in sorted(project.services.items()):
        keys = [k for k in networks_of(svc.raw) if k in proxied]
        ports = _published(svc.raw)
        if not ports or not keys or not selected(chosen, s) or _is_proxy(svc.raw):
            continue
        target = next((str(p["target"]) for p in svc.raw["ports"] if isinstance(p, dict)), "")
        what = (
            f"publishes {', '.join(ports)} on the host although it is on the proxy network "
            f"{network_name(project, keys[0])} ({proxied[keys[0]]}): the proxy reaches it as {s}:{target}; "
            "the published ports bypass the proxy"
        )
        out.append(Finding(s, NETWORK, "hint", what, "drop its ports: (or bind them to 127.0.0.1)"))
    return out


# --- name resolution inside running containers ------------------------------------------------

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]
RESOLVERS: tuple[tuple[str, ...], ...] = (("getent", "hosts"), ("nslookup",))
IP = re.compile(r"[0-9a-fA-F:.]+")


def _running(containers: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[str, dict[str, str]]]]:
    """service -> [(container name, {network name: address})] of its running containers."""
    out: dict[str, list[tuple[str, dict[str, str]]]] = {}
    for c in containers:
        labels = (c.get("Config") or {}).get("Labels") or {}
        service = labels.get("com.docker.compose.service")
        oneoff = labels.get("com.docker.compose.oneoff") == "True"
        if service and not oneoff and (c.get("State") or {}).get("Running"):
            nets = (c.get("NetworkSettings") or {}).get("Networks") or {}
            ips = {n: str(v.get("IPAddress") or v.get("GlobalIPv6Address") or "") for n, v in nets.items()}
            out.setdefault(service, []).append((str(c.get("Name") or c.get("Id")).lstrip("/"), ips))
    return out


def resolved_addresses(tool: str, stdout: str) -> set[str]:
    """What a resolver printed: getent's first column; nslookup's ``Address`` lines after the
    first ``Name:`` (those before it are the DNS server's)."""
    if tool == "getent":
        return {w[0] for w in map(str.split, stdout.splitlines()) if w and IP.fullmatch(w[0])}
    found: set[str] = set()
    answer = False
    for line in map(str.strip, stdout.splitlines()):
        answer = answer or line.startswith("Name:")
        value = line.partition(":")[2].split() if answer and line.startswith("Address") else []
        if value and IP.fullmatch(value[0]):
            found.add(value[0])
    return found


def check_name_resolution(
    project: Project,
    services: Selection = None,
    *,
    containers: Iterable[Mapping[str, Any]] | None = None,
    run: Runner | None = None,
    timeout: float = 5.0,
    limit: int = 20,
) -> list[Finding]:
    """On each external network, can the project's running services find each other by
    service name, and only each other?

    From the project's reverse proxy to every other service on the network, else both ways
    between every two: ``docker exec CONTAINER getent hosts SERVICE``, or ``nslookup`` in a container whose
    image has no getent (found out once per container), through ``run``. At most ``limit``
    pairs, each exec with ``timeout``. An address that is not the service's own means another
    container on the shared network (another project's service of the same name) answers to
    it. ``containers`` is the raw ``docker inspect`` of the project's containers; when not
    given it is read (one ``docker ps``, one ``docker inspect``) if two services share an
    external network.
    """
    chosen = None if services is None else list(services)
    shared = {n: u for n, u in external_networks(project).items() if len(u) > 1 and selected(chosen, *u)}
    if not shared:
        return []
    if containers is None:
        try:
            containers = docker.containers_labelled(f"com.docker.compose.project={project.name}")
        except GuardError as e:
            return [Finding("", NETWORK, "hint", f"name resolution not checked: {e}")]
    run = run or (lambda argv: execute.run(argv, check=False, timeout=timeout))
    running = _running(containers)
    pairs: list[tuple[str, str, str]] = []  # (network, from, to)
    for net, users in sorted(shared.items()):
        on = [s for s in users if any(net in ips for _, ips in running.get(s, []))]
        proxies = [s for s in on if _is_proxy(project.services[s].raw)]
        # Both ways: a namesake of b on the shared network only shows when b is looked up.
        cand = [(proxies[0], s) for s in on if s != proxies[0]] if proxies else itertools.permutations(on, 2)
        pairs += [(net, a, b) for a, b in cand if selected(chosen, a, b)]
    tools: dict[str, tuple[str, ...] | None] = {}  # container -> the resolver that works in it
    out = []
    for net, a, b in pairs[:limit]:
        src = next(name for name, ips in running[a] if net in ips)
        expected = {ips[net] for _, ips in running[b] if ips.get(net)}
        out.append(_resolve(run, tools, net, a, src, b, expected))
    if len(pairs) > limit:
        what = f"name resolution: {len(pairs) - limit} more pairs not checked"
        out.append(Finding("", NETWORK, "hint", what, "run doctor for fewer services"))
    return out


def _resolve(
    run: Runner, tools: dict[str, tuple[str, ...] | None], net: str, a: str, src: str, b: str, want: set[str]
) -> Finding:
    for tool in [tools[src]] if src in tools else RESOLVERS:
        if tool is None:
            break
        try:
            proc = run([docker_binary(), "exec", src, *tool, b])
        except CommandError as e:  # a timeout
            return Finding(a, NETWORK, "hint", f"{a} -> {b} on {net}: not checked ({e})")
        if proc.returncode in (126, 127):  # docker exec: no such executable in the image
            continue
        tools[src] = tool
        if proc.returncode not in (0, 1, 2):
            why = last_line(proc.stderr, f"exit {proc.returncode}")
            return Finding(a, NETWORK, "hint", f"{a} -> {b} on {net}: not checked ({why})")
        return _judge(net, a, b, resolved_addresses(tool[0], proc.stdout or ""), want)
    tools[src] = None
    return Finding(a, NETWORK, "hint", f"{a} -> {b} on {net}: not checked: no getent or nslookup in {a}")


def _judge(net: str, a: str, b: str, got: set[str], expected: set[str]) -> Finding:
    alias = f"give {b} an alias unique on {net} (networks: {net}: aliases: [...]) and use it in the proxy"
    shown = ", ".join(sorted(got))
    if not got:
        fix = f"docker compose up -d --force-recreate {b} (rejoins {net} under its service name)"
        return Finding(a, NETWORK, "error", f"{a} cannot resolve {b} on {net}", fix)
    if expected and not got & expected:
        what = f"{a} resolves {b} to {shown}, not to {b}'s own {', '.join(sorted(expected))} on {net}"
        return Finding(a, NETWORK, "error", what, alias)
    if expected and got - expected:
        what = f"{a} resolves {b} to {shown} on {net}: another container (another project?) has that name too"
        return Finding(a, NETWORK, "warning", what, alias)
    return Finding(a, NETWORK, "ok", f"{a} resolves {b} on {net}")
