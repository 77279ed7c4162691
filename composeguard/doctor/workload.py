"""What storage tuning a volume wants, from the image that uses it and where it is mounted.

Only the record size is decided here (ZFS ``recordsize``; on Btrfs ``database`` says whether
copy-on-write is worth turning off). The numbers follow the OpenZFS documentation's "Workload
Tuning" page, which says why:

- PostgreSQL reads and writes 8K pages (``BLCKSZ``): ``recordsize=8K`` on its data (WAL
  included) avoids partial-record writes.
- InnoDB (MySQL, MariaDB, Percona) reads and writes 16K pages (``innodb_page_size``): 16K.
- SQLite: 64K. SQLite's default page is 4K; the guide pairs 64K records with a 64K SQLite page
  size, which the applications do not set, so 64K is the compromise between the partial writes
  of larger records and the metadata and compression cost of 4K ones.
- Media (video, photos, music, downloads): large files written once and read sequentially,
  the guide's "sequential workloads": 1M. A file smaller than the record size is stored in one
  block of its own size, so small files lose nothing.
- Anything else: the ZFS default, 128K.

The image is recognised by its repository path alone (no registry, tag or digest), so
``postgres:16``, ``docker.io/library/postgres@sha256:…`` and
``ghcr.io/immich-app/postgres:14-vectorchord…`` are all PostgreSQL. A rule applies only to
the paths listed for it: a postgres container's ``/docker-entrypoint-initdb.d`` is general.

Applications that may keep their data in SQLite *or* in an external database are listed when
SQLite is their default (Gitea/Forgejo, Paperless-ngx, Home Assistant, the media servers and
*arr apps); with an external database their folder holds little else, and 64K does no harm
there. Nextcloud is not listed: its documentation recommends MariaDB/MySQL or PostgreSQL and
SQLite only for testing and minimal instances, and ``/var/www/html`` holds its code and the
users' files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from composeguard.compose.images import repository

K = 1 << 10
M = 1 << 20

POSTGRESQL = "postgresql"
MYSQL = "mysql"
SQLITE = "sqlite"
MEDIA = "media"
GENERAL = "general"

RECORDSIZE = {POSTGRESQL: 8 * K, MYSQL: 16 * K, SQLITE: 64 * K, MEDIA: 1 * M, GENERAL: 128 * K}
DATABASES = frozenset({POSTGRESQL, MYSQL})

REASONS = {
    POSTGRESQL: "PostgreSQL reads and writes 8K pages",
    MYSQL: "InnoDB reads and writes 16K pages",
    SQLITE: "{app} keeps a SQLite database here; OpenZFS's tuning guide advises 64K for SQLite",
    MEDIA: "large files written once and read sequentially",
    GENERAL: "no specific workload recognised: the ZFS default",
}


@dataclass(frozen=True)
class Recommendation:
    workload: str  # postgresql | mysql | sqlite | media | general
    recordsize: int  # bytes
    reason: str  # one clause, for a finding's message
    database: bool  # a database engine's own data directory


@dataclass(frozen=True)
class _Rule:
    workload: str
    app: str  # for the reason
    images: re.Pattern[str]  # matched (whole) against the repository path, e.g. "immich-app/postgres"
    targets: tuple[str, ...]  # paths in the container
    subpaths: bool  # whether a mount below one of the targets counts too


_NS = r"(?:[\w.-]+/)*"  # any namespace (the registry is already gone)


def _rule(workload: str, app: str, images: str, targets: tuple[str, ...], subpaths: bool = False) -> _Rule:
    return _Rule(workload, app, re.compile(images), targets, subpaths)


# First match wins. Database rules come first so that only their data directories get the
# database size; a mount below a database's data directory (PGDATA=/var/lib/postgresql/data/pg)
# is still its data.
RULES: tuple[_Rule, ...] = (
    _rule(
        POSTGRESQL,
        "PostgreSQL",
        # postgres, bitnami/postgresql(-repmgr), immich-app/postgres, tensorchord/vchord-postgres,
        # postgis/postgis, timescale/timescaledb(-ha), tensorchord/pgvecto-rs, pgvector/pgvector
        rf"{_NS}(?:[a-z0-9.]+[-_])*(?:postgres|postgresql|postgis|timescaledb)(?:-ha|-repmgr)?"
        rf"|{_NS}pgvecto-rs|{_NS}pgvector",
        # official image (PGDATA; postgres 18 moved it below /var/lib/postgresql), bitnami,
        # timescaledb-ha
        ("/var/lib/postgresql", "/bitnami/postgresql", "/home/postgres/pgdata"),
        subpaths=True,
    ),
    # linuxserver's MariaDB keeps its databases in /config/databases
    _rule(MYSQL, "MariaDB", rf"{_NS}linuxserver/mariadb", ("/config",), subpaths=True),
    _rule(
        MYSQL,
        "MySQL",
        rf"{_NS}(?:[a-z0-9.]+[-_])*(?:mysql|mariadb)(?:-server|-galera)?|{_NS}percona(?:-server|-xtradb-cluster)?",
        ("/var/lib/mysql", "/bitnami/mysql", "/bitnami/mariadb"),
        subpaths=True,
    ),
    # immich's uploads (UPLOAD_LOCATION): /data in current releases, /usr/src/app/upload in older ones
    _rule(MEDIA, "Immich", rf"{_NS}immich-server", ("/data", "/usr/src/app/upload"), subpaths=True),
    _rule(MEDIA, "Paperless-ngx", rf"{_NS}paperless-ngx", ("/usr/src/paperless/media",), subpaths=True),
    _rule(SQLITE, "Paperless-ngx", rf"{_NS}paperless-ngx", ("/usr/src/paperless/data",)),
    _rule(SQLITE, "Vaultwarden", rf"{_NS}(?:vaultwarden|bitwardenrs)/server", ("/data",)),
    _rule(SQLITE, "Home Assistant", rf"{_NS}home-?assistant", ("/config",)),
    _rule(SQLITE, "Uptime Kuma", rf"{_NS}uptime-kuma", ("/app/data",)),
    _rule(SQLITE, "Gitea/Forgejo", rf"{_NS}(?:gitea|forgejo)", ("/data", "/var/lib/gitea")),
    _rule(
        SQLITE,
        "this media server or *arr app",
        rf"{_NS}(?:sonarr|radarr|lidarr|readarr|prowlarr|bazarr|whisparr|jellyfin|emby|embyserver|plex"
        rf"|pms-docker|overseerr|jellyseerr|tautulli|audiobookshelf|frigate)",
        ("/config", "/app/config"),
    ),
)

# Media libraries whatever the image: a top-level folder of these names, or one below /data,
# /mnt or /srv (/media/frigate, /data/movies, /downloads, /mnt/photos).
MEDIA_DIRS = frozenset(
    {
        "media", "movies", "tv", "tvshows", "shows", "series", "music", "photos", "pictures", "videos",
        "downloads", "audiobooks", "podcasts", "recordings",
    }
)  # fmt: skip
MEDIA_PARENTS = frozenset({"data", "mnt", "srv"})


def image_path(image: str) -> str:
    """'ghcr.io/immich-app/postgres:14@sha256:…' -> 'immich-app/postgres'; 'postgres' -> 'postgres'."""
    parts = repository(image.strip()).lower().split("/")
    if len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]  # the registry
    if len(parts) > 1 and parts[0] == "library":
        parts = parts[1:]
    return "/".join(parts)


def _clean(target: str) -> str:
    return "/" + "/".join(p for p in target.split("/") if p and p != ".")


def _at(target: str, paths: tuple[str, ...], subpaths: bool) -> bool:
    return any(target == p or (subpaths and target.startswith(p + "/")) for p in paths)


def _media_dir(target: str) -> bool:
    parts = target.strip("/").split("/")
    if parts and parts[0] in MEDIA_PARENTS:
        parts = parts[1:]
    return bool(parts) and parts[0].lower() in MEDIA_DIRS


def _make(workload: str, app: str = "") -> Recommendation:
    reason = REASONS[workload].format(app=app)
    return Recommendation(workload, RECORDSIZE[workload], reason, workload in DATABASES)


def recommend(image: str | None, target: str) -> Recommendation:
    """The workload of the volume mounted at ``target`` in a container of ``image``."""
    path = image_path(image) if image else ""
    where = _clean(target)
    for rule in RULES:
        if path and rule.images.fullmatch(path) and _at(where, rule.targets, rule.subpaths):
            return _make(rule.workload, rule.app)
    if _media_dir(where):
        return _make(MEDIA)
    return _make(GENERAL)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmgtpe]?)(?:i?b)?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": K, "m": M, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def parse_size(text: str) -> int:
    """A ZFS size property in bytes: '128K', '1M', '16384' (``zfs get -p``), '1.50M', '64KiB'."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2).lower()])
