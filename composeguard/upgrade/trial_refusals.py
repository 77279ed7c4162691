"""What a trial cannot take from the live version (part of trial_model.py's model): its
devices (a serial stick, a GPU) and the host addresses its ``http``/``tcp`` probes name.

Pure, like trial_model.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

LOCAL_NAMES = ("localhost", "host.docker.internal", "gateway.docker.internal")


class TrialRefusals:
    """The devices and probes of one trial service. A part of trial_model's context: it uses
    its ``refuse``."""

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
