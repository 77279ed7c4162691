#!/bin/bash
# A media server's library in SQLite, WAL mode, written all the time by one long-lived
# connection (so the -wal and -shm files stay beside the database, with committed rows that
# live only in the -wal until a checkpoint).
#   v1  creates schema v1 if missing, is healthy, inserts a row into items every 50 ms
#   v2  migrates to schema v2 (a column added and filled, a new table, meta.schema = v2) in one
#       committed transaction, then never becomes healthy
# Stopped (SIGTERM), the writer is killed where it is: nothing checkpoints the -wal.
set -u
case "${APP_VERSION}" in
    v1)
        sqlite3 -bail "$DB" <<'SQL' || exit 1
PRAGMA journal_mode = WAL;
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', 'v1');
CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS items_name ON items (name);
SQL
        touch /tmp/healthy
        writer() {
            echo ".timeout 5000"
            echo "PRAGMA journal_mode = WAL;"
            local i=0
            while :; do
                i=$((i + 1))
                echo "INSERT INTO items (name, at) VALUES ('item $HOSTNAME $i', strftime('%Y-%m-%d %H:%M:%f', 'now'));"
                sleep 0.05
            done
        }
        writer | sqlite3 -bail "$DB" >/dev/null &
        ;;
    v2)
        sqlite3 -bail "$DB" <<'SQL' && echo "app v2: migrated to schema v2" >&2
BEGIN;
ALTER TABLE items ADD COLUMN rating INTEGER NOT NULL DEFAULT 0;
UPDATE items SET rating = length(name);
CREATE TABLE playlists (id INTEGER PRIMARY KEY, item_id INTEGER NOT NULL REFERENCES items (id));
INSERT INTO playlists (item_id) SELECT id FROM items WHERE id % 3 = 0;
UPDATE meta SET v = 'v2' WHERE k = 'schema';
COMMIT;
SQL
        echo "app v2: fatal: cannot load the new plugin" >&2
        sleep infinity &
        ;;
esac
# PID 1 ending takes every other process of the container with it (SIGKILL).
trap 'exit 0' TERM INT
wait
