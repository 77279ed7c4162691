"""composeguard's state directory: atomic JSON files with private permissions.

Layout (``COMPOSEGUARD_STATE_DIR``, default ``/var/lib/composeguard``)::

    projects/<project>/lock             the per-project lock (flock)
    projects/<project>/pins.yaml        the pin override file (a plain compose file)
    projects/<project>/txns/<id>.json   one journal per transaction
    projects/<project>/txns/<id>/       its run log and the saved logs of failed services
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Any

from composeguard.errors import ConfigError, GuardError

log = logging.getLogger("composeguard.state")

DEFAULT_STATE_DIR = "/var/lib/composeguard"
_SAFE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def state_dir() -> Path:
    raw = os.environ.get("COMPOSEGUARD_STATE_DIR", DEFAULT_STATE_DIR)
    if not os.path.isabs(raw):  # an empty or relative value would depend on the current folder
        raise ConfigError(
            f"COMPOSEGUARD_STATE_DIR must be an absolute path, not {raw!r}; nothing was changed"
        )
    return Path(raw)


def safe_name(name: str, what: str) -> str:
    """Project names become path components: accept only compose's own name alphabet."""
    if not _SAFE_NAME.fullmatch(name or ""):
        raise ConfigError(f"invalid {what} {name!r}: use lowercase letters, digits, '-' and '_'")
    return name


def project_dir(project: str, create: bool = True) -> Path:
    d = state_dir() / "projects" / safe_name(project, "project name")
    if create:
        make_private_dir(d)
    return d


def make_private_dir(d: Path) -> None:
    try:
        for p in reversed([d, *d.parents]):
            if not p.exists():
                p.mkdir(mode=0o700)
        if d.stat().st_mode & 0o777 != 0o700:
            os.chmod(d, 0o700)
    except OSError as e:
        hint = (
            "composeguard needs root"
            if os.geteuid() != 0
            else "set COMPOSEGUARD_STATE_DIR to a writable folder"
        )
        raise ConfigError(
            f"cannot use the state directory {d}: {e.strerror} ({hint}); nothing was changed"
        ) from e


def write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """``_write_atomic``; on a full disk, once more after freeing the state dir's reserve."""
    try:
        _write_atomic(path, data, mode)
    except OSError as e:
        full = e.errno in (errno.ENOSPC, errno.EDQUOT) and path.name != RESERVE_NAME
        if not (full and _in_state_dir(path) and release_reserve()):
            raise
        log.warning("%s: %s; using the reserve", path, e.strerror)
        _write_atomic(path, data, mode)


def write_with_spare(path: Path, data: str, spare: Path | None) -> Path:
    """Write ``data`` to ``path`` (its folder made private); when the state dir cannot take
    it (a full disk) and a ``spare`` path is given, there instead. Returns where it went: a
    rollback or an abort must bring the old version back all the same (the spare is on /run)."""
    try:
        make_private_dir(path.parent)
        write_atomic(path, data)
        return path
    except (OSError, GuardError):
        if spare is None:
            raise
    make_private_dir(spare.parent)
    write_atomic(spare, data)
    return spare


def _in_state_dir(path: Path) -> bool:
    """The reserve frees room on the state dir's filesystem only (not, say, a metrics folder)."""
    try:
        return state_dir() in path.parents
    except ConfigError:
        return False


def _write_atomic(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write ``path`` so that a crash leaves either the old or the new content: temp file in
    the same folder, fsync, rename, fsync the folder. The temp file has a random name and is
    created with O_EXCL|O_NOFOLLOW and its mode set on the descriptor, so a symlink planted in
    a folder other users can write (a Prometheus textfile folder) is never written through."""
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.tmp.{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    try:
        with os.fdopen(fd, "wb") as f:  # write() loops over short writes; a full disk raises
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GuardError(
            f"the state file {path} is corrupt ({e}); move it aside to continue (nothing was changed)"
        ) from e


# Room kept in the state directory for the journal and the pins of a rollback on a full disk:
# a run makes it (random bytes, so compression cannot shrink it) and a failed write frees it.
RESERVE_NAME = ".reserve"
RESERVE_BYTES = 1 << 20


def make_reserve() -> None:
    """Best effort: a state dir with no room for the reserve simply has none."""
    path = state_dir() / RESERVE_NAME
    try:
        if path.exists() and path.stat().st_size == RESERVE_BYTES:
            return
        write_atomic(path, os.urandom(RESERVE_BYTES))
    except OSError as e:
        path.unlink(missing_ok=True)
        log.debug("no reserve in the state dir: %s", e)


def release_reserve() -> bool:
    """Free the reserve (a write failed); True when there was one to free."""
    path = state_dir() / RESERVE_NAME
    try:
        path.unlink()
    except OSError:
        return False
    return True
