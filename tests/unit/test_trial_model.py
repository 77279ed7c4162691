"""trial_model: the compose document of the trial run, and what cannot be tried.

The models in tests/unit/data/trial/ are the `docker compose config` form, written by hand,
of the upstream compose files (each file's first lines say which and what was added):
- nextcloud.yml: github.com/nextcloud/docker
  .examples/docker-compose/with-traefik2-postgresql-redis-multi-network/nextcloud/docker-compose.yml
- immich.yml: github.com/immich-app/immich docker/docker-compose.yml + docker/hwaccel.ml.yml (cuda)
- jellyfin.yml: github.com/jellyfin/jellyfin.org docs/general/installation/_container-docker-compose.md
- homeassistant.yml: github.com/home-assistant/home-assistant.io
  source/_includes/installation/container/compose.md
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from composeguard.upgrade.trial_model import TrialModel, trial_model

DATA = Path(__file__).parent / "data" / "trial"


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((DATA / f"{name}.yml").read_text())


def one_service(name: str, binds: dict[str, str], image: str):  # noqa: ANN201 - a TrialModel
    """The trial of a project whose one service has the project's name (data/<name>.yml)."""
    return trial_model(load(name), [name], name, binds, {name: image})


NEXTCLOUD_BINDS = {
    "/tank/apps/nextcloud": "/tank/apps/nextcloud-trial",
    "/var/lib/docker/volumes/nextcloud_redis/_data": "/tank/docker-trial/nextcloud_redis/_data",
}

NEXTCLOUD_TRIAL = """\
name: nextcloud-trial
services:
  db:
    environment:
      POSTGRES_DB: nextcloud
      POSTGRES_PASSWORD: password
      POSTGRES_USER: nextcloud
    healthcheck:
      test: [CMD-SHELL, pg_isready -U nextcloud]
      interval: 10s
    image: postgres:11
    labels:
      io.composeguard.trial: nextcloud
    networks:
      default:
        aliases: [db, postgres]
    pull_policy: missing
    restart: always
    volumes:
      - type: bind
        source: /tank/apps/nextcloud-trial/db
        target: /var/lib/postgresql/data
  nextcloud:
    depends_on:
      db: {condition: service_healthy, required: true}
      redis: {condition: service_started, required: true}
    environment:
      NEXTCLOUD_TRUSTED_DOMAINS: nextcloud.mydomain.com
      POSTGRES_DB: nextcloud
      POSTGRES_HOST: db
      POSTGRES_PASSWORD: password
      POSTGRES_USER: nextcloud
      REDIS_HOST: redis
      TRUSTED_PROXIES: 172.19.0.0/16
    hostname: cloud
    image: nextcloud@sha256:1111111111111111111111111111111111111111111111111111111111111111
    labels:
      org.example.owner: ops
      traefik.enable: "false"
      io.composeguard.trial: nextcloud
    networks:
      default:
        aliases: [nextcloud]
    pull_policy: missing
    restart: always
    volumes:
      - type: bind
        source: /tank/apps/nextcloud-trial/html
        target: /var/www/html
        bind: {create_host_path: true}
      - type: bind
        source: /etc/localtime
        target: /etc/localtime
        read_only: true
        bind: {create_host_path: true}
    x-composeguard:
      probe:
        exec: [php, occ, status]
      timeout: 300
  redis:
    image: redis:latest
    labels:
      io.composeguard.trial: nextcloud
    networks:
      default:
        aliases: [redis]
    pull_policy: missing
    restart: always
    volumes:
      - type: bind
        source: /tank/docker-trial/nextcloud_redis/_data
        target: /var/lib/redis
networks:
  default:
    name: nextcloud-trial_default
    internal: true
x-composeguard:
  quiesce: stop
  retention: 5
"""


def test_nextcloud_exact_document() -> None:
    model = load("nextcloud")
    before = copy.deepcopy(model)
    trial = trial_model(
        model,
        ["db", "nextcloud", "redis"],
        "nextcloud",
        NEXTCLOUD_BINDS,
        {"nextcloud": "nextcloud@sha256:" + "1" * 64},
    )
    assert trial == TrialModel(doc=yaml.safe_load(NEXTCLOUD_TRIAL), name="nextcloud-trial", refusals=[])
    assert trial.possible
    assert model == before  # the real project's model is not touched
    # what the test above says in passing, said once more plainly:
    services = trial.doc["services"]
    assert "adminer" not in services  # only the unit
    assert all("ports" not in s and "container_name" not in s for s in services.values())
    assert list(trial.doc["networks"]) == ["default"]  # neither traefik nor nextcloud_nextcloud
    # the document round-trips through YAML as written for `docker compose -f FILE`
    assert yaml.safe_load(yaml.safe_dump(trial.doc, sort_keys=False)) == trial.doc


def test_immich_gpu_published_probe_and_uncloned_cache() -> None:
    trial = trial_model(
        load("immich"),
        ["database", "immich-machine-learning", "immich-server", "redis"],
        "immich",
        {"/srv/immich": "/srv/.trial/immich"},
        {
            "immich-server": "ghcr.io/immich-app/immich-server:v2.1.0",
            "immich-machine-learning": "ghcr.io/immich-app/immich-machine-learning:v2.1.0-cuda",
        },
    )
    assert trial.refusals == [
        "no trial: service immich-machine-learning reserves nvidia gpu devices, which the live version holds",
        "no trial: service immich-machine-learning writes to the volume immich_model-cache, "
        "which has no clone",
        "no trial: the http probe of immich-server (http://127.0.0.1:2283/api/server/ping) needs a "
        "published port, and the trial publishes none",
    ]
    assert not trial.possible
    services = trial.doc["services"]
    # what is refused is left out of the doc, so it is harmless even if run anyway
    assert services["immich-machine-learning"]["deploy"] == {"resources": {}}
    assert "volumes" not in services["immich-machine-learning"]
    assert services["database"]["volumes"][0]["source"] == "/srv/.trial/immich/postgres"
    assert services["immich-server"]["volumes"][0]["source"] == "/srv/.trial/immich/library"
    assert services["immich-server"]["image"] == "ghcr.io/immich-app/immich-server:v2.1.0"
    assert services["redis"]["image"].startswith("docker.io/valkey/valkey:8-bookworm@sha256:")


def test_immich_cache_cloned_through_volume_paths() -> None:
    """The caller knows a named volume's mountpoint from docker volume inspect."""
    model = load("immich")
    del model["services"]["immich-machine-learning"]["deploy"]
    del model["services"]["immich-server"]["x-composeguard"]
    trial = trial_model(
        model,
        ["database", "immich-machine-learning", "immich-server", "redis"],
        "immich",
        {
            "/srv/immich": "/srv/.trial/immich",
            "/srv/docker/volumes/immich_model-cache/_data": "/srv/.trial/mc",
        },
        {},
        volume_paths={"model-cache": "/srv/docker/volumes/immich_model-cache/_data"},
    )
    assert trial.refusals == []
    assert trial.doc["services"]["immich-machine-learning"]["volumes"] == [
        {"type": "bind", "source": "/srv/.trial/mc", "target": "/cache"}
    ]
    assert "volumes" not in trial.doc  # no named volume left


def test_jellyfin_host_network_and_uncloned_media() -> None:
    trial = one_service(
        "jellyfin", {"/tank/apps/jellyfin": "/tank/apps/jellyfin@trial"}, "jellyfin/jellyfin:10.11.0"
    )
    assert trial.refusals == [
        "no trial: service jellyfin shares the network of the host (network_mode: host): "
        "it cannot be isolated",
        "no trial: service jellyfin writes to /tank/media, which has no clone",
    ]
    svc = trial.doc["services"]["jellyfin"]
    assert "network_mode" not in svc
    assert svc["networks"] == {"default": {"aliases": ["jellyfin"]}}
    assert [(v["source"], v.get("read_only", False)) for v in svc["volumes"]] == [
        ("/tank/apps/jellyfin@trial/config", False),
        ("/tank/apps/jellyfin@trial/cache", False),
        ("/tank/media2", True),  # read-only: the trial reads the live library, cannot change it
        ("/usr/local/share/fonts/custom", True),
    ]
    assert svc["user"] == "1000:1000" and svc["extra_hosts"] == ["host.docker.internal=host-gateway"]


def test_home_assistant_device_and_probe_on_a_published_port() -> None:
    trial = one_service(
        "homeassistant", {"/srv/hass": "/srv/.trial/hass"}, "ghcr.io/home-assistant/home-assistant:2025.11.1"
    )
    assert trial.refusals == [
        "no trial: service homeassistant uses the device "
        "/dev/serial/by-id/usb-ITead_Sonoff_Zigbee_3.0_USB_Dongle_Plus-if00-port0, "
        "which the live version holds",
        "no trial: the tcp probe of homeassistant (192.168.1.20:8123) needs a published port, "
        "and the trial publishes none",
    ]
    svc = trial.doc["services"]["homeassistant"]
    assert "devices" not in svc and "ports" not in svc
    assert [v["source"] for v in svc["volumes"]] == ["/srv/.trial/hass/config", "/etc/localtime", "/run/dbus"]


def test_home_assistant_as_documented_privileged_on_the_host_network() -> None:
    model = load("homeassistant")
    svc = model["services"]["homeassistant"]
    for key in ("devices", "ports", "networks", "x-composeguard"):
        del svc[key]
    svc.update(privileged=True, network_mode="host")
    trial = trial_model(model, ["homeassistant"], "homeassistant", {"/srv/hass": "/srv/.trial/hass"}, {})
    assert trial.refusals == [
        "no trial: service homeassistant shares the network of the host (network_mode: host): it cannot "
        "be isolated",
        "no trial: service homeassistant is privileged: it reaches the host's devices and file systems",
    ]
    assert "privileged" not in trial.doc["services"]["homeassistant"]


# --- the rules one at a time, on a small model ------------------------------------------------


def small(**app: Any) -> dict[str, Any]:
    return {
        "name": "shop",
        "services": {
            "app": {"image": "shop/app:1", "networks": {"default": None}, **app},
            "db": {"image": "postgres:16", "networks": {"default": None}},
            "backup": {"image": "restic/restic", "networks": {"default": None}},
        },
        "networks": {"default": {"name": "shop_default"}},
        "volumes": {
            "data": {"name": "shop_data"},
            "media": {"name": "shop_media", "external": True},
        },
    }


def run(model: dict[str, Any], unit: list[str] | None = None, **kw: Any) -> TrialModel:
    binds = kw.pop("binds", {"/srv/shop": "/srv/shop-clone"})
    return trial_model(model, unit or ["app", "db"], "shop", binds, kw.pop("images", {}), **kw)


def bind(source: str, target: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"type": "bind", "source": source, "target": target or source, **kw}


def probe(**kw: str) -> dict[str, Any]:
    return {"x-composeguard": {"probe": kw}}


NEEDS_A_PORT = "needs a published port, and the trial publishes none"
HELD = "which the live version holds"
NOT_ISOLATED = "it cannot be isolated"
REFUSALS = [
    ({"pid": "host"}, "service app shares the pid namespace of the host (pid: host)"),
    ({"ipc": "host"}, "service app shares the ipc namespace of the host (ipc: host)"),
    (
        {"ipc": "container:other"},
        "service app shares the ipc namespace of the container other (ipc: container:other)",
    ),
    (
        {"network_mode": "service:backup"},
        "service app shares the network of the live service backup (network_mode: service:backup): "
        + NOT_ISOLATED,
    ),
    (
        {"network_mode": "container:vpn"},
        f"service app shares the network of the container vpn (network_mode: container:vpn): {NOT_ISOLATED}",
    ),
    (
        {"external_links": ["mosquitto:mqtt"]},
        "service app links to containers outside the project (external_links: mosquitto:mqtt)",
    ),
    ({"volumes_from": ["backup:ro"]}, "service app mounts the volumes of backup, which is not in the trial"),
    ({"volumes_from": ["container:legacy:rw"]}, "service app mounts the volumes of the container legacy"),
    ({"gpus": [{"count": -1}]}, f"service app uses GPUs (gpus:), {HELD}"),
    ({"devices": ["/dev/dri:/dev/dri:rwm"]}, f"service app uses the device /dev/dri, {HELD}"),
    ({"device_cgroup_rules": ["c 189:* rmw"]}, "service app is given host devices by device_cgroup_rules"),
    ({"volumes": [bind("/dev/bus/usb")]}, f"service app mounts the host's /dev/bus/usb, {HELD}"),
    (
        {"volumes": [bind("/var/run/docker.sock")]},
        "service app writes to /var/run/docker.sock, which has no clone",
    ),
    ({"volumes": [bind("/srv")]}, "service app writes to /srv, of which only /srv/shop has a clone"),
    (
        {"volumes": [{"type": "volume", "source": "data", "target": "/data", "volume": {}}]},
        "service app writes to the volume shop_data, which has no clone",
    ),
    (
        {"build": {"context": "/srv/shop/src"}, "image": None},
        "service app has no image to try (it is built, and no new image was given)",
    ),
    (probe(http="http://localhost/hc"), f"the http probe of app (http://localhost/hc) {NEEDS_A_PORT}"),
    (probe(tcp="[::1]:5432"), f"the tcp probe of app ([::1]:5432) {NEEDS_A_PORT}"),
    (
        probe(http="https://shop.example.com/health"),
        "the http probe of app (https://shop.example.com/health) would reach shop.example.com, not the trial",
    ),
]


@pytest.mark.parametrize(("app", "refusal"), REFUSALS)
def test_refusals(app: dict[str, Any], refusal: str) -> None:
    trial = run(small(**app))
    assert trial.refusals == [f"no trial: {refusal}"]


@pytest.mark.parametrize(
    "app",
    [
        {"network_mode": "none"},
        {"network_mode": "service:db"},  # the trial's own db: as isolated as it is
        {"pid": "service:db", "ipc": "shareable"},
        {"volumes_from": ["db:ro"]},
        {"x-composeguard": {"probe": {"exec": ["curl", "-f", "http://localhost/health"]}}},
        {"cap_add": ["NET_ADMIN"], "security_opt": ["no-new-privileges:true"], "shm_size": "268435456"},
    ],
)
def test_kept(app: dict[str, Any]) -> None:
    trial = run(small(**app))
    assert trial.refusals == []
    svc = trial.doc["services"]["app"]
    for key, value in app.items():
        assert svc[key] == value
    if "network_mode" in app:
        assert "networks" not in svc  # compose refuses both


def test_mounts() -> None:
    trial = run(
        small(
            volumes=[
                bind("/srv/shop/uploads/", "/up", bind={"selinux": "z"}),
                bind("/srv/shop", "/all", read_only=True),
                {
                    "type": "volume",
                    "source": "data",
                    "target": "/d",
                    "bind": {"selinux": "Z"},
                    "volume": {"subpath": "app"},
                },
                {"type": "volume", "source": "media", "target": "/media", "read_only": True, "volume": {}},
                {"type": "volume", "target": "/var/lib/app/tmp", "volume": {}},
                {"type": "tmpfs", "target": "/run", "tmpfs": {"size": 65536}},
                bind("/etc/timezone"),  # host config, kept even read-write
                bind("/sys/kernel/debug", read_only=True),
            ]
        ),
        binds={"/srv/shop": "/srv/shop-clone", "/srv/docker/volumes/shop_data/_data": "/srv/clones/data"},
    )  # fmt: skip
    assert trial.refusals == []
    assert trial.doc["services"]["app"]["volumes"] == [
        {"type": "bind", "source": "/srv/shop-clone/uploads", "target": "/up", "bind": {"selinux": "z"}},
        {"type": "bind", "source": "/srv/shop-clone", "target": "/all", "read_only": True},
        {"type": "bind", "source": "/srv/clones/data/app", "target": "/d", "bind": {"selinux": "Z"}},
        {"type": "volume", "source": "media", "target": "/media", "read_only": True, "volume": {}},
        {"type": "volume", "target": "/var/lib/app/tmp", "volume": {}},  # anonymous: fresh, not cloned
        {"type": "tmpfs", "target": "/run", "tmpfs": {"size": 65536}},
        bind("/etc/timezone"),
        bind("/sys/kernel/debug", read_only=True),
    ]
    # the live volume, read-only, by its real name: not an empty shop-trial_media
    assert trial.doc["volumes"] == {"media": {"name": "shop_media", "external": True}}


def test_nested_clone_wins() -> None:
    trial = run(
        small(volumes=[{"type": "bind", "source": "/srv/shop/db/pg", "target": "/pg"}]),
        binds={"/srv/shop": "/c/shop", "/srv/shop/db": "/c/db"},
    )
    assert trial.doc["services"]["app"]["volumes"][0]["source"] == "/c/db/pg"


def test_networks_aliases_links_depends_and_labels() -> None:
    model = small(
        networks={"default": None, "front": {"aliases": ["shop", "www"], "ipv4_address": "172.30.0.5"}},
        network_mode="bridge",
        links=["db:database", "backup"],
        depends_on={
            "db": {"condition": "service_healthy", "required": True, "restart": True},
            "backup": {"condition": "service_started", "required": False},
        },
        labels={
            "com.docker.compose.service": "app",
            "caddy": "shop.example.com",
            "caddy.reverse_proxy": "{{upstreams 80}}",
            "caddy_1.reverse_proxy": "{{upstreams 81}}",
            "caddyfile.note": "not caddy-docker-proxy's",
        },
        restart="unless-stopped",
        deploy={"restart_policy": {"condition": "any"}, "resources": {"limits": {"memory": "1g"}}},
        profiles=["web"],
        mac_address="02:42:ac:11:00:02",
    )
    model["networks"]["front"] = {"name": "proxy", "external": True}
    trial = run(model, images={"app": "shop/app:2"})
    assert trial.refusals == []
    app = trial.doc["services"]["app"]
    assert app["networks"] == {"default": {"aliases": ["app", "shop", "www"]}}
    assert "network_mode" not in app and "profiles" not in app and "mac_address" not in app
    assert app["links"] == ["db:database"]
    assert app["depends_on"] == {"db": {"condition": "service_healthy", "required": True, "restart": True}}
    assert app["labels"] == {"caddyfile.note": "not caddy-docker-proxy's", "io.composeguard.trial": "shop"}
    # the restart policy is the live one: the prober judges restarts as it will after the cut-over
    assert app["restart"] == "unless-stopped"
    assert app["deploy"] == {
        "restart_policy": {"condition": "any"},
        "resources": {"limits": {"memory": "1g"}},
    }
    assert app["image"] == "shop/app:2"
    assert set(trial.doc["services"]) == {"app", "db"}


def test_secrets_and_configs_used_by_the_unit_are_kept() -> None:
    model = small(secrets=[{"source": "db_password", "target": "/run/secrets/db_password"}])
    model["secrets"] = {"db_password": {"file": "/srv/shop/secrets/db_password"}, "other": {"file": "/x"}}
    trial = run(model)
    assert trial.doc["secrets"] == {"db_password": {"file": "/srv/shop/secrets/db_password"}}
    assert "configs" not in trial.doc


@pytest.mark.parametrize(
    ("unit", "images", "message"),
    [
        ([], {}, "the unit is empty"),
        (["app", "nope"], {}, "no such service in the model: nope"),
        (["app"], {"backup": "restic/restic:2"}, "images given for services outside the unit: backup"),
    ],
)
def test_caller_mistakes(unit: list[str], images: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        trial_model(small(), unit, "shop", {}, images)


def test_the_live_containers_anonymous_volumes_are_bound_from_their_clones() -> None:
    """An image's VOLUME (postgres's PGDATA when the compose file mounts nothing there) and a
    compose anonymous volume hold live data: the trial binds their clones, never a fresh one."""
    model = small(volumes=[{"type": "volume", "target": "/cache"}])
    anon = "/var/lib/docker/volumes/" + "a" * 64 + "/_data"
    pgdata = "/var/lib/docker/volumes/" + "b" * 64 + "/_data"
    trial = run(
        model,
        binds={"/var/lib/docker": "/c/docker"},
        anonymous={"app": {"/cache": anon, "/var/lib/postgresql/data": pgdata}},
    )
    assert trial.refusals == []
    vols = trial.doc["services"]["app"]["volumes"]
    assert {"type": "bind", "source": "/c/docker/volumes/" + "a" * 64 + "/_data", "target": "/cache"} in vols
    assert {
        "type": "bind",
        "source": "/c/docker/volumes/" + "b" * 64 + "/_data",
        "target": "/var/lib/postgresql/data",
    } in vols
    assert [v["target"] for v in vols].count("/cache") == 1


def test_an_anonymous_volume_without_a_clone_is_refused() -> None:
    trial = run(
        small(),
        binds={"/srv/shop": "/c/shop"},
        anonymous={"app": {"/data": "/var/lib/docker/volumes/x/_data"}},
    )
    assert trial.refusals == [
        "no trial: service app writes to /var/lib/docker/volumes/x/_data (the anonymous volume at /data), "
        "which has no clone"
    ]
