"""The trial run's compose model: the unit's services, on the new images, on clones of the data.

Before a real upgrade stops anything, composeguard can start the unit's services with the NEW
images as a project of their own (``docker compose -p <project>-trial -f FILE up -d``), on
writable clones of their data, probe them, and cut over only when they pass. This module
writes that project's compose document from the real project's ``docker compose config``
model, and says what cannot be tried (``refusals``: the upgrade then runs without a trial).

The one rule behind every choice here: the trial must not touch anything the live version
uses. It writes only to clones, publishes no port, joins no network of the host or of another
project, holds no device and shares no namespace with the host or the live containers.
Everything else about a service is kept as it is, so that the trial runs what the cut-over
will run. When in doubt, refuse: a refusal costs the trial, never the data (the upgrade is
then guarded as before, by snapshots).

Pure: no Docker, no storage, no file system (paths are compared as strings, as compose
printed them and as the caller resolved them).
"""

from __future__ import annotations

import copy
import ipaddress
import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from composeguard.compose.started import TRIAL_LABEL
from composeguard.storage.resolve import HOST_CONFIG

TRIAL_NETWORK = "default"

# Dropped from every trial service, and why:
DROPPED = (
    "build",  # the trial runs the pulled image, exactly what the cut-over will run
    "ports",  # published ports would clash with the live version's (and expose the trial)
    "container_name",  # a fixed name is already taken by the live container
    "profiles",  # the trial starts exactly the unit: a profile must not leave a service out
    "mac_address",  # belongs to the networks the trial leaves out
    "external_links",  # refused below; never in the doc
    "privileged",  # refused below; never in the doc
    "devices",  # refused below; never in the doc
    "device_cgroup_rules",  # refused below; never in the doc
    "gpus",  # refused below; never in the doc
)
# Labels other programs act on: a reverse proxy watching Docker (Traefik, caddy-docker-proxy)
# would route the live site's traffic to the trial container. Compose's own labels are its
# bookkeeping of the real project and must not mark the trial's containers as the real ones.
FOREIGN_LABELS = re.compile(r"com\.docker\.compose\.|traefik\.|caddy(_\d+)?(\.|$)")
LOCAL_NAMES = ("localhost", "host.docker.internal", "gateway.docker.internal")


@dataclass(frozen=True)
class TrialModel:
    """``doc``: the compose document to write as YAML; ``name``: the trial's project name;
    ``refusals``: one line each, why the unit cannot be tried. With a refusal the doc must not
    be run; it is still built (with whatever was refused left out, so it is never a danger)
    so that ``plan`` can show it."""

    doc: dict[str, Any]
    name: str
    refusals: list[str]

    @property
    def possible(self) -> bool:
        return not self.refusals


def trial_model(
    model: dict[str, Any],
    unit: list[str],
    project: str,
    binds: dict[str, str],
    images: dict[str, str],
    *,
    volume_paths: Mapping[str, str] | None = None,
    anonymous: Mapping[str, Mapping[str, str]] | None = None,
) -> TrialModel:
    """The trial project for ``unit`` of the real project ``project``.

    ``model``: the parsed ``docker compose config`` YAML of the real project. ``binds``: host
    path of the unit's data (absolute real path: a bind source, a named volume's device or
    mountpoint) -> the path of its writable clone; a path below a key is mapped inside the
    clone (the longest key wins). ``images``: service -> the new image to try (a service not
    named keeps its image: a dependency whose image does not change). ``volume_paths``
    (optional): named volume key -> its host path as ``docker volume inspect`` says (what
    ``StorageMapper.host_path`` resolves); without it a named volume's path is its bind
    ``device`` from the model, or a ``binds`` key ending in ``/volumes/<name>/_data`` (where
    the local driver keeps it, under any data-root). ``anonymous`` (optional): service ->
    container path -> host path of the volumes its live container has that the model names
    without a source (an anonymous volume) or not at all (an image's ``VOLUME``): the trial
    binds their clones there, so it starts on the live data, not on empty volumes.

    Services are written in the model's order. Raises ValueError for a caller's mistake (an
    empty unit, a service the model does not have, an image for a service outside the unit:
    that service would silently not be tried)."""
    services = model.get("services") or {}
    if not unit:
        raise ValueError("trial_model: the unit is empty")
    unknown = [s for s in unit if s not in services]
    if unknown:
        raise ValueError(f"trial_model: no such service in the model: {', '.join(unknown)}")
    outside = sorted(set(images) - set(unit))
    if outside:
        raise ValueError(f"trial_model: images given for services outside the unit: {', '.join(outside)}")
    name = f"{project}-trial"
    members = set(unit)
    ctx = _Context(model, members, binds, dict(volume_paths or {}), anonymous or {})
    out_services: dict[str, Any] = {}
    for svc, raw in services.items():
        if svc in members:
            out_services[svc] = ctx.service(svc, raw or {}, images.get(svc), project)
    doc: dict[str, Any] = {"name": name, "services": out_services}
    if any("networks" in s for s in out_services.values()):
        doc["networks"] = {TRIAL_NETWORK: {"name": f"{name}_{TRIAL_NETWORK}", "internal": True}}
    if ctx.volumes:
        doc["volumes"] = ctx.volumes
    for top in ("secrets", "configs"):
        used = ctx.used[top]
        if used:
            doc[top] = {k: copy.deepcopy(v) for k, v in (model.get(top) or {}).items() if k in used}
    for key, value in model.items():
        if isinstance(key, str) and key.startswith("x-"):
            doc[key] = copy.deepcopy(value)  # x-composeguard: the probes read the same settings
    return TrialModel(doc=doc, name=name, refusals=ctx.refusals)


class _Context:
    def __init__(
        self,
        model: dict[str, Any],
        unit: set[str],
        binds: dict[str, str],
        volume_paths: dict[str, str],
        anonymous: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.model = model
        self.anonymous = anonymous
        self.unit = unit
        self.binds = {posixpath.normpath(k): v for k, v in binds.items()}
        self.volume_paths = volume_paths
        self.refusals: list[str] = []
        self.volumes: dict[str, Any] = {}  # top-level volumes the trial still names
        self.used: dict[str, set[str]] = {"secrets": set(), "configs": set()}

    def refuse(self, line: str) -> None:
        self.refusals.append(f"no trial: {line}")

    def service(self, svc: str, raw: dict[str, Any], image: str | None, project: str) -> dict[str, Any]:
        out = copy.deepcopy(raw)
        for key in DROPPED:
            out.pop(key, None)
        image = image or raw.get("image")
        if image:
            out["image"] = image
        else:
            self.refuse(f"service {svc} has no image to try (it is built, and no new image was given)")
        # "missing": the image was pulled before the trial; "always" could fetch a newer
        # digest than the one the cut-over runs, "build" has nothing to build.
        out["pull_policy"] = "missing"
        # The restart policy stays: an app that exits until its database is up, and is
        # restarted by dockerd, passes as it would after the cut-over (the probe judges a
        # crash loop by its restarts); a one-shot service (``restart: "no"``) stays one.
        self._devices(svc, raw, out)
        self._namespaces(svc, raw, out)
        self._network(svc, raw, out)
        self._depends(raw, out)
        self._volumes(svc, raw, out)
        self._volumes_from(svc, raw, out)
        self._labels(raw, out, project)
        self._probe(svc, raw)
        if raw.get("external_links"):
            self.refuse(
                f"service {svc} links to containers outside the project "
                f"(external_links: {', '.join(map(str, raw['external_links']))})"
            )
        if raw.get("privileged"):
            self.refuse(f"service {svc} is privileged: it reaches the host's devices and file systems")
        for top in ("secrets", "configs"):
            for ref in raw.get(top) or []:
                src = ref.get("source") if isinstance(ref, dict) else ref
                if isinstance(src, str):
                    self.used[top].add(src)
        return out

    # --- devices and namespaces -----------------------------------------------------------

    def _devices(self, svc: str, raw: dict[str, Any], out: dict[str, Any]) -> None:
        """Devices are not cloned: a serial stick (Zigbee, Z-Wave) opens for one process only,
        and a GPU's memory is the live version's (two copies of a model may not fit)."""
        for dev in raw.get("devices") or []:
            src = dev.get("source") if isinstance(dev, dict) else str(dev).split(":")[0]
            self.refuse(f"service {svc} uses the device {src}, which the live version holds")
        if raw.get("device_cgroup_rules"):
            self.refuse(f"service {svc} is given host devices by device_cgroup_rules")
        if raw.get("gpus"):
            self.refuse(f"service {svc} uses GPUs (gpus:), which the live version holds")
        resources = (out.get("deploy") or {}).get("resources") or {}
        reservations = resources.get("reservations") or {}
        for dev in reservations.pop("devices", None) or []:
            dev = dev if isinstance(dev, dict) else {}
            what = " ".join([str(dev.get("driver") or ""), *map(str, dev.get("capabilities") or [])]).strip()
            self.refuse(f"service {svc} reserves {what or 'a'} devices, which the live version holds")
        if "reservations" in resources and not reservations:
            del resources["reservations"]

    def _namespaces(self, svc: str, raw: dict[str, Any], out: dict[str, Any]) -> None:
        for key in ("pid", "ipc"):
            mode = raw.get(key)
            if not isinstance(mode, str):
                continue
            why = self._shared_namespace(mode)
            if why:
                self.refuse(f"service {svc} shares the {key} namespace of {why} ({key}: {mode})")
                out.pop(key, None)

    def _shared_namespace(self, mode: str) -> str | None:
        """Who a ``host`` / ``container:X`` / ``service:X`` mode shares with, when that is not
        the trial itself (``service:X`` of a unit member is the trial's own X)."""
        if mode == "host":
            return "the host"
        if mode.startswith("container:"):
            return f"the container {mode.partition(':')[2]}"
        if mode.startswith("service:") and mode.partition(":")[2] not in self.unit:
            return f"the live service {mode.partition(':')[2]}"
        return None

    # --- networks -------------------------------------------------------------------------

    def _network(self, svc: str, raw: dict[str, Any], out: dict[str, Any]) -> None:
        """One internal network for the whole trial: the unit's services find each other by
        the names and aliases they use in the real project, and nothing else is reachable
        (not the live containers, not the internet: an app that must download on start
        fails its trial). ``network_mode: none`` and ``service:X`` of a unit member stay."""
        mode = raw.get("network_mode")
        out.pop("networks", None)
        if isinstance(mode, str):
            why = self._shared_namespace(mode)
            if why:
                self.refuse(
                    f"service {svc} shares the network of {why} (network_mode: {mode}): it cannot be isolated"
                )
            elif mode == "none" or mode.startswith("service:"):
                return
            out.pop("network_mode", None)
        aliases = [svc]
        for spec in (raw.get("networks") or {}).values():
            for alias in (spec or {}).get("aliases") or []:
                if alias not in aliases:
                    aliases.append(alias)
        out["networks"] = {TRIAL_NETWORK: {"aliases": aliases}}
        links = [x for x in raw.get("links") or [] if str(x).split(":")[0] in self.unit]
        if links:
            out["links"] = links
        else:
            out.pop("links", None)

    def _depends(self, raw: dict[str, Any], out: dict[str, Any]) -> None:
        """The unit is closed under depends_on (unit.rollback_unit); a dependency outside it
        can only be an optional one, or a caller's smaller unit: left out."""
        deps = raw.get("depends_on")
        if isinstance(deps, dict):
            kept: Any = {k: copy.deepcopy(v) for k, v in deps.items() if k in self.unit}
        elif isinstance(deps, list):
            kept = [d for d in deps if d in self.unit]
        else:
            kept = None
        if kept:
            out["depends_on"] = kept
        else:
            out.pop("depends_on", None)

    # --- volumes --------------------------------------------------------------------------

    def _clone(self, path: str) -> str | None:
        """Where ``path`` is in its clone, or None when no clone covers it."""
        p = posixpath.normpath(path)
        best = max(
            (k for k in self.binds if p == k or p.startswith(k.rstrip("/") + "/")), key=len, default=None
        )
        if best is None:
            return None
        rel = posixpath.relpath(p, best)
        return self.binds[best] if rel == "." else posixpath.join(self.binds[best], rel)

    def _no_clone(self, svc: str, path: str, what: str = "") -> None:
        p = posixpath.normpath(path)
        inside = sorted(k for k in self.binds if k.startswith(p.rstrip("/") + "/"))
        where = f"{path}{what}"
        if inside:
            self.refuse(f"service {svc} writes to {where}, of which only {', '.join(inside)} has a clone")
        else:
            self.refuse(f"service {svc} writes to {where}, which has no clone")

    def _volume_path(self, key: str) -> str | None:
        if key in self.volume_paths:
            return self.volume_paths[key]
        spec = (self.model.get("volumes") or {}).get(key) or {}
        opts = spec.get("driver_opts") or {}
        if opts.get("device") and "bind" in str(opts.get("o", "")).split(","):
            return str(opts["device"])
        suffix = f"/volumes/{spec.get('name') or key}/_data"
        return next((k for k in self.binds if k.endswith(suffix)), None)

    def _volumes(self, svc: str, raw: dict[str, Any], out: dict[str, Any]) -> None:
        """Every mount of the unit's data points at its clone (a named volume becomes a bind
        to it); a read-only mount of anything else is kept (the trial reads what the live
        version reads, and cannot change it); a writable one is a refusal. The host's own
        configuration (``HOST_CONFIG``: /etc/localtime, ...) is kept as it is, as the rest of
        composeguard treats it: never an app's data. tmpfs is kept. An anonymous volume (an
        image's ``VOLUME`` too) the live container has (``anonymous``: Docker says where) is
        bound from its clone; one it does not have stays anonymous (fresh and empty, as
        compose would make it)."""
        mounts = []
        live_anonymous = dict(self.anonymous.get(svc) or {})
        for target, path in live_anonymous.items():
            clone = self._clone(path)
            if clone is None:
                self._no_clone(svc, path, f" (the anonymous volume at {target})")
            else:
                mounts.append({"type": "bind", "source": clone, "target": target})
        for m in raw.get("volumes") or []:
            if isinstance(m, dict) and m.get("target") in live_anonymous and not m.get("source"):
                continue  # bound from its clone above
            if not isinstance(m, dict):  # compose config always prints the long form
                mounts.append(m)
                continue
            kind, source = m.get("type"), m.get("source")
            if kind == "bind" and isinstance(source, str):
                mounts.append(self._bind(svc, m, source))
            elif kind == "volume" and isinstance(source, str) and source:
                mounts.append(self._named(svc, m, source))
            else:  # tmpfs, anonymous volumes, image, npipe, cluster
                mounts.append(copy.deepcopy(m))
        kept = [m for m in mounts if m is not None]
        if kept:
            out["volumes"] = kept
        else:
            out.pop("volumes", None)

    def _bind(self, svc: str, m: dict[str, Any], source: str) -> dict[str, Any] | None:
        clone = self._clone(source)
        if clone is not None:
            return {**copy.deepcopy(m), "source": clone}
        p = posixpath.normpath(source)
        if p == "/dev" or p.startswith("/dev/"):
            self.refuse(f"service {svc} mounts the host's {p}, which the live version holds")
            return None
        if m.get("read_only") or any(p == h or p.startswith(h + "/") for h in HOST_CONFIG):
            return copy.deepcopy(m)
        self._no_clone(svc, source)
        return None

    def _named(self, svc: str, m: dict[str, Any], key: str) -> dict[str, Any] | None:
        spec = (self.model.get("volumes") or {}).get(key) or {}
        path = self._volume_path(key)
        clone = self._clone(path) if path else None
        if clone is not None:
            sub = (m.get("volume") or {}).get("subpath")
            bind: dict[str, Any] = {"type": "bind", "source": posixpath.join(clone, sub) if sub else clone}
            bind["target"] = m.get("target")
            if m.get("read_only"):
                bind["read_only"] = True
            if m.get("bind"):
                bind["bind"] = copy.deepcopy(m["bind"])
            return bind
        real = spec.get("name") or key
        if m.get("read_only"):
            # the live volume itself, by its real name: under the trial's project name
            # compose would otherwise create an empty <project>-trial_<key>
            self.volumes[key] = {"name": real, "external": True}
            return copy.deepcopy(m)
        self._no_clone(svc, path or f"the volume {real}", f" (the volume {real})" if path else "")
        return None

    def _volumes_from(self, svc: str, raw: dict[str, Any], out: dict[str, Any]) -> None:
        for ref in map(str, raw.get("volumes_from") or []):
            first, _, rest = ref.partition(":")
            if first == "container":
                self.refuse(f"service {svc} mounts the volumes of the container {rest.split(':')[0]}")
            elif first not in self.unit:
                self.refuse(f"service {svc} mounts the volumes of {first}, which is not in the trial")
        kept = [r for r in raw.get("volumes_from") or [] if str(r).split(":")[0] in self.unit]
        if kept:
            out["volumes_from"] = kept
        else:
            out.pop("volumes_from", None)

    # --- labels and probes ----------------------------------------------------------------

    def _labels(self, raw: dict[str, Any], out: dict[str, Any], project: str) -> None:
        labels = raw.get("labels") or {}
        if isinstance(labels, list):
            labels = dict(str(x).partition("=")[::2] for x in labels)
        kept = {k: v for k, v in labels.items() if not FOREIGN_LABELS.match(str(k))}
        if any(str(k).startswith("traefik.") for k in labels):
            kept["traefik.enable"] = "false"  # with exposedByDefault, no labels still means exposed
        kept[TRIAL_LABEL] = project
        out["labels"] = kept

    def _probe(self, svc: str, raw: dict[str, Any]) -> None:
        """An ``http``/``tcp`` probe runs on the host and names a host address. The trial
        publishes no port and its containers have no address the probe could name, so such a
        probe would reach the live version (through its published port, or a reverse proxy)
        and pass for it, or reach nothing: either way it says nothing about the trial. The
        image's HEALTHCHECK and ``exec`` probes run inside the trial's containers and stay."""
        settings = raw.get("x-composeguard")
        probe = settings.get("probe") if isinstance(settings, dict) else None
        if not isinstance(probe, dict):
            return
        for kind in ("http", "tcp"):
            target = probe.get(kind)
            if isinstance(target, str):
                host, port = _address(kind, target)
                if _is_local(host) or port in set(_published(raw)):
                    self.refuse(
                        f"the {kind} probe of {svc} ({target}) needs a published port, "
                        "and the trial publishes none"
                    )
                else:
                    self.refuse(f"the {kind} probe of {svc} ({target}) would reach {host}, not the trial")


def _address(kind: str, target: str) -> tuple[str, int | None]:
    if kind == "http":
        parts = urlsplit(target)
        try:
            port = parts.port
        except ValueError:
            port = None
        return parts.hostname or "", port or (443 if parts.scheme == "https" else 80)
    host, _, port = target.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else None


def _is_local(host: str) -> bool:
    host = host.lower().rstrip(".")
    if host in LOCAL_NAMES or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_unspecified


def _published(raw: dict[str, Any]) -> Iterable[int]:
    """The host ports a service publishes (``ports`` as compose config prints them)."""
    for p in raw.get("ports") or []:
        published = str(p.get("published") or "") if isinstance(p, dict) else ""
        first, _, last = published.partition("-")
        if first.isdigit():
            yield from range(int(first), int(last if last.isdigit() else first) + 1)
