"""doctor/workload.py: which record size a volume wants, from its image and its container path.

Besides the hand-written cases, the volumes of real compose files (tests/unit/data/doctor/*:
immich, paperless-ngx, linuxserver's jellyfin and mariadb, frigate, gitea, nextcloud, each
normalised by ``docker compose config``) are checked against what their projects document.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from composeguard.compose.invocation import Invocation
from composeguard.compose.project import Project, parse_project
from composeguard.doctor.workload import RECORDSIZE, image_path, parse_size, recommend
from composeguard.report import size_text

DATA = Path(__file__).parent / "data" / "doctor"
K, M = 1024, 1024 * 1024
DIGEST = "sha256:" + "3" * 64


def load(name: str) -> Project:
    path = DATA / name / "config.yml"
    return parse_project(path.read_text(), Invocation(), [str(path)])


def workloads(project: Project) -> dict[tuple[str, str], str]:
    return {
        (s, v.target): recommend(svc.image, v.target).workload
        for s, svc in project.services.items()
        for v in svc.volumes
    }


# --- image references ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "path"),
    [
        ("postgres", "postgres"),
        ("postgres:16", "postgres"),
        ("docker.io/library/postgres:16-alpine", "postgres"),
        (f"docker.io/library/postgres@{DIGEST}", "postgres"),
        (f"ghcr.io/immich-app/postgres:14-vectorchord0.4.3-pgvectors0.2.0@{DIGEST}", "immich-app/postgres"),
        ("registry.example:5000/library/postgres:15", "postgres"),
        ("localhost/team/app:1", "team/app"),
        ("Tensorchord/PGVecto-RS:pg14-v0.2.0", "tensorchord/pgvecto-rs"),
        ("codeberg.org/forgejo/forgejo:9", "forgejo/forgejo"),
    ],
)
def test_image_path_drops_registry_library_tag_and_digest(ref, path):
    assert image_path(ref) == path


# --- databases: only their data directory ---------------------------------------------------


def table(text: str) -> list[tuple[str, str]]:
    """Rows of "image target" (a ``#`` starts a comment)."""
    rows = [line.split("#", 1)[0].split() for line in text.strip().splitlines()]
    return [(r[0], r[1]) for r in rows if r]


POSTGRES_DATA = table(f"""
    postgres:16                                                              /var/lib/postgresql/data
    # a trailing slash is the same path
    postgres                                                                 /var/lib/postgresql/data/
    docker.io/library/postgres@{DIGEST}                                      /var/lib/postgresql/data
    # 18 moved PGDATA below the volume
    postgres:18                                                              /var/lib/postgresql
    # PGDATA below the mount
    postgres:16                                                              /var/lib/postgresql/data/pgdata
    ghcr.io/immich-app/postgres:14-vectorchord0.4.3-pgvectors0.2.0@{DIGEST}  /var/lib/postgresql/data
    tensorchord/pgvecto-rs:pg14-v0.2.0                                       /var/lib/postgresql/data
    tensorchord/vchord-postgres:pg17-v0.3.0                                  /var/lib/postgresql/data
    pgvector/pgvector:pg16                                                   /var/lib/postgresql/data
    postgis/postgis:16-3.4                                                   /var/lib/postgresql/data
    timescale/timescaledb:latest-pg16                                        /var/lib/postgresql/data
    timescale/timescaledb-ha:pg16                                            /home/postgres/pgdata
    bitnami/postgresql:16                                                    /bitnami/postgresql
    docker.io/bitnami/postgresql-repmgr:16                                   /bitnami/postgresql
""")


@pytest.mark.parametrize(("image", "target"), POSTGRES_DATA)
def test_postgresql_data_directory_wants_8k(image, target):
    rec = recommend(image, target)
    assert (rec.workload, rec.recordsize, rec.database) == ("postgresql", 8 * K, True)
    assert "8K pages" in rec.reason


MYSQL_DATA = table("""
    mysql:8                             /var/lib/mysql
    mysql/mysql-server:8.0              /var/lib/mysql
    mariadb                             /var/lib/mysql
    docker.io/library/mariadb:11        /var/lib/mysql
    percona:8                           /var/lib/mysql
    percona/percona-server:8.0          /var/lib/mysql
    bitnami/mariadb:11                  /bitnami/mariadb
    bitnami/mysql:8.4                   /bitnami/mysql
    yobasystems/alpine-mariadb          /var/lib/mysql
    lscr.io/linuxserver/mariadb:latest  /config
    ghcr.io/linuxserver/mariadb         /config/databases
""")


@pytest.mark.parametrize(("image", "target"), MYSQL_DATA)
def test_innodb_data_directory_wants_16k(image, target):
    rec = recommend(image, target)
    assert (rec.workload, rec.recordsize, rec.database) == ("mysql", 16 * K, True)
    assert "16K pages" in rec.reason


@pytest.mark.parametrize(
    ("image", "target"),
    [
        ("postgres:16", "/docker-entrypoint-initdb.d"),  # init scripts, not data
        ("postgres:16", "/etc/postgresql/postgresql.conf"),
        ("postgres:16", "/var/run/postgresql"),
        ("postgres:16", "/var/lib/postgresql-backups"),  # a sibling, not below the data dir
        ("postgres:11-alpine", "/data"),  # not where postgres writes (quadeare/wiki's mistake)
        ("mariadb:10", "/var/lib/mariadb/data"),  # not MariaDB's datadir (paperless-ngx's old file)
        ("mariadb:11", "/docker-entrypoint-initdb.d"),
        ("mariadb:11", "/config"),  # only linuxserver's image keeps its databases in /config
        ("prometheuscommunity/postgres-exporter", "/var/lib/postgresql/data"),  # not a database
        ("prodrigestivill/postgres-backup-local", "/var/lib/postgresql/data"),
        ("dpage/pgadmin4", "/var/lib/pgadmin"),
        ("prom/mysqld-exporter", "/var/lib/mysql"),
        (None, "/var/lib/postgresql/data"),  # no image (build only): the path alone says nothing
    ],
)
def test_other_paths_of_database_images_and_lookalikes_are_general(image, target):
    rec = recommend(image, target)
    assert (rec.workload, rec.recordsize, rec.database) == ("general", 128 * K, False)


# --- SQLite-backed applications ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "target", "app"),
    [
        ("vaultwarden/server:latest", "/data", "Vaultwarden"),
        ("docker.io/bitwardenrs/server", "/data", "Vaultwarden"),
        ("ghcr.io/home-assistant/home-assistant:stable", "/config", "Home Assistant"),
        ("homeassistant/home-assistant", "/config", "Home Assistant"),
        ("lscr.io/linuxserver/homeassistant", "/config", "Home Assistant"),
        ("louislam/uptime-kuma:1", "/app/data", "Uptime Kuma"),
        ("gitea/gitea:1.21", "/data", "Gitea"),
        ("gitea/gitea:1.21-rootless", "/var/lib/gitea", "Gitea"),
        ("codeberg.org/forgejo/forgejo:9", "/data", "Forgejo"),
        ("lscr.io/linuxserver/sonarr:latest", "/config", "media server"),
        ("ghcr.io/hotio/radarr", "/config", "media server"),
        ("jellyfin/jellyfin", "/config", "media server"),
        ("plexinc/pms-docker", "/config", "media server"),
        ("emby/embyserver", "/config", "media server"),
        ("fallenbagel/jellyseerr", "/app/config", "media server"),
        ("ghcr.io/blakeblackshear/frigate:stable", "/config", "media server"),
        ("ghcr.io/paperless-ngx/paperless-ngx:latest", "/usr/src/paperless/data", "Paperless-ngx"),
    ],
)
def test_sqlite_apps_want_64k(image, target, app):
    rec = recommend(image, target)
    assert (rec.workload, rec.recordsize, rec.database) == ("sqlite", 64 * K, False)
    assert app in rec.reason and "SQLite" in rec.reason


@pytest.mark.parametrize(
    ("image", "target"),
    [
        ("gitea/gitea:1.21", "/data/git/.ssh"),  # only the folder itself, not what is mounted below
        ("vaultwarden/server", "/config"),  # the app's data folder, not just any
        ("nextcloud:apache", "/var/www/html"),  # code and user files; its docs want MariaDB/PostgreSQL
        ("redis:7", "/data"),
        ("ghcr.io/immich-app/immich-machine-learning:release", "/cache"),
    ],
)
def test_other_app_paths_are_general(image, target):
    assert recommend(image, target).workload == "general"


# --- media ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "target"),
    [
        ("ghcr.io/immich-app/immich-server:release", "/data"),  # immich's UPLOAD_LOCATION today
        ("ghcr.io/immich-app/immich-server:v1.106.4", "/usr/src/app/upload"),  # and before
        ("ghcr.io/immich-app/immich-server:release", "/data/library"),
        ("ghcr.io/paperless-ngx/paperless-ngx:latest", "/usr/src/paperless/media"),
        ("lscr.io/linuxserver/jellyfin", "/data/tvshows"),
        ("lscr.io/linuxserver/jellyfin", "/data/movies"),
        ("lscr.io/linuxserver/sonarr", "/tv"),
        ("lscr.io/linuxserver/sonarr", "/downloads"),
        ("plexinc/pms-docker", "/data/media"),
        ("ghcr.io/blakeblackshear/frigate:stable", "/media/frigate"),
        ("anything/else", "/music"),
        ("anything/else", "/photos"),
        ("anything/else", "/mnt/Movies"),
        (None, "/media"),
    ],
)
def test_media_wants_1m(image, target):
    rec = recommend(image, target)
    assert (rec.workload, rec.recordsize, rec.database) == ("media", 1 * M, False)


@pytest.mark.parametrize("target", ["/data", "/config", "/srv/app", "/var/lib/media", "/tvheadend", "/"])
def test_unknown_image_elsewhere_is_the_zfs_default(target):
    rec = recommend("example/unknown:1", target)
    assert (rec.workload, rec.recordsize, rec.database) == ("general", 128 * K, False)
    assert "default" in rec.reason


def test_every_record_size_is_one_zfs_can_set_and_round_trips():
    for workload, size in RECORDSIZE.items():
        assert size & (size - 1) == 0 and 512 <= size <= 16 * M, workload
        assert parse_size(size_text(size)) == size


# --- parse_size ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("128K", 128 * K),
        ("1M", M),
        ("16384", 16384),  # zfs get -p
        ("8k", 8 * K),
        (" 64K\n", 64 * K),
        ("1.50M", 1536 * K),  # zfs prints fractions for sizes that are not whole units
        ("64KiB", 64 * K),
        ("1G", 1 << 30),
        ("512B", 512),
    ],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "-", "none", "K", "12Q", "1 2K", "-128K"])
def test_parse_size_refuses_what_is_not_a_size(text):
    with pytest.raises(ValueError):
        parse_size(text)


# --- real compose files ---------------------------------------------------------------------


def test_immich_database_8k_uploads_1m():
    got = workloads(load("immich"))
    assert got[("database", "/var/lib/postgresql/data")] == "postgresql"
    assert got[("immich-server", "/data")] == "media"
    assert got[("immich-server", "/etc/localtime")] == "general"
    assert got[("immich-machine-learning", "/cache")] == "general"
    db = load("immich").services["database"]
    rec = recommend(db.image, db.volumes[0].target)
    assert (rec.recordsize, rec.database) == (8 * K, True)


def test_paperless_postgres_sqlite_data_and_media():
    assert workloads(load("paperless-postgres")) == {
        ("broker", "/data"): "general",  # redis
        ("db", "/var/lib/postgresql/data"): "postgresql",
        ("webserver", "/usr/src/paperless/data"): "sqlite",
        ("webserver", "/usr/src/paperless/media"): "media",
        ("webserver", "/usr/src/paperless/export"): "general",
        ("webserver", "/usr/src/paperless/consume"): "general",
    }


def test_paperless_old_mariadb_file_mounts_no_data_directory():
    # that file mounted dbdata at /var/lib/mariadb/data: MariaDB never writes there
    assert workloads(load("paperless-mariadb-old"))[("db", "/var/lib/mariadb/data")] == "general"


def test_linuxserver_jellyfin_and_mariadb():
    assert workloads(load("jellyfin-mariadb")) == {
        ("jellyfin", "/config"): "sqlite",
        ("jellyfin", "/data/tvshows"): "media",
        ("jellyfin", "/data/movies"): "media",
        ("mariadb", "/config"): "mysql",
    }


def test_frigate_config_and_recordings():
    got = workloads(load("frigate"))
    assert got[("frigate", "/config")] == "sqlite"  # frigate's docs: config file and SQLite database
    assert got[("frigate", "/media/frigate")] == "media"  # clips, recordings, exports


def test_gitea_data_but_not_the_ssh_bind_below_it():
    got = workloads(load("gitea"))
    assert got[("server", "/data")] == "sqlite"
    assert got[("server", "/data/git/.ssh")] == "general"


def test_nextcloud_examples():
    got = workloads(load("nextcloud-traefik"))
    assert got[("db", "/var/lib/postgresql/data")] == "postgresql"  # postgres:11
    assert got[("nextcloud", "/var/www/html")] == "general"
    assert got[("redis", "/var/lib/redis")] == "general"
    assert workloads(load("nextcloud-nginx-proxy"))[("db", "/var/lib/postgresql/data")] == "postgresql"


def test_postgres_mounted_elsewhere_gets_no_database_size():
    # quadeare/wiki's example mounts postgres:11-alpine's volume at /data
    assert workloads(load("quadeare"))[("db", "/data")] == "general"
