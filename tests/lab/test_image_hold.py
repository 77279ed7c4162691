"""The old images a retained snapshot's rollback needs survive `docker image prune -a`, so
`rollback TXN` works with the registry no longer serving them; retention lets them go."""

from __future__ import annotations

import json
import subprocess
import urllib.request

import pytest

from composeguard.upgrade.imagehold import HOLD_LABEL
from tests.lab.labproject import FAST, REGISTRY, LabProject, app_service, run, same_on_zfs

pytestmark = pytest.mark.lab


def build_variant(p: LabProject, variant: str) -> str:
    """A healthy app image of this test's own (a label makes its ID unique), pushed as the
    project's app:latest; returns the repo digest the registry serves."""
    local = f"{p.repo}/app:{variant}"
    # a VOLUME with files in it, as postgres or nextcloud images declare: a hold must not copy
    # them into an anonymous volume of its own
    dockerfile = (f"FROM lab/app:v1\nRUN mkdir -p /data && echo {variant} > /data/seed\n"
                  f"VOLUME /data\nLABEL cgtest={p.name} variant={variant}\n")
    subprocess.run(["docker", "build", "-q", "-t", local, "-"], input=dockerfile, text=True,
                   check=True, capture_output=True)
    digest = p.push(local, "app")
    run(["docker", "image", "rm", local], check=True)  # only the registry's tag is left
    return digest


def holds(p: LabProject) -> dict[str, str]:
    """hold container name -> the project/transaction it holds images for."""
    out = run(["docker", "container", "ls", "-a", "--filter", f"label={HOLD_LABEL}",
               "--format", "{{.Names}} {{.Label \"" + HOLD_LABEL + "\"}}"], check=True).stdout
    pairs = [line.split() for line in out.splitlines()]
    return {name: owner for name, owner in pairs if owner.startswith(f"{p.name}/")}


def image_present(ref: str) -> bool:
    return run(["docker", "image", "inspect", ref]).returncode == 0


def forget_in_registry(repo_digest: str) -> None:
    """Delete the manifest from the lab registry: from now on only a local copy can serve it."""
    repo, digest = repo_digest.removeprefix(f"{REGISTRY}/").split("@")
    req = urllib.request.Request(f"http://{REGISTRY}/v2/{repo}/manifests/{digest}", method="DELETE")
    with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - the lab registry
        assert resp.status == 202


@same_on_zfs("image holds are Docker's side of a commit; the storage plays no part")
def test_old_images_survive_prune_until_retention_releases_them(lab_project: LabProject) -> None:
    p = lab_project
    a = build_variant(p, "a")
    p.write_compose({"x-composeguard": {**FAST, "retention": 1},
                     "services": {"app": app_service(f"{p.repo}/app:latest", p.volume("app"))}})
    assert p.cg("up", "-d", "--wait").returncode == 0
    b = build_variant(p, "b")
    assert p.cg("up", "-d", "--pull", "always").returncode == 0
    txn1 = p.history()[-1]["id"]
    assert set(holds(p).values()) == {f"{p.name}/{txn1}"}, "the commit holds A for `rollback`"
    [hold] = holds(p)
    mounts = json.loads(run(["docker", "container", "inspect", hold], check=True).stdout)[0]["Mounts"]
    assert [(m["Type"], m["Destination"]) for m in mounts] == [("tmpfs", "/data")], \
        f"the image's VOLUME is an empty tmpfs in the hold, not a volume with a copy: {mounts}"
    c = build_variant(p, "c")
    r = p.cg("up", "-d", "--pull", "always")
    assert r.returncode == 0, r.stderr
    txn2 = p.history()[-1]["id"]
    assert "released the snapshots of " + txn1 in r.stderr
    assert set(holds(p).values()) == {f"{p.name}/{txn2}"}, "retention let A go, B is held"

    forget_in_registry(b)
    pruned = run(["docker", "image", "prune", "-a", "-f", "--filter", f"label=cgtest={p.name}"], check=True)
    assert not image_present(a), f"prune -a removes an image nobody holds: {pruned.stdout}"
    assert image_present(b), "the image txn2's rollback needs is held"
    assert image_present(c)

    r = p.cg("rollback", txn2)
    assert r.returncode == 0, r.stderr
    assert b in p.running_digests("app"), "rolled back to B without the registry"
    assert holds(p) == {}, "B runs again: its hold is released"
    assert json.loads(p.cg("pins", "--json").stdout)["app"]["image"] == b
