"""Real database engines on the Btrfs lab: PostgreSQL 15 and a WAL-mode SQLite app, both
from Debian's own packages (lab/lab.sh builds lab/postgres:15, lab/pgapp:v1|v2 and
lab/sqliteapp:v1|v2 with mmdebstrap). An upgraded app migrates the database and fails its
healthcheck while an outside client keeps writing: after the rollback the engine must start
on a consistent copy holding every write acknowledged before the upgrade began."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.lab.labproject import STORAGE, LabProject, composeguard_bin, poll_until, run, tree

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="the engine scenarios run on the host's Btrfs lab"),
]

# The failing app is unhealthy two failed 1 s checks after it gave up (its start period is 2 s)
# (lab/images/*app/Dockerfile), and the probe fails at once on "unhealthy": the timeout only
# bounds a good version, which gets 30 s while three lab tests run at a time.
SETTINGS = {"timeout": 30, "settle": 3}
PGDATA = "/var/lib/postgresql/data"
PGWAL = "/var/lib/postgresql/wal"


def sh(cid: str, *argv: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    """``docker exec`` in container ``cid``; not checked (the test looks at the exit code)."""
    return run(["docker", "exec", *(["-u", user] if user else []), cid, *argv])


def psql(p: LabProject, sql: str) -> list[str]:
    db = p.container("db")["Id"]
    r = sh(db, "psql", "-U", "postgres", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-c", sql)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


class PgClient:
    """An outside client (a container of the lab's PostgreSQL image on the project's network,
    not part of the project): every ~100 ms one INSERT of the next number into ticks, then a
    CHECKPOINT and a look at meta.schema. A number is printed only once its INSERT was
    acknowledged; the test records when each line arrived. ``busy``: also pg_switch_wal()
    before each CHECKPOINT, as a write-heavy database fills a 16 MB WAL segment: each
    checkpoint then retires the segments before its redo point."""

    SCRIPT = r"""
n=0
while :; do
    n=$((n + 1))
    if psql -X -qAt -c "INSERT INTO ticks (n) VALUES ($n)" >/dev/null 2>&1; then echo "ack $n"; fi
    if [ -n "$BUSY" ]; then psql -X -qAt -c "SELECT pg_switch_wal()" >/dev/null 2>&1; fi
    if v=$(psql -X -qAt -c CHECKPOINT -c "SELECT v FROM meta WHERE k = 'schema'" 2>/dev/null); then
        echo "schema $v"
    fi
    sleep 0.1
done
"""

    def __init__(self, p: LabProject, busy: bool = False) -> None:
        self.name = f"{p.name}-client"
        self.acks: list[int] = []
        self.schemas: set[str] = set()
        self.lock = threading.Lock()
        self.proc = subprocess.Popen(
            ["docker", "run", "--rm", "--name", self.name, "--network", f"{p.name}_default",
             "-e", "PGHOST=db", "-e", "PGUSER=postgres", "-e", "PGCONNECT_TIMEOUT=2",
             "-e", f"BUSY={'1' if busy else ''}",
             "lab/postgres:15", "bash", "-c", self.SCRIPT],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            kind, _, value = line.strip().partition(" ")
            with self.lock:
                if kind == "ack":
                    self.acks.append(int(value))
                elif kind == "schema":
                    self.schemas.add(value)

    def acked(self) -> set[int]:
        with self.lock:
            return set(self.acks)

    def __enter__(self) -> PgClient:
        return self

    def __exit__(self, *exc: object) -> None:
        run(["docker", "rm", "-f", self.name])
        self.proc.wait(timeout=30)
        self.reader.join(timeout=10)


def pg_project(
    p: LabProject, volumes: list[str], env: dict[str, str] | None = None, wait_healthy: bool = True
) -> None:
    """db and app; app waits for db to be healthy (``wait_healthy``, what PostgreSQL apps'
    compose files say) or only started."""
    after = {"db": {"condition": "service_healthy"}} if wait_healthy else ["db"]
    p.write_compose({
        "x-composeguard": SETTINGS,
        "services": {
            "db": {"image": f"{p.repo}/db:latest", "volumes": volumes, "environment": env or {}},
            "app": {"image": f"{p.repo}/app:latest", "depends_on": after},
        },
    })


def deploy_v1(p: LabProject) -> None:
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr
    assert psql(p, "SELECT v FROM meta WHERE k = 'schema'") == ["v1"]


def upgrade_pg_under_load(
    p: LabProject, cg_env: dict[str, str] | None = None, busy: bool = False
) -> tuple[set[int], PgClient, dict]:
    """With v1 deployed and the client writing: push the migrating, failing v2 app and run the
    guarded upgrade while the client keeps inserting and checkpointing. Returns the numbers
    acknowledged before the upgrade began, the client (stopped) and the transaction."""
    p.push("lab/pgapp:v2", "app")
    with PgClient(p, busy) as client:
        poll_until(lambda: len(client.acked()) >= 20, 30, "the client's first 20 acknowledged inserts")
        before = client.acked()
        env = {**p.env, **(cg_env or {})}
        r = run([composeguard_bin(), "up", "-d", "--pull", "always"], cwd=p.dir, env=env, timeout=600)
        print(f"\ncomposeguard up (exit {r.returncode}):\n{r.stderr}")
        assert r.returncode == 3, (
            f"exit {r.returncode}, expected 3 (rolled back); stderr:\n{r.stderr}\n"
            f"db log:\n{db_log(p)[-2000:]}"
        )
        txn = p.history()[-1]
        assert txn["outcome"] == "rolled-back"
        assert txn["reason"].startswith("app: ") and "unhealthy" in txn["reason"], (
            f"rolled back for another reason than v2's failing healthcheck: {txn['reason']}"
        )
        # The old version serves again, and the client's writes are acknowledged again.
        seen = max(client.acked())
        poll_until(lambda: max(client.acked()) > seen + 5, 60, "inserts acknowledged after the rollback")
    return before, client, txn


def assert_pg_consistent(p: LabProject, before: set[int], client: PgClient) -> None:
    """Schema v1 (the migration is gone), every insert acknowledged before the upgrade is
    there, and pg_amcheck finds nothing wrong in any database."""
    assert "v2" in client.schemas, "the v2 migration committed (the client saw meta.schema = v2)"
    cols = psql(p, "SELECT column_name FROM information_schema.columns "
                   "WHERE table_schema = 'public' AND table_name = 'items' ORDER BY ordinal_position")
    assert cols == ["id", "name"], "the migration's column must be gone"
    tables = psql(p, "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' "
                     "ORDER BY table_name")
    assert tables == ["items", "meta", "ticks"], "the migration's table must be gone"
    assert psql(p, "SELECT v FROM meta WHERE k = 'schema'") == ["v1"]
    assert psql(p, "SELECT count(*) FROM items") == ["2000"]
    have = {int(n) for n in psql(p, "SELECT n FROM ticks")}
    missing = sorted(before - have)
    assert not missing, (
        f"{len(missing)} of {len(before)} inserts acknowledged before the upgrade are lost: {missing[:20]}"
    )
    db = p.container("db")["Id"]
    r = sh(db, "pg_amcheck", "--all", "--heapallindexed", "--install-missing", user="postgres")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), (
        f"pg_amcheck exit {r.returncode}:\n{r.stdout}{r.stderr}"
    )


def db_log(p: LabProject) -> str:
    r = run(["docker", "logs", p.container("db")["Id"]])
    return r.stdout + r.stderr


def test_postgres_rollback_under_load(lab_project: LabProject) -> None:
    """PGDATA on one subvolume; the app's v2 migrates and fails; an outside client inserts and
    checkpoints throughout."""
    p = lab_project
    p.push("lab/postgres:15", "db")
    p.push("lab/pgapp:v1", "app")
    data = p.volume("pgdata")
    pg_project(p, [f"{data}:{PGDATA}"])
    deploy_v1(p)

    before, client, txn = upgrade_pg_under_load(p)

    assert txn["outcome"] == "rolled-back"
    assert sorted(txn["unit"]) == ["app", "db"] and list(txn["changes"]) == ["app"]
    assert [s["dataset"]["name"] for s in txn["snapshots"]] == [str(data)]
    assert_pg_consistent(p, before, client)
    print(f"\n{len(before)} acknowledged before the upgrade; db log: "
          f"{'crash recovery ran' if 'automatic recovery in progress' in db_log(p) else 'no recovery'}")


@pytest.mark.parametrize(
    ("wal_first", "gap", "busy", "wait_healthy"),
    [
        # dockerd says "unhealthy" from a pause until the next passing check: composeguard waits
        # for db to be healthy again before app's `up`, which waits on service_healthy
        pytest.param(True, 1, False, True, id="wal-first-1s-gap-healthy-dep"),
        pytest.param(False, 0, True, False, id="as-listed-busy"),
    ],
)
def test_postgres_pgdata_and_wal_on_two_subvolumes(
    lab_project: LabProject, wal_first: bool, gap: int, busy: bool, wait_healthy: bool
) -> None:
    """PGDATA and pg_wal (initdb --waldir) on two subvolumes, both volumes of db. Two Btrfs
    snapshots are not atomic together, and db (a dependency) keeps running and checkpointing
    while they are taken: the restored pair must still be one consistent cluster.
    ``wal_first``: the WAL volume is listed first (composeguard snapshots in the order of the
    volumes); ``gap``: seconds composeguard waits between the two snapshots (its test pause
    point: a slow snapshot on a busy filesystem); ``busy``: the client retires WAL segments;
    ``wait_healthy``: app's depends_on waits for db's healthcheck."""
    p = lab_project
    p.push("lab/postgres:15", "db")
    p.push("lab/pgapp:v1", "app")
    data, wal = p.volume("pgdata"), p.volume("pgwal")
    volumes = [f"{data}:{PGDATA}", f"{wal}:{PGWAL}"]
    pg_project(p, volumes[::-1] if wal_first else volumes, {"PG_WALDIR": PGWAL}, wait_healthy)
    deploy_v1(p)
    assert (data / "pg_wal").is_symlink() and str((data / "pg_wal").readlink()) == PGWAL
    assert any(f.name.startswith("0000") for f in wal.iterdir()), "WAL segments on the second subvolume"
    cg_env = {"COMPOSEGUARD_TEST_PAUSE_AT": "between-snapshots", "COMPOSEGUARD_TEST_PAUSE_SECONDS": str(gap)}

    t0 = time.monotonic()
    before, client, txn = upgrade_pg_under_load(p, cg_env if gap else None, busy)

    order = [Path(s["dataset"]["name"]).name for s in txn["snapshots"]]
    assert sorted(order) == sorted([data.name, wal.name])
    print(f"\nsnapshot order {order}; {len(before)} acknowledged before the upgrade; "
          f"upgrade and recovery {time.monotonic() - t0:.1f} s")
    st = p.container("db")["State"]
    assert st["Running"] and (st.get("Health") or {}).get("Status") == "healthy", (
        f"PostgreSQL does not run on the restored pair (snapshots taken in the order {order}):\n"
        + db_log(p)[-3000:]
    )
    assert_pg_consistent(p, before, client)


def test_sqlite_wal_rollback(lab_project: LabProject, tmp_path: Path) -> None:
    """A WAL-mode SQLite library written continuously by one long-lived connection (the -wal
    and -shm files beside it); v2 migrates the schema and fails its healthcheck."""
    p = lab_project
    p.push("lab/sqliteapp:v1", "app")
    vol = p.volume("library")
    p.write_compose({"x-composeguard": SETTINGS, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr

    def q(sql: str) -> list[str]:
        r = sh(p.container("app")["Id"], "sqlite3", "-bail", "/data/app.db", sql)
        assert r.returncode == 0, r.stderr
        return r.stdout.splitlines()

    assert q("PRAGMA journal_mode") == ["wal"]
    poll_until(lambda: int(q("SELECT count(*) FROM items")[0]) >= 40, 30, "40 rows written by v1")
    assert {"app.db-wal", "app.db-shm"} <= set(tree(vol)), "the -wal and -shm files are beside the database"
    committed = int(q("SELECT max(id) FROM items")[0])  # every row up to here is committed
    p.push("lab/sqliteapp:v2", "app")

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, f"exit {r.returncode}, expected 3 (rolled back); stderr:\n{r.stderr}"
    txn = p.history()[-1]
    assert txn["outcome"] == "rolled-back"
    pre = Path(txn["snapshots"][0]["name"])
    assert (pre / "app.db-wal").stat().st_size > 0, "the snapshot holds a -wal with frames in it"
    # The failed state kept for inspection is the migrated one (read from a copy: SQLite
    # writes -shm even to read).
    kept = tmp_path / "failed"
    kept.mkdir()
    for f in Path(txn["failed_states"][0]).glob("app.db*"):
        shutil.copy2(f, kept / f.name)
    with sqlite3.connect(kept / "app.db") as con:
        assert con.execute("SELECT v FROM meta WHERE k = 'schema'").fetchone() == ("v2",)
    con.close()

    p.wait_healthy("app", 30)
    assert q("PRAGMA integrity_check") == ["ok"]
    assert q("PRAGMA journal_mode") == ["wal"]
    assert q("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name") == ["items", "meta"]
    assert [c.split("|")[1] for c in q("PRAGMA table_info(items)")] == ["id", "name", "at"]
    assert q("SELECT v FROM meta WHERE k = 'schema'") == ["v1"]
    assert q(f"SELECT count(*) FROM items WHERE id <= {committed}") == [str(committed)], (
        "every row committed before the upgrade is there"
    )
    poll_until(lambda: int(q("SELECT max(id) FROM items")[0]) > committed + 10, 30, "v1 writing again")
