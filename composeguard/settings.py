"""The ``x-composeguard`` settings, validated: an unknown key or a wrong type is an error.

Project level (top-level ``x-composeguard``) sets defaults; service level overrides them.
Environment variables ``COMPOSEGUARD_*`` override the project level.
"""

from __future__ import annotations

import math
import os
import shlex
from collections.abc import Callable
from dataclasses import dataclass, fields
from functools import partial
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


def _retention(value: Any, key: str, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{_label(key, where)} must be an integer >= 1")
    return value


def _min_free(value: Any, key: str, where: str) -> str:
    parse_size_or_percent(str(value), _label(key, where))
    return str(value)


def _path(value: Any, key: str, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{_label(key, where)} must be a path")
    return value


def _words(value: Any, key: str, where: str) -> tuple[str, ...]:
    if isinstance(value, str) and key == "notify":  # one URL
        value = [value]
    if not (isinstance(value, list) and value and all(isinstance(x, str) and x for x in value)):
        raise ConfigError(f"{_label(key, where)} must be a list of strings")
    return tuple(value)


UPDATE_MODES = (True, False, "notify")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _update(value: Any, key: str, where: str) -> bool | str:
    if value not in UPDATE_MODES or (value in (0, 1) and not isinstance(value, bool)):
        raise ConfigError(f"{_label(key, where)} must be true, false or notify, not {value!r}")
    return value


def parse_duration(value: Any, label: str) -> float:
    """Seconds from a number of seconds or ``45s``, ``30m``, ``12h``, ``3d``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(value, "", "") if math.isfinite(value) and value >= 0 else _bad_duration(value, label)
    text = value.strip().lower() if isinstance(value, str) else ""
    number, unit = (text[:-1], text[-1]) if text[-1:] in DURATION_UNITS else (text, "s")
    try:
        seconds = float(number) * DURATION_UNITS[unit]
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        _bad_duration(value, label)
    return seconds


def _bad_duration(value: Any, label: str) -> float:
    raise ConfigError(f"{label} must be a duration like 45s, 30m, 12h or 3d, not {value!r}")


def _duration(value: Any, key: str, where: str) -> float:
    return parse_duration(value, _label(key, where))


def _command(value: Any, key: str, where: str) -> tuple[str, ...]:
    """A command as a word list; a string is run by ``sh -c`` in the container (``before``,
    as a HEALTHCHECK's CMD-SHELL) or split into words, never through a shell (``before_host``)."""
    if isinstance(value, str) and value.strip():
        value = ["sh", "-c", value] if key == "before" else shlex.split(value)
    if not (isinstance(value, list) and value and all(isinstance(x, str) and x for x in value)):
        raise ConfigError(f"{_label(key, where)} must be a command: a list of strings, or one string")
    return tuple(value)


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


# How each x-composeguard field is checked and converted: (value, field name, where it was set).
FIELDS: dict[str, Callable[[Any, str, str], Any]] = {
    "probe": lambda v, _k, where: Probe.parse(v, where),
    "timeout": _number,
    "settle": _number,
    "quiesce": partial(_choice, choices=QUIESCE_MODES),
    "unprotected": partial(_choice, choices=UNPROTECTED_MODES),
    "update": _update,
    "trial": _bool,
    "min_age": _duration,
    "before": _command,
    "before_host": _command,
    "retention": _retention,
    "keep_rollbacks": _retention,
    "min_free": _min_free,
    "btrfs_snapshot_dir": _path,
    "hook": _words,
    "notify": _words,
}
# How a COMPOSEGUARD_<FIELD> variable's text becomes a value (the rest: _env_value).
FROM_ENVIRONMENT: dict[str, Callable[[str], Any]] = {
    "hook": shlex.split,  # a word list, never run through a shell
    "notify": lambda v: v.replace(",", " ").split(),
    "unprotected": str,
    "min_free": str,
    "btrfs_snapshot_dir": str,
    "min_age": str,
    "before_host": shlex.split,
}


@dataclass(frozen=True)
class ServiceSettings:
    probe: Probe | None = None
    timeout: float | None = None
    settle: float | None = None
    quiesce: str | None = None
    unprotected: str | None = None
    update: bool | str | None = None  # true, false or "notify"
    min_age: float | None = None  # seconds a new digest waits before `update` installs it
    before: tuple[str, ...] | None = None  # a veto run in the container (upgrade/policy.py)
    before_host: tuple[str, ...] | None = None  # a veto run on the host

    @classmethod
    def parse(cls, raw: Any, where: str) -> ServiceSettings:
        raw = _mapping(raw, where)
        _unknown(raw, {f.name for f in fields(cls)}, where)
        return cls(**{k: FIELDS[k](v, k, where) for k, v in raw.items()})


@dataclass(frozen=True)
class ProjectSettings:
    timeout: float = 120.0
    settle: float = 10.0
    unprotected: str = "refuse"
    update: bool | str = True  # false: `update` leaves the project alone; "notify": it only tells
    retention: int = 3  # committed transactions whose pre-upgrade snapshots are kept
    min_free: str = "5%"
    btrfs_snapshot_dir: str = ".composeguard-snapshots"
    hook: tuple[str, ...] = ()  # a command run after every transaction (outcome on stdin)
    notify: tuple[str, ...] = ()  # Apprise URLs (needs the apprise extra)
    keep_rollbacks: int = 3  # rolled-back (or aborted) ones whose snapshots and failed state are kept
    # Try the new version on clones of the data, beside the live one, before stopping anything
    # (upgrade/trial.py); COMPOSEGUARD_TRIAL=1 or `update --trial` ask for it explicitly.
    trial: bool = False
    min_age: float = 0.0  # seconds a new digest waits before `update` installs it (upgrade/policy.py)
    before_host: tuple[str, ...] = ()  # a veto run on the host before every upgrade

    @classmethod
    def parse(cls, raw: Any, where: str) -> ProjectSettings:
        raw = dict(_mapping(raw, where))
        known = {f.name for f in fields(cls)}
        _unknown(raw, known, where)
        env = {k: os.environ[v] for k in known if (v := f"COMPOSEGUARD_{k.upper()}") in os.environ}
        for k, v in env.items():
            raw[k] = FROM_ENVIRONMENT.get(k, partial(_env_value, k))(v)
        return cls(**{k: FIELDS[k](v, k, ENVIRONMENT if k in env else where) for k, v in raw.items()})

    def for_service(self, s: ServiceSettings) -> EffectiveSettings:
        return EffectiveSettings(
            probe=s.probe,
            timeout=s.timeout if s.timeout is not None else self.timeout,
            settle=s.settle if s.settle is not None else self.settle,
            quiesce=s.quiesce or "none",
            unprotected=s.unprotected or self.unprotected,
            update=s.update if s.update is not None else self.update,
            min_age=s.min_age if s.min_age is not None else self.min_age,
            before=s.before or (),
            before_host=s.before_host or self.before_host,
        )


@dataclass(frozen=True)
class EffectiveSettings:
    probe: Probe | None
    timeout: float
    settle: float
    quiesce: str
    unprotected: str
    update: bool | str
    min_age: float = 0.0
    before: tuple[str, ...] = ()
    before_host: tuple[str, ...] = ()


def _env_value(key: str, value: str) -> Any:
    if key == "update" and value.lower() == "notify":
        return "notify"
    if key in ("update", "trial"):
        if value.lower() in ("1", "true", "yes"):
            return True
        if value.lower() in ("0", "false", "no"):
            return False
        raise ConfigError(f"COMPOSEGUARD_{key.upper()} must be true or false, not {value!r}")
    try:
        return int(value) if key in ("retention", "keep_rollbacks") else float(value)
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
