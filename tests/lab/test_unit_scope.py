"""Step 8, point 1: the guard protects everything the upgrade can touch. A dependency that
opted out of updates (`x-composeguard: {update: false}`, the README's nextcloud/db example) or
is left out by `up --no-deps` is still in the rollback unit when a changing service depends
on it; and compose never recreates a service the guard did not plan for."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.lab.labproject import FAST, STORAGE, LabProject, app_service, run, tree

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="storage-agnostic: runs on the host"),
]


def app_and_db(p: LabProject, db_settings: dict | None = None) -> tuple[Path, dict]:
    p.push("lab/app:v1", "app")
    p.push("lab/app:v1", "db")
    app_vol = p.volume("app", {"cache.txt": "app cache\n"})
    db_vol = p.volume("db", {"rows.txt": "precious rows\n"})
    db = app_service(f"{p.repo}/db:latest", db_vol)
    if db_settings:
        db["x-composeguard"] = db_settings
    p.write_compose({
        "x-composeguard": FAST,
        "services": {
            "db": db,
            "app": app_service(f"{p.repo}/app:latest", app_vol, depends_on=["db"],
                               environment={"MIGRATE_URL": "http://db:8080/cgi-bin/migrate"}),
        },
    })
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr
    return db_vol, tree(db_vol)


def test_update_rolls_back_an_opted_out_dependency_and_recreates_nothing_unplanned(
    lab_project: LabProject,
) -> None:
    p = lab_project
    db_vol, before = app_and_db(p, {"update": False})
    db = p.container("db")
    p.push("lab/app:v2", "app")  # migrates db's data through MIGRATE_URL, then fails its probe
    run(["docker", "tag", "lab/app:v3", f"{p.repo}/db:latest"], check=True)  # db's tag moved by hand

    r = p.cg("update")

    assert r.returncode == 3, r.stderr
    assert "rollback unit app, db" in r.stderr
    assert tree(db_vol) == before, "the opted-out db's data is back too"
    now = p.container("db")
    assert now["Id"] == db["Id"] and now["Image"] == db["Image"], "db was never recreated"


def test_up_no_deps_still_rolls_back_the_dependency(lab_project: LabProject) -> None:
    p = lab_project
    db_vol, before = app_and_db(p)
    p.push("lab/app:v2", "app")

    r = p.cg("up", "-d", "--no-deps", "--pull", "always", "app")

    assert r.returncode == 3, r.stderr
    assert tree(db_vol) == before
    assert p.container("db")["State"]["Running"]
