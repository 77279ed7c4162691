"""The trial run's compose model: the unit's services, on the new images, on clones of the data.

Before a real upgrade stops anything, composeguard can start the unit's services with the NEW
images as a project of their own (``docker compose -p <project>-trial -f FILE up -d``), on
writable clones of their data, probe them, and cut over only when they pass. This module
writes that project's compose document from the real project's ``docker compose config``
model, and says what cannot be tried (``refusals``: the upgrade then runs without a trial).
The mounts are trial_mounts.py; the devices and probes, trial_refusals.py.

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
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from composeguard.compose.started import TRIAL_LABEL
from composeguard.upgrade.trial_mounts import TrialMounts
from composeguard.upgrade.trial_refusals import TrialRefusals

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


class _Context(TrialMounts, TrialRefusals):
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

    # --- namespaces -------------------------------------------------------------------------

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
