"""Resolve a compose project the way compose does: by asking ``docker compose config``.

The YAML output is read (not ``--format json``) because the JSON drops service-level ``x-*``
fields (docker/compose#11528).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from composeguard import execute
from composeguard.compose.invocation import Invocation
from composeguard.errors import CommandError, ConfigError, last_line
from composeguard.settings import ProjectSettings, ServiceSettings

try:  # the C loader is several times faster on large projects
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]


SERVICE_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]*")


@dataclass(frozen=True)
class VolumeMount:
    """One entry of a service's ``volumes`` (long form, as compose normalises it)."""

    type: str  # bind | volume | tmpfs | npipe | image | cluster
    source: str | None  # bind: absolute host path; volume: key of the top-level volumes map
    target: str
    read_only: bool = False


@dataclass
class Service:
    name: str
    image: str | None
    volumes: list[VolumeMount]
    depends_on: list[str]
    has_healthcheck: bool
    settings: ServiceSettings
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


@dataclass
class Project:
    name: str
    invocation: Invocation
    files: list[str]  # the compose files compose loads, absolute, in order
    services: dict[str, Service]
    volumes: dict[str, dict[str, Any]]  # top-level volumes (key -> name/driver/driver_opts/...)
    settings: ProjectSettings
    networks: dict[str, dict[str, Any]] = field(default_factory=dict)  # top-level (key -> name/external/...)
    model: dict[str, Any] = field(default_factory=dict, repr=False)  # `docker compose config`, as parsed

    def compose_args(self, extra_files: list[str] | None = None) -> list[str]:
        """Global options for compose commands composeguard runs on this project."""
        return self.invocation.with_files(self.files + list(extra_files or []), self.name)

    def service(self, name: str) -> Service:
        try:
            return self.services[name]
        except KeyError:
            known = ", ".join(sorted(self.services)) or "none"
            raise ConfigError(f"no such service: {name} (services: {known})") from None


def start_config(global_args: list[str]) -> execute.Background:
    """``docker compose config`` started at once, read by ``resolve(early=…)``: a guarded
    ``up`` imports the rest of composeguard meanwhile, which takes about as long."""
    return execute.Background(execute.compose_command(*Invocation.parse(global_args).args, "config"))


def run_config(
    invocation: Invocation, services: list[str] | None = None, early: execute.Background | None = None
) -> str:
    """The output of ``docker compose config [SERVICES]``; ``early``: that of start_config."""
    try:
        if early is None or services:
            return execute.run(execute.compose_command(*invocation.args, "config", *(services or []))).stdout
        proc = early.result()
        if proc.returncode != 0:
            raise CommandError(proc.args, proc.returncode, proc.stderr)
        return proc.stdout
    except CommandError as e:
        raise ConfigError(f"docker compose config failed: {last_line(e.stderr, str(e))}") from e


def _depends_on(raw: Any) -> list[str]:
    if isinstance(raw, dict):
        return list(raw)
    if isinstance(raw, list):
        return [str(x) for x in raw]
    return []


def _healthcheck(raw: dict[str, Any]) -> bool | None:
    """True/False when the compose file decides; None when the image's HEALTHCHECK decides."""
    hc = raw.get("healthcheck")
    if not isinstance(hc, dict):
        return None
    if hc.get("disable") or (hc.get("test") in (["NONE"], "NONE")):
        return False
    return True if hc.get("test") else None


def parse_project(text: str, invocation: Invocation, files: list[str]) -> Project:
    try:
        model = yaml.load(text, Loader=_Loader)  # noqa: S506 - CSafeLoader is the safe loader
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot read the output of docker compose config: {e}") from e
    if not isinstance(model, dict) or "services" not in model:
        raise ConfigError("docker compose config returned no services")
    services: dict[str, Service] = {}
    for name, raw in (model.get("services") or {}).items():
        if not isinstance(name, str) or not SERVICE_NAME.fullmatch(name):
            # compose enforces this too; composeguard builds file names from service names
            raise ConfigError(f"invalid service name {name!r}: use letters, digits, '.', '_' and '-'")
        raw = raw or {}
        vols = []
        for v in raw.get("volumes") or []:
            if isinstance(v, dict):
                vols.append(
                    VolumeMount(
                        type=str(v.get("type", "volume")),
                        source=v.get("source"),
                        target=str(v.get("target", "")),
                        read_only=bool(v.get("read_only", False)),
                    )
                )
        hc = _healthcheck(raw)
        services[name] = Service(
            name=name,
            image=raw.get("image"),
            volumes=vols,
            depends_on=_depends_on(raw.get("depends_on")),
            has_healthcheck=bool(hc),
            settings=ServiceSettings.parse(raw.get("x-composeguard"), where=f"service {name}"),
            raw=raw,
        )
    return Project(
        name=str(model.get("name")),
        invocation=invocation,
        files=files,
        services=services,
        volumes=dict(model.get("volumes") or {}),
        settings=ProjectSettings.parse(model.get("x-composeguard"), where="the project"),
        networks={k: v or {} for k, v in (model.get("networks") or {}).items()},
        model=model,
    )


def compose_environment(invocation: Invocation, cwd: str | None = None) -> Mapping[str, str]:
    """The environment compose reads its own settings from (COMPOSE_FILE,
    COMPOSE_PATH_SEPARATOR, ...): the process environment with the project's ``.env`` or the
    ``--env-file``s applied. Which file and which value wins are compose's rules, so compose is
    asked (``config --environment``), but only when such a file can exist."""
    if invocation.files or not invocation.may_read_an_env_file(cwd):
        return os.environ
    try:
        out = execute.run(execute.compose_command(*invocation.args, "config", "--environment")).stdout
    except CommandError as e:
        raise ConfigError(f"docker compose config failed: {last_line(e.stderr, str(e))}") from e
    env = dict(os.environ)
    for line in out.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("COMPOSE_"):
            env[name] = value
    return env


def resolve(
    global_args: list[str],
    cwd: str | None = None,
    services: list[str] | None = None,
    early: execute.Background | None = None,
) -> Project:
    """Load the project that ``docker compose GLOBAL_ARGS … SERVICES`` would act on
    (``early``: its ``docker compose config``, already started by start_config).

    A service named on the command line is started by compose even when its profile is not
    active (with the dependencies it needs); ``config SERVICES`` is compose's own answer for
    those, merged into the project."""
    invocation = Invocation.parse(global_args)
    files = invocation.config_files(cwd or os.getcwd(), compose_environment(invocation, cwd))
    project = parse_project(run_config(invocation, early=early), invocation, files)
    missing = [s for s in services or [] if s not in project.services]
    if missing and all(SERVICE_NAME.fullmatch(s) for s in missing):
        try:
            named = parse_project(run_config(invocation, missing), invocation, files)
        except ConfigError:  # not a service of the project at all: project.service() says so
            return project
        for name, svc in named.services.items():
            project.services.setdefault(name, svc)
    return project
