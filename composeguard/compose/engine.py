"""Reads of Docker's state through the Engine API on dockerd's unix socket, where the docker
CLI would be started once per read.

Why: on a host whose containers run healthchecks every second, a ``docker inspect`` or
``docker ps`` costs 0.3 to 1.5 s, nearly all of it the CLI process starting up (measured on
the lab at 30 services; bench/upgrade.py). A guarded upgrade reads the state a dozen times, and
the probe polls it four times a second. The same read over the socket is one HTTP request of a
few milliseconds, and answers exactly what the CLI prints (``docker inspect`` prints the API's
JSON as it is).

Used only when it is certainly the daemon the CLI would ask: no stand-in docker
(``COMPOSEGUARD_DOCKER``, the unit tests'), no ``DOCKER_HOST`` other than ``unix://``, no docker
context but the default one (``DOCKER_CONTEXT``, ``currentContext`` in the CLI's config).
Otherwise :func:`socket_path` is None and the callers run the CLI as before. A read-only
client: nothing here changes Docker's state. Standard library only.
"""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import socket
import threading
import urllib.parse
from typing import Any

log = logging.getLogger("composeguard.engine")

DEFAULT_SOCKET = "/var/run/docker.sock"
TIMEOUT = 60.0  # seconds for one request: a daemon that is slow under load, not a hung one


class Unreachable(OSError):
    """dockerd does not answer on its socket (stopped or restarting)."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _current_context() -> str:
    """The docker CLI's current context ("default" when none is set)."""
    if os.environ.get("DOCKER_CONTEXT"):
        return os.environ["DOCKER_CONTEXT"]
    return _context_in(os.environ.get("DOCKER_CONFIG") or os.path.join(os.path.expanduser("~"), ".docker"))


@functools.lru_cache(maxsize=8)
def _context_in(config: str) -> str:
    """``currentContext`` of the CLI config in folder ``config``, read once per process (every
    read of Docker's state asks which socket to use)."""
    try:
        with open(os.path.join(config, "config.json"), "rb") as f:
            raw = f.read()
    except OSError:
        return "default"
    if b"currentContext" not in raw:
        return "default"
    try:
        return str(json.loads(raw).get("currentContext") or "default")
    except (ValueError, AttributeError):
        return "?"  # a config the CLI itself may read otherwise: leave it to the CLI


def socket_path() -> str | None:
    """The socket of the daemon the docker CLI would talk to, when that is certain; else None."""
    if "COMPOSEGUARD_DOCKER" in os.environ or os.environ.get("COMPOSEGUARD_NO_ENGINE_API") == "1":
        return None
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host[len("unix://"):] if host.startswith("unix://") else None
    if _current_context() != "default":
        return None
    return DEFAULT_SOCKET


_local = threading.local()  # one keep-alive connection per thread (the probe uses threads)


def _connection(path: str) -> _UnixConnection:
    conn = getattr(_local, "conn", None)
    if conn is None or conn.path != path:
        conn = _local.conn = _UnixConnection(path, TIMEOUT)
    return conn


def get(path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
    """GET ``path`` (e.g. ``/containers/ID/json``) from the daemon: (status, decoded JSON or
    None). Unreachable when nothing answers on the socket."""
    sock = socket_path()
    if sock is None:
        raise Unreachable("the Engine API is not used for this docker")
    url = path + ("?" + urllib.parse.urlencode(query) if query else "")
    for attempt in (1, 2):  # a kept-alive connection the daemon closed meanwhile: once more
        conn = _connection(sock)
        try:
            conn.request("GET", url, headers={"Host": "docker"})
            resp = conn.getresponse()
            body = resp.read()
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as e:
            conn.close()
            if attempt == 2:
                raise Unreachable(f"dockerd closed the connection: {e}") from e
            continue
        except OSError as e:  # no socket, connection refused, timeout
            conn.close()
            raise Unreachable(f"dockerd does not answer on {sock}: {e}") from e
        log.debug("engine: GET %s -> %d", url, resp.status)
        try:
            return resp.status, json.loads(body) if body else None
        except ValueError:
            return resp.status, None
    raise AssertionError("unreachable")


def quote(ref: str) -> str:
    """A reference as a path segment: image names keep their '/' and ':' (dockerd's router
    takes the rest of the path as the name)."""
    return urllib.parse.quote(ref, safe="/:@")
