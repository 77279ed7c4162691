"""Step 8, point 9: a rollback that failed (exit 4) leaves its transaction unfinished. The next
guarded command refuses and names it; once the cause is fixed, `recover` resumes the rollback
from where it stopped and ends on the old version with the old data."""

from __future__ import annotations

import pytest

from tests.lab.labproject import FAST, STORAGE, LabProject, app_service, run, tree
from tests.lab.test_shared_dataset import up_pausing_at

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="chattr +i is the Btrfs way to make the restore fail"),
]


def test_a_failed_rollback_is_finished_by_recover(lab_project: LabProject, tmp_path) -> None:
    p = lab_project
    v1 = p.push("lab/app:v1", "app")
    vol = p.volume("app", {"db.txt": "rows\n"})
    p.write_compose({"x-composeguard": FAST, "services": {"app": app_service(f"{p.repo}/app:latest", vol)}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    before = tree(vol)
    v2 = p.push("lab/app:v2", "app")

    # While v2 is being probed, the subvolume becomes immutable: the swap of the restore fails.
    proc, err = up_pausing_at(p, "probing", lambda: run(["chattr", "+i", str(vol)], check=True), tmp_path)
    try:
        assert proc.returncode == 4, err
        assert "composeguard recover" in err.splitlines()[-1]
        txn = p.history()[-1]
        assert txn["outcome"] == "rollback-failed" and "restoring" in txn["rollback_error"]

        r = p.cg("up", "-d")
        assert r.returncode == 1, r.stderr
        assert txn["id"] in r.stderr and "recover" in r.stderr and len(r.stderr.strip().splitlines()) == 1
        assert "the rollback failed" in p.cg("history").stdout
    finally:
        run(["chattr", "-i", str(vol)], check=True)

    r = p.cg("recover")

    assert r.returncode == 0, r.stderr
    assert "resuming the rollback" in r.stderr
    txn = p.history()[-1]
    assert txn["outcome"] == "rolled-back" and txn["rollback_error"] == ""
    assert v1 in p.running_digests("app") and tree(vol) == before
    assert p.cg("up", "-d").returncode == 0, "nothing unfinished is left"
    assert v2 in p.cg("pins").stdout, "the probe had failed: v2 is quarantined"
