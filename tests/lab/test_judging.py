"""Step 8: judge an upgrade by what it did. A one-shot service that exits 0 has succeeded
(point 5); `up` options that mean "do not start or recreate" never stop, snapshot, roll back
or pin anything (point 7)."""

from __future__ import annotations

import pytest
import yaml

from tests.lab.labproject import FAST, STORAGE, LabProject, app_service

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="storage-agnostic: runs on the host"),
]


MIGRATION = 'echo migrated > /data/SCHEMA; test "$$APP_VERSION" != v2'  # $$: compose interpolates $


def containers(p: LabProject) -> dict[str, str]:
    return {s: p.container(s)["Id"] for s in ("app", "migrate")}


def one_shot_project(p: LabProject, **migrate: object) -> None:
    p.push("lab/app:v1", "app")
    p.push("lab/app:v1", "migrate")
    vol = p.volume("app", {"db.txt": "rows\n"})
    p.write_compose({
        "x-composeguard": FAST,
        "services": {
            "app": app_service(f"{p.repo}/app:latest", vol),
            "migrate": {"image": f"{p.repo}/migrate:latest", "volumes": [f"{vol}:/data"],
                        # a migration job: succeeds (exit 0) on every image but the bad v2
                        "entrypoint": ["sh", "-c", MIGRATION],
                        **migrate},
        },
    })
    r = p.cg("up", "-d")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("how", ["restart-no", "completed-successfully"])
def test_a_one_shot_service_that_exits_0_has_succeeded(lab_project: LabProject, how: str) -> None:
    p = lab_project
    if how == "restart-no":
        one_shot_project(p, restart="no")
    else:
        one_shot_project(p)  # no restart key: awaited by app instead
        model = yaml.safe_load((p.dir / "compose.yaml").read_text())
        model["services"]["app"]["depends_on"] = {"migrate": {"condition": "service_completed_successfully"}}
        p.write_compose({k: v for k, v in model.items() if k != "name"})
    v3 = p.push("lab/app:v3", "migrate")  # a new migration image: it runs, migrates, exits 0

    r = p.cg("up", "-d", "--pull", "always")

    assert r.returncode == 0, r.stderr
    assert "migrate: ok: completed (exit 0)" in r.stderr
    assert p.history()[-1]["outcome"] == "committed"
    assert v3 in p.running_digests("migrate")
    assert p.cg("pins", "--json").stdout.strip() == "{}"


def test_a_one_shot_service_that_fails_is_rolled_back(lab_project: LabProject) -> None:
    p = lab_project
    one_shot_project(p, restart="no")
    p.push("lab/app:v2", "migrate")  # this migration image fails (exit 1)
    r = p.cg("up", "-d", "--pull", "always")
    assert r.returncode == 3, r.stderr
    assert "migrate: FAILED: exited with code 1" in r.stderr
    assert "migrate: ok: completed (exit 0)" in r.stderr, "the old one-shot, probed again, succeeds"


@pytest.mark.parametrize("args", [("--dry-run", "up", "-d"), ("up", "-d", "--no-recreate")])
def test_options_that_do_not_recreate_change_nothing(lab_project: LabProject, args: tuple[str, ...]) -> None:
    p = lab_project
    one_shot_project(p, restart="no")
    before = containers(p)
    p.push("lab/app:v2", "app")  # a bad image: a real upgrade would roll back and pin it
    assert p.cg("pull").returncode == 0

    r = p.cg(*args)

    assert r.returncode == 0, r.stderr
    assert containers(p) == before, "no container was recreated"
    assert p.history() == [] and p.snapshots() == []
    assert p.cg("pins", "--json").stdout.strip() == "{}"


def test_no_start_is_refused_before_anything_changes(lab_project: LabProject) -> None:
    p = lab_project
    one_shot_project(p, restart="no")
    before = containers(p)
    p.push("lab/app:v3", "app")
    assert p.cg("pull").returncode == 0

    r = p.cg("up", "--no-start")

    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "--no-start" in lines[0] and "Nothing was changed" in lines[0]
    assert containers(p) == before and p.history() == []
