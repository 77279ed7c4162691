"""The ``x-composeguard`` settings, validated: an unknown key or a wrong type is an error.

Project level (top-level ``x-composeguard``) sets defaults; service level overrides them.
Environment variables ``COMPOSEGUARD_*`` override the project level.
"""

from __future__ import annotations

import math
import os
import shlex
from dataclasses import dataclass, fields
from typing import Any

from composeguard.errors import ConfigError

QUIESCE_MODES = ("none", "stop", "pause")
UNPROTECTED_MODES = ("refuse", "allow")


def _host_port(target: str) -> bool:
    host, _, port = target.rpartition(":")
    return bool(host) and port.isdigit() and 0 < int(port) < 65536


ENVIRONMENT = "the environment"


def _label(key: str, where: str) -> str:
    """How an error names a setting: the variable it came from, or its place in the file."""
    return f"COMPOSEGUARD_{key.upper()}" if where == ENVIRONMENT else f"x-composeguard.{key} in {where}"


def _number(value: Any, key: str, where: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value < 0
    ):
        raise ConfigError(f"{_label(key, where)} must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _choice(value: Any, key: str, where: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{_label(key, where)} must be one of {', '.join(choices)}, not {value!r}")
    return str(value)


def _bool(value: Any, key: str, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{_label(key, where)} must be true or false, not {value!r}")
    return value


def _mapping(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"x-composeguard in {where} must be a mapping, not {type(raw).__name__}")
    return raw


def _unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(raw) - known)
    if extra:
        raise ConfigError(
            f"unknown x-composeguard setting {extra[0]!r} in {where} (known: {', '.join(sorted(known))})"
        )


@dataclass(frozen=True)
class Probe:
    """An extra probe: exactly one of http, tcp, exec."""

    kind: str  # http | tcp | exec
    target: str | list[str]
    status: int = 200

    @classmethod
    def parse(cls, raw: Any, where: str) -> Probe:
        if not isinstance(raw, dict):
            raise ConfigError(
                f"x-composeguard.probe in {where} must be a mapping like "
                f"{{http: URL}}, {{tcp: HOST:PORT}} or {{exec: [CMD, ...]}}"
            )
        _unknown(raw, {"http", "tcp", "exec", "status"}, f"the probe of {where}")
        kinds = [k for k in ("http", "tcp", "exec") if k in raw]
        if len(kinds) != 1:
            raise ConfigError(f"x-composeguard.probe in {where} needs exactly one of http, tcp, exec")
        kind = kinds[0]
        target = raw[kind]
        if kind == "exec":
            if isinstance(target, str):
                target = ["sh", "-c", target]  # runs inside the container, as HEALTHCHECK CMD-SHELL
            if not (isinstance(target, list) and target and all(isinstance(x, str) for x in target)):
                raise ConfigError(f"x-composeguard.probe.exec in {where} must be a command list")
        elif not isinstance(target, str) or not target:
            raise ConfigError(f"x-composeguard.probe.{kind} in {where} must be a string")
        elif kind == "tcp" and not _host_port(target):
            raise ConfigError(f"x-composeguard.probe.tcp in {where} must be HOST:PORT, not {target!r}")
        elif kind == "http" and not target.startswith(("http://", "https://")):
            raise ConfigError(
                f"x-composeguard.probe.http in {where} must be an http:// or https:// URL, not {target!r}"
            )
        status = raw.get("status", 200)
        if isinstance(status, bool) or not isinstance(status, int):
            raise ConfigError(f"x-composeguard.probe.status in {where} must be an HTTP status code")
        return cls(kind=kind, target=target, status=status)


@dataclass(frozen=True)
class ServiceSettings:
    probe: Probe | None = None
    timeout: float | None = None
    settle: float | None = None
    quiesce: str | None = None
    unprotected: str | None = None
    update: bool | None = None

    @classmethod
    def parse(cls, raw: Any, where: str) -> ServiceSettings:
        raw = _mapping(raw, where)
        _unknown(raw, {f.name for f in fields(cls)}, where)
        return cls(
            probe=Probe.parse(raw["probe"], where) if "probe" in raw else None,
            timeout=_number(raw["timeout"], "timeout", where) if "timeout" in raw else None,
            settle=_number(raw["settle"], "settle", where) if "settle" in raw else None,
            quiesce=_choice(raw["quiesce"], "quiesce", where, QUIESCE_MODES) if "quiesce" in raw else None,
            unprotected=(
                _choice(raw["unprotected"], "unprotected", where, UNPROTECTED_MODES)
                if "unprotected" in raw
                else None
            ),
            update=_bool(raw["update"], "update", where) if "update" in raw else None,
        )


@dataclass(frozen=True)
class ProjectSettings:
    timeout: float = 120.0
    settle: float = 10.0
    unprotected: str = "refuse"
    update: bool = True
    retention: int = 3
    min_free: str = "5%"
    btrfs_snapshot_dir: str = ".composeguard-snapshots"
    hook: tuple[str, ...] = ()  # a command run after every transaction (outcome on stdin)
    notify: tuple[str, ...] = ()  # Apprise URLs (needs the apprise extra)

    @classmethod
    def parse(cls, raw: Any, where: str) -> ProjectSettings:
        raw = dict(_mapping(raw, where))
        known = {f.name for f in fields(cls)}
        _unknown(raw, known, where)
        env = {
            k: os.environ[f"COMPOSEGUARD_{k.upper()}"]
            for k in known
            if f"COMPOSEGUARD_{k.upper()}" in os.environ
        }
        for k, v in env.items():
            if k == "hook":
                raw[k] = shlex.split(v)  # a word list, never run through a shell
            elif k == "notify":
                raw[k] = v.replace(",", " ").split()
            elif k in ("unprotected", "min_free", "btrfs_snapshot_dir"):
                raw[k] = v
            else:
                raw[k] = _env_value(k, v)
        out = cls()
        kw: dict[str, Any] = {}
        src = {k: (ENVIRONMENT if k in env else where) for k in raw}
        if "timeout" in raw:
            kw["timeout"] = _number(raw["timeout"], "timeout", src["timeout"])
        if "settle" in raw:
            kw["settle"] = _number(raw["settle"], "settle", src["settle"])
        if "unprotected" in raw:
            kw["unprotected"] = _choice(
                raw["unprotected"], "unprotected", src["unprotected"], UNPROTECTED_MODES
            )
        if "update" in raw:
            kw["update"] = _bool(raw["update"], "update", src["update"])
        if "retention" in raw:
            r = raw["retention"]
            if isinstance(r, bool) or not isinstance(r, int) or r < 1:
                raise ConfigError(f"{_label('retention', src['retention'])} must be an integer >= 1")
            kw["retention"] = r
        if "min_free" in raw:
            kw["min_free"] = str(raw["min_free"])
            parse_size_or_percent(kw["min_free"], _label("min_free", src["min_free"]))
        if "btrfs_snapshot_dir" in raw:
            if not isinstance(raw["btrfs_snapshot_dir"], str) or not raw["btrfs_snapshot_dir"]:
                raise ConfigError(f"{_label('btrfs_snapshot_dir', src['btrfs_snapshot_dir'])} must be a path")
            kw["btrfs_snapshot_dir"] = raw["btrfs_snapshot_dir"]
        for key in ("hook", "notify"):
            if key in raw:
                v = raw[key]
                if isinstance(v, str) and key == "notify":
                    v = [v]
                if not (isinstance(v, list) and v and all(isinstance(x, str) and x for x in v)):
                    raise ConfigError(f"{_label(key, src[key])} must be a list of strings")
                kw[key] = tuple(v)
        return ProjectSettings(**{**{f.name: getattr(out, f.name) for f in fields(out)}, **kw})

    def for_service(self, s: ServiceSettings) -> EffectiveSettings:
        return EffectiveSettings(
            probe=s.probe,
            timeout=s.timeout if s.timeout is not None else self.timeout,
            settle=s.settle if s.settle is not None else self.settle,
            quiesce=s.quiesce or "none",
            unprotected=s.unprotected or self.unprotected,
            update=s.update if s.update is not None else self.update,
        )


@dataclass(frozen=True)
class EffectiveSettings:
    probe: Probe | None
    timeout: float
    settle: float
    quiesce: str
    unprotected: str
    update: bool


def _env_value(key: str, value: str) -> Any:
    if key == "update":
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"COMPOSEGUARD_UPDATE must be true or false, not {value!r}")
    try:
        return int(value) if key == "retention" else float(value)
    except ValueError:
        raise ConfigError(f"COMPOSEGUARD_{key.upper()} must be a number, not {value!r}") from None


def parse_size_or_percent(text: str, label: str = "min_free") -> tuple[str, float]:
    """'5%' -> ('percent', 5.0); '512M' -> ('bytes', 536870912.0)."""
    t = text.strip()
    try:
        if t.endswith("%"):
            return "percent", float(t[:-1])
        units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
        if t and t[-1].upper() in units:
            return "bytes", float(t[:-1]) * units[t[-1].upper()]
        return "bytes", float(t)
    except ValueError:
        raise ConfigError(f"{label} must be a size like 512M or a percentage like 5%, not {text!r}") from None
