"""parse_project on the YAML that `docker compose config` prints (REFERENCE §5.1).

CONFIG below is based on the real output of compose v2.40.3 (paths shortened; the worker
service was added by hand).
"""

from __future__ import annotations

import pytest

from composeguard.compose.invocation import Invocation
from composeguard.compose.project import VolumeMount, parse_project
from composeguard.errors import ConfigError
from composeguard.settings import Probe, ProjectSettings

CONFIG = """\
name: shop
services:
  app:
    depends_on:
      cache:
        condition: service_started
        required: true
      db:
        condition: service_healthy
        required: true
    image: registry.example:5000/shop/app:latest
    networks:
      default: null
    volumes:
      - type: bind
        source: /srv/shop/uploads
        target: /srv/uploads
        bind:
          create_host_path: true
      - type: volume
        source: appdata
        target: /var/lib/app
        read_only: true
        volume: {}
      - type: volume
        target: /tmp/scratch
        volume: {}
    x-composeguard:
      probe:
        http: http://localhost:8080/health
        status: 204
      quiesce: stop
      timeout: 60
  cache:
    healthcheck:
      disable: true
    image: redis:7
    networks:
      default: null
    tmpfs:
      - /data
  db:
    healthcheck:
      test:
        - CMD
        - pg_isready
      interval: 5s
    image: postgres:16
    networks:
      default: null
    volumes:
      - type: volume
        source: pgdata
        target: /var/lib/postgresql/data
  worker:
    depends_on:
      - db
    build:
      context: /srv/shop/worker
    healthcheck:
      test:
        - NONE
networks:
  default:
    name: shop_default
volumes:
  appdata:
    name: shop_appdata
  pgdata:
    name: shop_pgdata
    driver: local
    driver_opts:
      device: /srv/pg
      o: bind
      type: none
x-composeguard:
  retention: 5
  timeout: 300
"""

FILES = ["/srv/shop/compose.yaml"]


@pytest.fixture
def project():
    return parse_project(CONFIG, Invocation.parse(["-f", "compose.yaml"]), FILES)


def test_name_files_and_services(project):
    assert project.name == "shop"
    assert project.files == FILES
    assert sorted(project.services) == ["app", "cache", "db", "worker"]
    assert project.services["app"].image == "registry.example:5000/shop/app:latest"
    assert project.services["worker"].image is None  # build only


def test_depends_on_both_forms(project):
    assert sorted(project.services["app"].depends_on) == ["cache", "db"]
    assert project.services["worker"].depends_on == ["db"]
    assert project.services["db"].depends_on == []


def test_long_form_volumes(project):
    assert project.services["app"].volumes == [
        VolumeMount(type="bind", source="/srv/shop/uploads", target="/srv/uploads"),
        VolumeMount(type="volume", source="appdata", target="/var/lib/app", read_only=True),
        VolumeMount(type="volume", source=None, target="/tmp/scratch"),  # anonymous
    ]
    assert project.services["db"].volumes == [
        VolumeMount(type="volume", source="pgdata", target="/var/lib/postgresql/data")
    ]
    assert project.services["cache"].volumes == []


def test_top_level_volumes(project):
    assert set(project.volumes) == {"appdata", "pgdata"}
    assert project.volumes["appdata"]["name"] == "shop_appdata"
    assert project.volumes["pgdata"]["driver_opts"]["device"] == "/srv/pg"


def test_healthchecks(project):
    assert project.services["db"].has_healthcheck is True
    assert project.services["cache"].has_healthcheck is False  # disable: true
    assert project.services["worker"].has_healthcheck is False  # test: [NONE]
    assert project.services["app"].has_healthcheck is False  # none in the compose file


def test_service_settings(project):
    s = project.services["app"].settings
    assert s.probe == Probe(kind="http", target="http://localhost:8080/health", status=204)
    assert s.timeout == 60.0
    assert s.quiesce == "stop"
    assert project.services["db"].settings.probe is None


def test_project_settings(project):
    assert project.settings.timeout == 300.0
    assert project.settings.retention == 5
    assert project.settings.settle == ProjectSettings().settle
    eff = project.settings.for_service(project.services["db"].settings)
    assert eff.timeout == 300.0
    assert project.settings.for_service(project.services["app"].settings).timeout == 60.0


def test_compose_args_use_the_resolved_files_and_name(project):
    assert project.compose_args(["/state/pins.applied.yaml"]) == [
        "-f", "/srv/shop/compose.yaml", "-f", "/state/pins.applied.yaml", "-p", "shop"
    ]  # fmt: skip


def test_unknown_service_setting_names_the_service_and_key():
    text = CONFIG.replace("      quiesce: stop\n", "      quiesce: stop\n      retries: 3\n")
    with pytest.raises(ConfigError) as exc:
        parse_project(text, Invocation(), FILES)
    msg = str(exc.value)
    assert "app" in msg and "'retries'" in msg


def test_unknown_project_setting_names_the_key():
    text = CONFIG.replace("  retention: 5\n", "  retention: 5\n  keep: 9\n")
    with pytest.raises(ConfigError, match="'keep'"):
        parse_project(text, Invocation(), FILES)


def test_wrong_service_value_names_the_service():
    text = CONFIG.replace("      timeout: 60\n", "      timeout: soon\n")
    with pytest.raises(ConfigError) as exc:
        parse_project(text, Invocation(), FILES)
    assert "service app" in str(exc.value) and "timeout" in str(exc.value)


def test_unknown_service_lists_known_services(project):
    with pytest.raises(ConfigError) as exc:
        project.service("nope")
    msg = str(exc.value)
    assert "nope" in msg
    assert "app, cache, db, worker" in msg
    assert project.service("db") is project.services["db"]


@pytest.mark.parametrize("text", ["", "name: x\n", "- a\n- b\n", "services: [\n"])
def test_bad_config_output_is_a_config_error(text):
    with pytest.raises(ConfigError):
        parse_project(text, Invocation(), FILES)


def test_a_service_with_an_empty_body():
    p = parse_project("name: t\nservices:\n  a:\n", Invocation(), FILES)
    svc = p.services["a"]
    assert (svc.image, svc.volumes, svc.depends_on, svc.has_healthcheck) == (None, [], [], False)
    assert p.volumes == {}


@pytest.mark.parametrize("name", ["../etc", "a/b", ".hidden", "x y", ""])
def test_service_names_that_could_escape_a_path_are_refused(name):
    import yaml

    text = yaml.safe_dump({"name": "p", "services": {name: {"image": "busybox"}}})
    with pytest.raises(ConfigError, match="invalid service name"):
        parse_project(text, Invocation(), ["/x/compose.yaml"])
