"""Step 8, point 2: anonymous volumes and the VOLUMEs an image declares keep their data across
a recreate, so they are data. On the host lab, Docker's data-root is on ext4: such a volume is
unprotected and the upgrade is refused before anything changes (inside the OpenZFS guest,
where the data-root is a dataset, test_shared_dataset.py shows it restored)."""

from __future__ import annotations

import subprocess

import pytest

from tests.lab.labproject import FAST, STORAGE, LabProject, run

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(STORAGE == "zfs", reason="the host's data-root is on ext4"),
]


def image_with_volume(tag: str, base: str, tmp) -> str:
    """``base`` plus ``VOLUME /state`` (what postgres, mysql, mariadb and mongo declare)."""
    (tmp / "Dockerfile").write_text(f"FROM {base}\nVOLUME /state\n")
    subprocess.run(["docker", "build", "-q", "-t", tag, str(tmp)], check=True, capture_output=True,
                   env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/local/bin:/usr/bin:/bin"})
    return tag


@pytest.mark.parametrize("kind", ["anonymous-in-compose", "image-VOLUME"])
def test_an_anonymous_volume_is_data(lab_project: LabProject, tmp_path, kind: str) -> None:
    p = lab_project
    vol = p.volume("app", {"db.txt": "rows\n"})
    svc = {"image": f"{p.repo}/app:latest", "volumes": [f"{vol}:/data"]}
    if kind == "anonymous-in-compose":
        p.push("lab/app:v1", "app")
        svc["volumes"].append("/state")
        bad = "lab/app:v2"
    else:
        p.push(image_with_volume(f"lab/{p.name}-v1", "lab/app:v1", tmp_path), "app")
        bad = image_with_volume(f"lab/{p.name}-v2", "lab/app:v2", tmp_path)
    p.write_compose({"x-composeguard": FAST, "services": {"app": svc}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    cid = p.container("app")["Id"]
    p.push(bad, "app")

    plan = p.cg("plan").stdout
    r = p.cg("up", "-d", "--pull", "always")

    assert "NOT protected  app:/state" in plan, plan
    assert r.returncode == 2, r.stderr
    line = r.stderr.strip().splitlines()[-1]
    assert "/state" in line and "anonymous volume" in line and "Nothing was changed" in line
    assert p.container("app")["Id"] == cid and p.history() == []
    if kind == "image-VOLUME":
        run(["docker", "image", "rm", "-f", f"lab/{p.name}-v1", f"lab/{p.name}-v2"])
