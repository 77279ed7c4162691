"""The per-project lock: one guarded run per project at a time.

``flock`` is released by the kernel when the process dies, so a SIGKILL never leaves a stale
lock behind; an interrupted transaction is found through its journal instead.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from composeguard.errors import ConfigError, LockedError
from composeguard.faults import pause_point
from composeguard.state import project_dir


@contextmanager
def project_lock(project: str) -> Iterator[None]:
    path = project_dir(project) / "lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:
        raise ConfigError(
            f"cannot use the state directory {path.parent}: {e.strerror} "
            f"(COMPOSEGUARD_STATE_DIR); nothing was changed"
        ) from e
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            raise LockedError(
                f"another composeguard run (pid {holder}) is working on project {project}; "
                f"try again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        pause_point("locked")
        yield
    finally:
        os.close(fd)
