"""Step 15 end to end: the update policy against dockerd and the registry. A cooldown
(``min_age``) holds a new digest back from ``update`` (not from ``up`` by hand), ``update:
notify`` tells and installs nothing, a ``before`` command vetoes an upgrade before anything is
stopped, and the OCI labels of both images are in the history. Storage plays no part: run on
the host's Btrfs only (COMPOSEGUARD_ZFS_FULL=1 runs them in the guest too)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, LabProject, app_service, run, same_on_zfs

pytestmark = [pytest.mark.lab, same_on_zfs("the policy reads Docker and the registry, whatever the storage")]


def deploy(p: LabProject, settings: dict, service: dict | None = None) -> tuple[str, dict, Path]:
    """v1 running on a fresh volume with ``settings``; returns v1's digest, the container and
    the volume."""
    p.push("lab/app:v1", "app")
    vol = p.volume("app", {"db.txt": "rows\n"})
    svc = app_service(f"{p.repo}/app:latest", vol, **(service or {}))
    p.write_compose({"x-composeguard": {**FAST, **settings}, "services": {"app": svc}})
    r = p.cg("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr
    return p.running_digests("app")[0], p.container("app"), vol


def unchanged(p: LabProject, v1: str, before: dict) -> None:
    now = p.container("app")
    assert (now["Id"], now["State"]["StartedAt"]) == (before["Id"], before["State"]["StartedAt"])
    assert v1 in p.running_digests("app")
    assert p.snapshots() == [] and p.history() == [], "no snapshot, no transaction"


def test_a_cooldown_holds_a_new_digest_back_from_update_not_from_up(lab_project: LabProject) -> None:
    p = lab_project
    v1, before, _ = deploy(p, {"min_age": "1h"})
    v3 = p.push("lab/app:v3", "app")

    r = p.cg("update")
    assert r.returncode == 0 and r.stderr == "", r.stderr  # quiet: a digest that waits is no change
    unchanged(p, v1, before)
    (waiting,) = json.loads(p.cg("plan", "--json").stdout)["waiting"]
    assert waiting["service"] == "app" and waiting["digest"] == v3
    assert waiting["min_age_seconds"] == 3600 and waiting["installable_from"] > waiting["first_seen"]
    assert "waiting app:" in p.cg("plan").stdout
    r = p.cg("update", "--json")
    assert json.loads(r.stdout)[0]["waiting"][0]["digest"] == v3

    r = p.cg("up", "-d", "--pull", "always")  # a person asked: no cooldown
    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app")


def test_a_short_cooldown_passes_and_the_digest_is_installed(lab_project: LabProject) -> None:
    p = lab_project
    v1, before, _ = deploy(p, {"min_age": "3s"})
    v3 = p.push("lab/app:v3", "app")
    # One update sees the digest first and holds it back. (A second one to read what waits
    # raced the 3 s: with the lab tests running side by side it came after them, and installed.
    # The plain `update` that holds a digest back is the 1 h test's.)
    r = p.cg("update", "--json")
    assert r.returncode == 0, r.stderr
    unchanged(p, v1, before)
    (waiting,) = json.loads(r.stdout)[0]["waiting"]
    assert waiting["digest"] == v3
    from composeguard.upgrade.policy import parse_iso

    # the condition is the clock itself: wait until the digest is installable, then once more
    time.sleep(max(0.0, parse_iso(waiting["installable_from"]) - time.time()) + 1.0)

    r = p.cg("update")
    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app")
    assert p.history()[-1]["outcome"] == "committed"


def test_notify_only_tells_and_now_installs(lab_project: LabProject, tmp_path: Path) -> None:
    p = lab_project
    v1, before, _ = deploy(p, {"update": "notify"})
    v3 = p.push("lab/app:v3", "app")
    outbox = tmp_path / "hook.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(f"import sys\nopen({str(outbox)!r}, 'a').write(sys.stdin.read())\n")
    p.env["COMPOSEGUARD_HOOK"] = f"{sys.executable} {hook}"
    p.env["COMPOSEGUARD_PROMETHEUS_FILE"] = str(tmp_path / "composeguard.prom")

    r = p.cg("update", "--json")
    assert r.returncode == 0, r.stderr
    (result,) = json.loads(r.stdout)
    assert [a["digest"] for a in result["available"]] == [v3] and result["txn"] == ""
    unchanged(p, v1, before)
    told = [json.loads(line) for line in outbox.read_text().splitlines()]
    assert [(t["outcome"], t["exit_code"], list(t["services"])) for t in told] == [("available", 0, ["app"])]
    assert (
        f'composeguard_updates_available{{project="{p.name}"}} 1'
        in (tmp_path / "composeguard.prom").read_text()
    )
    assert p.cg("update").returncode == 0
    assert len(outbox.read_text().splitlines()) == 1, "told once per digest"
    assert "notify  app:" in p.cg("plan").stdout

    r = p.cg("update", "app", "--now")
    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app") and p.history()[-1]["outcome"] == "committed"


def test_a_before_command_vetoes_the_upgrade_before_anything_is_stopped(lab_project: LabProject) -> None:
    p = lab_project
    busy = {
        "x-composeguard": {
            "before": ["sh", "-c", "if [ -e /data/busy ]; then echo a stream is playing; exit 1; fi"]
        }
    }
    v1, before, vol = deploy(p, {}, busy)
    (vol / "busy").write_text("1\n")
    v3 = p.push("lab/app:v3", "app")

    r = p.cg("update")
    assert r.returncode == 0, r.stderr
    assert "vetoed by app's before command (exit 1: a stream is playing)" in r.stderr, r.stderr
    unchanged(p, v1, before)
    r = p.cg("up", "-d", "--pull", "always")
    assert r.returncode == 2 and "vetoed" in r.stderr, r.stderr
    unchanged(p, v1, before)

    (vol / "busy").unlink()
    r = p.cg("update")
    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app") and p.history()[-1]["outcome"] == "committed"


def test_what_changed_is_in_the_history(lab_project: LabProject) -> None:
    p = lab_project
    deploy(p, {})
    labelled = f"composeguard-lab/app-labelled:{p.name}"
    dockerfile = (
        "FROM lab/app:v3\n"
        "LABEL org.opencontainers.image.version=3.0.0 "
        "org.opencontainers.image.revision=0123abc "
        "org.opencontainers.image.source=https://github.com/example/labapp\n"
    )
    subprocess.run(
        ["docker", "build", "-q", "-t", labelled, "-"],
        input=dockerfile,
        text=True,
        check=True,
        capture_output=True,
    )
    try:
        p.push(labelled, "app")
        assert "3.0.0" in p.cg("plan").stdout
        r = p.cg("update")
        assert r.returncode == 0, r.stderr
    finally:
        run(["docker", "image", "rm", labelled], check=False)
    (txn,) = p.history()
    labels = txn["changes"]["app"]["labels"]
    assert labels["new"] == {
        "version": "3.0.0",
        "revision": "0123abc",
        "source": "https://github.com/example/labapp",
    }
    assert labels["releases"] == "https://github.com/example/labapp/releases"
    assert "-> 3.0.0, https://github.com/example/labapp/releases" in p.cg("history").stdout


def test_a_before_host_command_vetoes_every_upgrade_of_the_project(
    lab_project: LabProject, tmp_path: Path
) -> None:
    p = lab_project
    lock = tmp_path / "backup.lock"
    lock.write_text("the nightly backup runs\n")
    v1, before, _ = deploy(
        p, {"before_host": ["sh", "-c", f"if [ -e {lock} ]; then cat {lock}; exit 75; fi"]}
    )
    v3 = p.push("lab/app:v3", "app")

    r = p.cg("update", "--json")
    assert r.returncode == 0, r.stderr
    (result,) = json.loads(r.stdout)
    assert result["outcome"] == "vetoed" and "(exit 75: the nightly backup runs)" in result["message"], result
    unchanged(p, v1, before)

    lock.unlink()
    assert p.cg("update").returncode == 0
    assert v3 in p.running_digests("app")
