"""The trial's mounts (part of trial_model.py's model): every mount of the unit's data points
at its clone, a read-only mount of anything else is kept, a writable one is refused.

Pure, like trial_model.py: paths are compared as strings.
"""

from __future__ import annotations

import copy
import posixpath
from typing import Any

from composeguard.storage.resolve import HOST_CONFIG


class TrialMounts:
    """The volumes of one trial service. A part of trial_model's context: it uses its
    ``model``, ``unit``, ``binds``, ``volume_paths``, ``anonymous``, ``volumes`` and ``refuse``."""

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
