"""The nightly job as a host runs it (Step 12): in another mount namespace, after a rollback,
for many nights, on a full state disk, and as a dry run. Real dockerd, registry and Btrfs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.labproject import FAST, LabProject, composeguard_bin, run, tree

pytestmark = pytest.mark.lab

DATA = {"db.txt": "precious data D\n"}
ROOT = Path(__file__).resolve().parents[2]


def deploy(p: LabProject, **settings: object) -> Path:
    p.push("lab/app:v1", "app")
    vol = p.subvolume("app", DATA)
    p.write_compose({"x-composeguard": {**FAST, **settings}, "services": {
        "app": {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    return vol


def bad_night(p: LabProject, night: int) -> str:
    """Push a failing image with a digest of its own (lab/app:v2 with a label per night)."""
    tag = f"lab/app:v2-night{night}"
    dockerfile = f"FROM lab/app:v2\nLABEL night={night}\n"
    subprocess.run(["docker", "build", "-q", "-t", tag, "-"], input=dockerfile, text=True, check=True,
                   capture_output=True, env={**os.environ, "DOCKER_BUILDKIT": "0"})
    return p.push(tag, "app")


def update_all(p: LabProject, *extra: str) -> subprocess.CompletedProcess[str]:
    return run([composeguard_bin(), "update", "--all", "--filter", p.name, *extra], env=p.env, cwd="/")


def test_the_mount_namespace_is_compared_with_dockerds() -> None:
    """mountns.py on the real host: the same namespace as dockerd here; inside
    `unshare --mount --propagation slave` (what a sandboxed systemd unit gets) a different one,
    named as the cause. The ZFS upgrade refused there is in tests/zfs (guest)."""
    code = (
        "from composeguard.storage.mountns import namespace_problem as p; print(repr(p('a rollback of x')))"
    )
    here = run([sys.executable, "-c", code], check=True, cwd=ROOT)
    assert here.stdout.strip() == "''"
    boxed = run(["unshare", "--mount", "--propagation", "slave", sys.executable, "-c", code],
                check=True, cwd=ROOT)
    assert "not in dockerd's mount namespace" in boxed.stdout
    assert "unshare --mount" in boxed.stdout


def test_update_all_tries_a_pinned_service_again_when_a_new_digest_appears(lab_project: LabProject) -> None:
    """After a rollback the container was created with composeguard's pin overlay: update --all
    must not pass it back as a compose file, or the new good digest is never seen."""
    p = lab_project
    vol = deploy(p)
    p.push("lab/app:v2", "app")
    assert update_all(p).returncode == 3
    v3 = p.push("lab/app:v3", "app")

    r = update_all(p)

    assert r.returncode == 0, r.stderr
    assert v3 in p.running_digests("app"), r.stderr
    assert p.history()[-1]["outcome"] == "committed"
    assert p.cg("pins").stdout.startswith("no pins")
    assert not (p.state / "projects" / p.name / "pins.applied.yaml").exists(), "no stale overlay"
    assert (vol / "db.txt").read_text() == DATA["db.txt"]


def test_five_bad_nights_keep_three_rollbacks(lab_project: LabProject) -> None:
    """Five nights, five new bad digests, five rollbacks: only the last three keep their
    pre-upgrade snapshot and failed state; history says which were released."""
    p = lab_project
    vol = deploy(p)
    for night in range(5):
        bad_night(p, night)
        r = update_all(p)
        assert r.returncode == 3, r.stderr
    rolled = [j for j in p.history() if j["outcome"] == "rolled-back"]
    assert len(rolled) == 5
    assert [j["snapshots_released"] for j in rolled] == [True, True, False, False, False]
    assert len(p.snapshots()) == 3
    for j in rolled:
        for f in j["failed_states"]:
            assert Path(f).exists() != j["snapshots_released"], f
    assert [j["seq"] for j in p.history()] == sorted(j["seq"] for j in p.history())
    text = p.cg("history").stdout
    assert text.count("failed state (released)") == 2, text
    assert (vol / "db.txt").read_text() == DATA["db.txt"]


def test_a_full_state_disk_after_the_snapshots_still_ends_on_the_old_version(
    lab_project: LabProject, tmp_path: Path
) -> None:
    """The state dir is a small tmpfs; while the upgrade waits at 'snapshotted' it is filled to
    the last byte. The journal writes that follow fail with ENOSPC: the reserve composeguard
    keeps there is freed, and the rollback ends on the old version as usual (exit 3)."""
    p = lab_project
    state = tmp_path / "small-state"
    state.mkdir()
    run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(state)], check=True)
    try:
        p.state = state
        p.env = {**p.env, "COMPOSEGUARD_STATE_DIR": str(state)}
        vol = deploy(p)
        before = tree(vol)
        v1 = p.running_digests("app")[0]
        p.push("lab/app:v2", "app")
        marker = tmp_path / "paused"
        env = {**p.env, "COMPOSEGUARD_TEST_PAUSE_AT": "snapshotted",
               "COMPOSEGUARD_TEST_PAUSE_FILE": str(marker), "COMPOSEGUARD_TEST_PAUSE_SECONDS": "8"}
        proc = subprocess.Popen([composeguard_bin(), "update"], cwd=p.dir, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        run(["timeout", "300", "sh", "-c", f"until [ -s {marker} ]; do sleep 0.2; done"], check=True)
        fill = subprocess.run(["dd", "if=/dev/zero", f"of={state}/filler", "bs=64k"], capture_output=True)
        assert b"No space left" in fill.stderr
        out, err = proc.communicate(timeout=600)

        assert proc.returncode == 3, err
        assert "using the reserve" in err
        assert v1 in p.running_digests("app")
        assert tree(vol) == before
        assert p.history()[-1]["outcome"] == "rolled-back"
    finally:
        (state / "filler").unlink(missing_ok=True)
        p.destroy()
        run(["umount", "-l", str(state)])


def test_a_global_dry_run_in_any_spelling_changes_nothing(lab_project: LabProject) -> None:
    p = lab_project
    vol = deploy(p)
    before = tree(vol)
    v1 = p.running_digests("app")[0]
    p.push("lab/app:v2", "app")
    for spelling in ("--dry-run", "--dry-run=true", "--dry-run=1", "--dry-run=True"):
        for command in (["up", "-d", "--pull", "always"], ["update"]):
            r = p.cg(spelling, *command)
            assert r.returncode == 0, (spelling, command, r.stderr)
            assert "DRY-RUN" in r.stdout + r.stderr, (spelling, command)
        r = run([composeguard_bin(), spelling, "update", "--all", "--filter", p.name], env=p.env, cwd="/")
        assert r.returncode == 0 and "DRY-RUN" in r.stdout + r.stderr, (spelling, r.stderr)
    assert p.history() == []
    assert p.snapshots() == []
    assert v1 in p.running_digests("app")
    assert tree(vol) == before
