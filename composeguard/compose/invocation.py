"""The user's compose global options, and the file list composeguard runs compose with.

composeguard adds its pin file as one more ``-f`` after the user's files. Any ``-f`` turns
off compose's own discovery (``compose.yaml`` + ``compose.override.yaml``), so the files
compose *would* have loaded are worked out here and passed explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from composeguard.dockercli import GLOBAL_OPTIONS_WITH_VALUE
from composeguard.errors import ConfigError

# compose-go's cli/options.go: DefaultFileNames and DefaultOverrideFileNames, in order.
DEFAULT_FILE_NAMES = ("compose.yaml", "compose.yml", "docker-compose.yml", "docker-compose.yaml")
DEFAULT_OVERRIDE_NAMES = (
    "compose.override.yml",
    "compose.override.yaml",
    "docker-compose.override.yml",
    "docker-compose.override.yaml",
)


@dataclass
class Invocation:
    """Parsed compose global options (everything before the command)."""

    args: list[str] = field(default_factory=list)  # verbatim, for `config`
    files: list[str] = field(default_factory=list)
    project_name: str | None = None
    project_directory: str | None = None
    others: list[str] = field(default_factory=list)  # every option except -f/-p/--project-directory

    @classmethod
    def parse(cls, args: list[str]) -> Invocation:
        inv = cls(args=list(args))
        i = 0
        while i < len(args):
            a = args[i]
            name, value = a, None
            if a.startswith("--") and "=" in a:
                name, value = a.split("=", 1)
            elif a[:2] in ("-f", "-p") and len(a) > 2:
                name, value = a[:2], a[2:].removeprefix("=")  # -fX and -f=X, as compose takes
            if name in GLOBAL_OPTIONS_WITH_VALUE and value is None:
                if i + 1 >= len(args):
                    raise ConfigError(f"option {name} needs a value")
                value = args[i + 1]
                i += 1
            i += 1
            if name in ("-f", "--file"):
                inv.files.append(value or "")
            elif name in ("-p", "--project-name"):
                inv.project_name = value
            elif name == "--project-directory":
                inv.project_directory = value
            elif name in GLOBAL_OPTIONS_WITH_VALUE:
                inv.others += [name, value or ""]
            else:
                inv.others.append(a)
        return inv

    @property
    def env_files(self) -> list[str]:
        """The ``--env-file`` values, in order."""
        out, i = [], 0
        while i < len(self.others):
            a = self.others[i]
            if a == "--env-file" and i + 1 < len(self.others):
                out.append(self.others[i + 1])
                i += 1
            i += 1
        return out

    def may_read_an_env_file(self, cwd: str | None = None) -> bool:
        """True when compose may take COMPOSE_* settings from a file: an ``--env-file``, or a
        ``.env`` in the folder compose starts in or one it may find the project in (a parent)."""
        if self.env_files:
            return True
        base = Path(cwd or os.getcwd())
        start = (base / self.project_directory).absolute() if self.project_directory else base
        return any((d / ".env").is_file() for d in (start, *start.parents))

    def config_files(self, cwd: str | None = None, environ: Mapping[str, str] | None = None) -> list[str]:
        """The compose files compose itself would load, as absolute paths, in order.

        ``environ`` is the environment as compose sees it (the process environment with the
        project's ``.env`` or ``--env-file``s applied): COMPOSE_FILE may come from there."""
        env = os.environ if environ is None else environ
        base = Path(cwd or os.getcwd())
        if self.files:
            if "-" in self.files:
                raise ConfigError("a compose file on stdin (-f -) cannot be guarded; write it to a file")
            return [str((base / f).absolute()) for f in self.files]
        env_files = env.get("COMPOSE_FILE")
        if env_files:
            sep = env.get("COMPOSE_PATH_SEPARATOR") or os.pathsep
            return [str((base / f).absolute()) for f in env_files.split(sep) if f]
        start = (base / self.project_directory).absolute() if self.project_directory else base
        for d in (start, *start.parents):
            for name in DEFAULT_FILE_NAMES:
                if (d / name).is_file():
                    found = [str(d / name)]
                    override = next((d / o for o in DEFAULT_OVERRIDE_NAMES if (d / o).is_file()), None)
                    if override:
                        found.append(str(override))
                    return found
        raise ConfigError(
            f"no compose file found in {start} or its parents (looked for {', '.join(DEFAULT_FILE_NAMES)})"
        )

    def with_files(self, files: list[str], project_name: str) -> list[str]:
        """Global options that load exactly ``files`` for project ``project_name``."""
        out: list[str] = []
        for f in files:
            out += ["-f", f]
        out += ["-p", project_name]
        if self.project_directory:
            out += ["--project-directory", self.project_directory]
        return out + self.others
