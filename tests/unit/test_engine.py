"""Reads through the Engine API (compose/engine.py) against a stand-in daemon on a unix socket
in tmp_path: which docker it is used for, what it reads and leaves out, and what a daemon that
does not answer looks like. The lab tests read the real dockerd this way
(tests/lab/test_engine_reads.py compares it with the CLI)."""

from __future__ import annotations

import json
import socketserver
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from composeguard import execute
from composeguard.compose import docker, engine, reads
from composeguard.compose.invocation import Invocation
from composeguard.compose.project import parse_project
from composeguard.upgrade.planner import images_in_use, record_running

ID_A, ID_B, ID_RUN = "a" * 64, "b" * 64, "c" * 64


def labels(service: str, oneoff: bool = False) -> dict[str, str]:
    return {
        "com.docker.compose.project": "shop",
        "com.docker.compose.service": service,
        "com.docker.compose.oneoff": "True" if oneoff else "False",
    }


IMAGE = {"Id": "sha256:" + "1" * 64, "RepoDigests": ["127.0.0.1:5000/shop/app@sha256:" + "2" * 64]}
CONTAINERS = {
    cid: {
        "Id": cid, "Name": name, "Image": IMAGE["Id"], "State": {},
        "Config": {"Labels": lab, "Image": "127.0.0.1:5000/shop/app:v1"},
    }
    for cid, name, lab in [
        (ID_A, "/shop-a-1", labels("a")),
        (ID_B, "/shop-b-1", labels("b")),
        (ID_RUN, "/shop-b-run", labels("b", oneoff=True)),
    ]
}


class Daemon(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    requests_seen: list[str]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as dockerd
    hang_up = False  # close each connection after one answer, without saying so

    def log_message(self, *args: object) -> None:
        pass

    def address_string(self) -> str:  # a unix socket has no client address
        return "unix"

    def reply(self, status: int, body: object) -> None:
        raw = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        self.close_connection = self.hang_up

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.server.requests_seen.append(self.path)  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        path, query = urllib.parse.unquote(url.path), urllib.parse.parse_qs(url.query)
        parts = path.strip("/").split("/")
        if path == "/_ping":
            self.reply(200, b"OK")
        elif path == "/containers/json":
            wanted = json.loads(query.get("filters", ["{}"])[0]).get("label", [])
            found = [
                {"Id": c["Id"], "Labels": c["Config"]["Labels"], "ImageID": c["Image"]}
                for c in CONTAINERS.values()
                if all(w in {f"{k}={v}" for k, v in c["Config"]["Labels"].items()} for w in wanted)
            ]
            self.reply(200, found)
        elif parts[0] == "containers" and parts[-1] == "json" and parts[1] in CONTAINERS:
            self.reply(200, CONTAINERS[parts[1]])
        elif parts[0] == "images" and "/".join(parts[1:-1]) in ("127.0.0.1:5000/shop/app:v1", IMAGE["Id"]):
            self.reply(200, IMAGE)
        elif parts[0] == "volumes" and parts[1] == "broken":
            self.reply(500, {"message": "volume store is corrupt"})
        else:
            self.reply(404, {"message": f"No such object: {path}"})


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Daemon]:
    sock = tmp_path / "docker.sock"
    server = Daemon(str(sock), Handler)
    server.requests_seen = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.delenv("COMPOSEGUARD_NO_ENGINE_API", raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{sock}")

    def no_cli(*args: object, **kw: object) -> None:
        raise AssertionError(f"the docker CLI was run: {args}")

    monkeypatch.setattr(execute, "run", no_cli)
    yield server
    server.shutdown()
    server.server_close()
    engine._local.__dict__.clear()


def test_reads_go_to_the_socket_and_leave_out_what_does_not_exist(daemon: Daemon) -> None:
    got = docker.inspect_containers([ID_A, "f" * 64, ID_B])
    assert [d["Id"] for d in got] == [ID_A, ID_B]
    assert docker.batched_inspect("image", ["127.0.0.1:5000/shop/app:v1"]) == [IMAGE]
    assert docker.batched_inspect("image", ["127.0.0.1:5000/shop/app:v9"]) == []
    # the image reference keeps its '/' and ':' in the path, as the docker CLI sends it
    assert "/images/127.0.0.1:5000/shop/app:v1/json" in daemon.requests_seen


def test_project_listing_leaves_out_one_off_runs(daemon: Daemon) -> None:
    assert sorted(docker.project_container_ids("shop")) == [(ID_A, "a"), (ID_B, "b")]
    assert sorted(c.service for c in docker.project_containers("shop")) == ["a", "b"]
    assert docker.project_container_ids("other") == []


def test_the_running_images_are_read_before_the_pull_and_not_again(daemon: Daemon) -> None:
    """A guarded ``up --pull always`` reads the running images (images_in_use: the listing and
    one inspect per image, no container) before its pull starts, then the containers while it
    runs: those reads must not ask for an image again, whose tag the pull may have moved."""
    project = parse_project(
        "name: shop\nservices:\n" + "".join(f"  {s}: {{image: 127.0.0.1:5000/shop/app:v1}}\n" for s in "ab"),
        Invocation.parse([]), ["/srv/shop/compose.yaml"],
    )
    before = images_in_use(project)
    assert before is not None and list(before) == [IMAGE["Id"]]
    assert not [r for r in daemon.requests_seen if r.startswith("/containers/") and "/json" in r[12:]]
    seen = len(daemon.requests_seen)
    running = record_running(project, ["a", "b"], before)
    assert {s: (r.image_id, r.repo_digest) for s, r in running.items()} == {
        "a": (IMAGE["Id"], IMAGE["RepoDigests"][0]),
        "b": (IMAGE["Id"], IMAGE["RepoDigests"][0]),
    }
    assert not [r for r in daemon.requests_seen[seen:] if r.startswith("/images/")]


def test_an_error_of_the_daemon_is_not_taken_for_absence(daemon: Daemon) -> None:
    with pytest.raises(docker.GuardError, match="volume store is corrupt"):
        reads.volume_inspect("broken")
    assert reads.volume_inspect("nosuch") is None


def test_a_daemon_that_does_not_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COMPOSEGUARD_NO_ENGINE_API", raising=False)
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path / 'gone.sock'}")
    with pytest.raises(docker.DaemonUnreachable):
        docker.inspect_containers([ID_A])
    assert docker.wait_for_daemon(0) is False


def test_a_connection_the_daemon_closed_is_opened_again(
    daemon: Daemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Handler, "hang_up", True)  # as dockerd does with an idle connection
    assert [d["Id"] for d in docker.inspect_containers([ID_A, ID_B, ID_A])] == [ID_A, ID_B, ID_A]


@pytest.mark.parametrize(
    ("env", "config", "expected"),
    [
        ({}, None, engine.DEFAULT_SOCKET),
        ({"DOCKER_HOST": "unix:///run/user/1000/docker.sock"}, None, "/run/user/1000/docker.sock"),
        ({"DOCKER_HOST": "tcp://10.0.0.5:2376"}, None, None),
        ({"DOCKER_HOST": "ssh://me@box"}, None, None),
        ({"DOCKER_CONTEXT": "remote"}, None, None),
        ({}, {"currentContext": "rootless"}, None),
        ({}, {"currentContext": "default", "auths": {}}, engine.DEFAULT_SOCKET),
        ({"COMPOSEGUARD_DOCKER": "/usr/local/bin/fake-docker"}, None, None),
        ({"COMPOSEGUARD_NO_ENGINE_API": "1"}, None, None),
    ],
)
def test_the_socket_is_used_only_for_the_daemon_the_cli_would_ask(
    env: dict[str, str],
    config: dict | None,
    expected: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "COMPOSEGUARD_DOCKER", "COMPOSEGUARD_NO_ENGINE_API"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    if config is not None:
        (tmp_path / "config.json").write_text(json.dumps(config))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert engine.socket_path() == expected


def test_the_cli_config_is_read_once_per_process(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every read asks which socket to use; the CLI's config.json is read for the first only."""
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "COMPOSEGUARD_DOCKER", "COMPOSEGUARD_NO_ENGINE_API"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "rootless"}))
    assert engine.socket_path() is None
    (tmp_path / "config.json").unlink()
    assert engine.socket_path() is None
