"""Is composeguard in dockerd's mount namespace? A restore that mounts must be.

A ZFS whole-dataset restore unmounts the failed dataset and mounts the restored one (and
``provision`` mounts new datasets). Mounts made in a private mount namespace — a systemd unit
with ``PrivateTmp=``, ``ProtectSystem=``, ``ReadWritePaths=`` …, ``unshare --mount``, a
container — do not reach the host: dockerd would go on seeing the path as it was (empty, once
the failed dataset is unmounted there) and the old version would start on no data at all. So a
run that would mount compares its namespace with dockerd's before anything is stopped, and
refuses when they differ.

dockerd is found by the peer credentials of its socket (the daemon that answers is the one
that runs the containers); where the socket gives no pid (TCP, another PID namespace), by the
one process named ``dockerd`` in /proc.
"""

from __future__ import annotations

import logging
import os
import socket
import struct

from composeguard.errors import ConfigError

log = logging.getLogger("composeguard.mountns")

DEFAULT_SOCKET = "/var/run/docker.sock"


def _socket_path() -> str | None:
    host = os.environ.get("DOCKER_HOST", "")
    if not host:
        return DEFAULT_SOCKET
    return host[len("unix://"):] if host.startswith("unix://") else None


def _peer_pid(path: str) -> int | None:
    """The pid of the process listening on the unix socket ``path`` (SO_PEERCRED)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(path)
            creds = s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as e:
        log.debug("no peer credentials from %s: %s", path, e)
        return None
    pid = struct.unpack("3i", creds)[0]
    return pid or None  # 0: the daemon is in a PID namespace this process cannot see


def _pids_named(name: str) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm", encoding="utf-8") as f:
                    if f.read().strip() == name:
                        out.append(int(entry))
            except OSError:
                continue
    return out


def dockerd_pid() -> int | None:
    path = _socket_path()
    pid = _peer_pid(path) if path else None
    if pid is None:
        found = _pids_named("dockerd")
        pid = found[0] if len(found) == 1 else None
    return pid


def _namespace(pid: int | str) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/ns/mnt")
    except OSError as e:
        log.debug("cannot read the mount namespace of %s: %s", pid, e)
        return None
    return st.st_dev, st.st_ino


def _why_separate() -> str:
    """The likely cause of a mount namespace of its own, for the one line a user reads."""
    if os.environ.get("INVOCATION_ID"):
        return (
            "it runs in a systemd unit that sandboxes its mounts (PrivateTmp=, ProtectSystem=, "
            "ProtectHome=, ReadWritePaths=, Protect{KernelTunables,KernelModules,KernelLogs,"
            "ControlGroups}= …): remove those options (README: The nightly job)"
        )
    if _namespace("self") != _namespace(1):
        return "it runs in a mount namespace of its own (unshare --mount?): run it in the host's"
    return "dockerd runs in a mount namespace of its own (a sandboxed docker.service?)"


def namespace_problem(what: str) -> str:
    """Why ``what`` (an operation that mounts) cannot be done from this process: "" when it
    shares dockerd's mount namespace."""
    pid = dockerd_pid()
    ours = _namespace("self")
    theirs = _namespace(pid) if pid else None
    if pid is None or theirs is None or ours is None:
        return (
            f"{what} mounts datasets where dockerd must see them, but composeguard cannot find "
            f"dockerd's process to compare mount namespaces (in a container or another PID "
            f"namespace?); run it on the host"
        )
    if ours != theirs:
        return (
            f"{what} mounts datasets, but composeguard is not in dockerd's mount namespace, so "
            f"dockerd would not see the restored data: {_why_separate()}"
        )
    log.debug("same mount namespace as dockerd (pid %d)", pid)
    return ""


def check_dockerd_namespace(what: str) -> None:
    """Raise ConfigError (exit 2, nothing changed) unless this process shares dockerd's mount
    namespace."""
    problem = namespace_problem(what)
    if problem:
        raise ConfigError(f"{problem}. Nothing was changed")
