"""Step 13, points 1, 5 and 6: the services around the rollback unit, and no false refusals.

* ``worker`` (its image unchanged) depends on ``db`` and writes into it all along; ``app``'s new
  image migrates ``db`` and fails. The rollback puts ``db``'s data back: every write ``db``
  acknowledged to the worker must still be there, so the worker is stopped before the snapshot
  and started again only after the rollback.
* ``web`` serves ``app``'s folder read-only (nginx in front of Nextcloud): it is stopped and
  started with the unit, not a reason to refuse the upgrade; ``/etc/localtime`` bound
  read-write by two projects is the host's, not shared data.
* ``plan --json`` lists the neighbours with why, and each directory-level restore's method as
  proven by a probe between the exact folders the restore uses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, STORAGE, LabProject, app_service, run

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="storage-agnostic: runs on the host"),
]

# db's httpd gets a CGI that appends the query to its data and answers only once it is written.
DB_ENTRY = (
    "mkdir -p /www/cgi-bin && printf '%s\\n' '#!/bin/sh' 'echo \"$$QUERY_STRING\" >> /data/rows.txt' "
    "\"printf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\" > /www/cgi-bin/write "
    "&& chmod +x /www/cgi-bin/write && exec /bin/sh /entrypoint.sh"
)
# The worker writes row w<n> into db and logs w<n> as acknowledged once db answered.
WORKER = (
    "trap 'exit 0' TERM; n=0; while true; do n=$$((n+1)); "
    'if wget -q -O- "http://db:8080/cgi-bin/write?w$$n" >/dev/null 2>&1; '
    "then echo w$$n >> /acks/acks.txt; fi; "
    "sleep 0.1; done"
)


def acknowledged(acks: Path) -> list[str]:
    return acks.joinpath("acks.txt").read_text().split() if acks.joinpath("acks.txt").exists() else []


def wait_for_acks(acks: Path, more_than: int, timeout: float = 30) -> list[str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = acknowledged(acks)
        if len(got) > more_than:
            return got
        time.sleep(0.1)
    raise AssertionError(f"the worker acknowledged no more than {more_than} writes in {timeout}s")


def test_a_worker_writing_into_the_restored_db_loses_no_acknowledged_write(lab_project: LabProject) -> None:
    p = lab_project
    p.push("lab/app:v1", "app")
    p.push("lab/app:v1", "db")
    db_vol = p.volume("db", {"rows.txt": ""})
    acks = p.volume("acks")
    db = app_service(f"{p.repo}/db:latest", db_vol, entrypoint=["/bin/sh", "-c", DB_ENTRY])
    p.write_compose(
        {
            "x-composeguard": FAST,
            "services": {
                "db": db,
                "app": app_service(
                    f"{p.repo}/app:latest",
                    p.volume("app"),
                    depends_on=["db"],
                    environment={"MIGRATE_URL": "http://db:8080/cgi-bin/migrate"},
                ),
                "worker": {
                    "image": "lab/busybox:1",
                    "pull_policy": "never",
                    "command": ["sh", "-c", WORKER],
                    "depends_on": ["db"],
                    "volumes": [f"{acks}:/acks"],
                    "stop_grace_period": "2s",
                },
            },
        }
    )
    assert p.cg("up", "-d", "--wait").returncode == 0
    wait_for_acks(acks, 5)
    worker = p.container("worker")
    p.push("lab/app:v2", "app")  # migrates db (rewrites rows.txt), then fails its healthcheck

    # a container compose did not make, on the project's network: it cannot be stopped with it
    outsider = f"{p.name}-outsider"
    run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            outsider,
            "--network",
            f"{p.name}_default",
            "lab/busybox:1",
            "sleep",
            "1d",
        ],
        check=True,
    )
    try:
        plan = json.loads(p.cg("plan", "--json").stdout)
        doctor = p.cg("doctor", "--json")
    finally:
        run(["docker", "rm", "-f", outsider])
    assert plan["outside"] == [
        f"container {outsider} shares the network {p.name}_default with app: writes from it during an "
        f"upgrade would be rolled back"
    ], plan["outside"]
    assert any(
        outsider in f["message"] and f["severity"] == "warning" for f in json.loads(doctor.stdout)["findings"]
    ), doctor
    assert plan["unit"] == ["app", "db"]
    assert plan["neighbours"] == [{"service": "worker", "why": "depends on db (in the rollback unit)"}]
    assert "worker: depends on db" in p.cg("plan").stdout

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, r.stderr
    assert "until the upgrade is decided: worker" in r.stderr
    acked = acknowledged(acks)  # read before the rows: a row is written before its ack
    rows = set((db_vol / "rows.txt").read_text().split())
    lost = [a for a in acked if a not in rows]
    assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes are gone after the rollback"
    now = p.container("worker")
    assert now["Id"] == worker["Id"], "the worker is the same container"
    assert now["State"]["Running"] and now["State"]["StartedAt"] > worker["State"]["StartedAt"]
    n = len(acked)
    wait_for_acks(acks, n)  # and it writes into the restored db again
    assert set(acknowledged(acks)) <= set((db_vol / "rows.txt").read_text().split())


def test_a_read_only_reader_joins_the_unit_and_host_config_binds_are_not_data(
    lab_project: LabProject, other_project: LabProject
) -> None:
    p, q = lab_project, other_project
    p.push("lab/app:v1", "app")
    site = p.volume("site", {"index.html": "v1 page\n"})
    app = app_service(f"{p.repo}/app:latest", site)
    app["volumes"].append("/etc/localtime:/etc/localtime")  # read-write, as many examples have it
    web = {
        "image": "lab/busybox:1",
        "pull_policy": "never",
        "command": ["httpd", "-f", "-p", "8080", "-h", "/srv"],
        "volumes": [f"{site}:/srv:ro", "/etc/localtime:/etc/localtime"],
        "stop_grace_period": "1s",
    }
    p.write_compose({"x-composeguard": FAST, "services": {"app": app, "web": web}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    q.write_compose(
        {
            "services": {
                "clock": {
                    "image": "lab/busybox:1",
                    "pull_policy": "never",
                    "command": ["sleep", "1d"],
                    "volumes": ["/etc/localtime:/etc/localtime"],
                    "init": True,
                }
            }
        }
    )
    assert q.compose("up", "-d").returncode == 0
    clock = q.container("clock")
    p.push("lab/app:v2", "app")  # rewrites the site's files, then fails

    plan = json.loads(p.cg("plan", "--json").stdout)
    assert plan["unit"] == ["app"]
    assert plan["neighbours"] == [{"service": "web", "why": f"reads {site} (read-only), data of app"}]
    [ds] = plan["datasets"]
    assert ds["restore"] == "whole" and ds["used_by"] == [], (
        "the readers and /etc/localtime are no one else's"
    )
    assert all(p_["path"] != "/etc/localtime" for p_ in plan["services"]["app"]["protected"])

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 3, r.stderr
    assert (site / "index.html").read_text() == "v1 page\n"
    assert p.container("web")["State"]["Running"], "web runs again after the rollback"
    assert q.container("clock")["State"]["StartedAt"] == clock["State"]["StartedAt"], (
        "the other project is untouched"
    )


def test_plan_shows_the_restore_method_as_proven(lab_project: LabProject, other_project: LabProject) -> None:
    """A shared subvolume is restored by paths; the reflink between the snapshot's folder and the
    folder the restore writes is tried with a probe file at plan time, which leaves nothing."""
    p, q = lab_project, other_project
    p.push("lab/app:v1", "app")
    ds = p.volume("appdata")
    (ds / "a").mkdir()
    (ds / "b").mkdir()
    p.write_compose(
        {"x-composeguard": FAST, "services": {"app": app_service(f"{p.repo}/app:latest", ds / "a")}}
    )
    assert p.cg("up", "-d", "--wait").returncode == 0
    q.write_compose(
        {
            "services": {
                "b": {
                    "image": "lab/busybox:1",
                    "pull_policy": "never",
                    "command": ["sleep", "1d"],
                    "init": True,
                    "volumes": [f"{ds / 'b'}:/data"],
                }
            }
        }
    )
    assert q.compose("up", "-d").returncode == 0
    p.push("lab/app:v2", "app")
    entries = sorted(x.name for x in ds.iterdir())

    [d] = json.loads(p.cg("plan", "--json").stdout)["datasets"]

    assert d["restore"] == "paths" and d["method"] == "reflink"
    assert d["proven"].startswith("reflinked a probe file from "), d["proven"]
    assert sorted(x.name for x in ds.iterdir()) == entries, "the probe left nothing behind"
    assert "restore method: reflinked a probe file" in p.cg("plan").stdout
