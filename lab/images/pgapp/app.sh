#!/bin/bash
# A client of the db service, like a media server on PostgreSQL.
#   v1  creates schema v1 if it is not there, then is healthy
#   v2  migrates to schema v2 in one transaction that COMMITS (a column added and filled,
#       a new table with an index, meta.schema = v2), then never becomes healthy: the
#       upgrade that leaves a database the old version may not read
set -u
until pg_isready -q; do sleep 0.2; done
case "${APP_VERSION}" in
    v1)
        psql -v ON_ERROR_STOP=1 -q <<'SQL' && touch /tmp/healthy || touch /tmp/failed
CREATE TABLE IF NOT EXISTS meta (k text PRIMARY KEY, v text NOT NULL);
INSERT INTO meta VALUES ('schema', 'v1') ON CONFLICT (k) DO NOTHING;
CREATE TABLE IF NOT EXISTS items (id bigserial PRIMARY KEY, name text NOT NULL);
INSERT INTO items (name) SELECT 'item ' || i FROM generate_series(1, 2000) AS i
    WHERE NOT EXISTS (SELECT 1 FROM items);
CREATE INDEX IF NOT EXISTS items_name ON items (name);
CREATE TABLE IF NOT EXISTS ticks (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
SQL
        ;;
    v2)
        psql -v ON_ERROR_STOP=1 -q <<'SQL' && echo "app v2: migrated to schema v2" >&2
BEGIN;
ALTER TABLE items ADD COLUMN rating integer NOT NULL DEFAULT 0;
UPDATE items SET rating = length(name);
CREATE TABLE playlists (id bigserial PRIMARY KEY, item_id bigint NOT NULL REFERENCES items (id));
INSERT INTO playlists (item_id) SELECT id FROM items WHERE id % 3 = 0;
CREATE INDEX playlists_item ON playlists (item_id);
UPDATE meta SET v = 'v2' WHERE k = 'schema';
COMMIT;
SQL
        echo "app v2: fatal: cannot load the new plugin" >&2
        touch /tmp/failed
        ;;
esac
trap 'exit 0' TERM INT
sleep infinity &
wait $!
