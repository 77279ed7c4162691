#!/bin/bash
# PostgreSQL as the official image runs it: the server runs as the postgres user, and the
# first start on an empty PGDATA runs initdb. PG_WALDIR (optional): pg_wal on another volume
# (initdb --waldir). Trust authentication on the container network: a lab, no secrets.
#   docker run lab/postgres:15                  the server
#   docker run lab/postgres:15 psql -h db ...   any other command, as given
set -euo pipefail
: "${PGDATA:=/var/lib/postgresql/data}"

if [ "${1:-postgres}" != postgres ]; then
    exec "$@"
fi
shift || true

if [ "$(id -u)" = 0 ]; then
    # The volumes are mounted owned by root: hand their roots (not their contents, which a
    # restore must find as they were) to postgres, then drop root for good.
    for d in "$PGDATA" ${PG_WALDIR:+"$PG_WALDIR"}; do
        mkdir -p "$d"
        chown postgres:postgres "$d"
        chmod 0700 "$d"
    done
    mkdir -p /run/postgresql
    chown postgres:postgres /run/postgresql
    chmod 2775 /run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups /bin/bash "$0" postgres "$@"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    initdb --pgdata="$PGDATA" ${PG_WALDIR:+--waldir="$PG_WALDIR"} --username=postgres \
        --auth=trust --encoding=UTF8 --locale=C --data-checksums
    {
        echo "listen_addresses = '*'"
        echo "unix_socket_directories = '/run/postgresql'"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all trust" >> "$PGDATA/pg_hba.conf"
fi
exec postgres -D "$PGDATA" "$@"
