"""doctor's name-resolution check against real containers on a real external network: the
services of a project find each other by service name, and a service of ANOTHER project with
the same name on the same network (a classic shared-proxy-network trap) is found out."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.lab import labproject as lab
from tests.lab.labproject import LabProject

pytestmark = pytest.mark.lab

# The lab image's busybox has the nslookup applet but no link to it: add one, then run the app.
RESOLVER = ["sh", "-c", "ln -sf busybox /bin/nslookup && exec sh /entrypoint.sh"]


@pytest.fixture
def proxy_network(lab_project: LabProject) -> Iterator[str]:
    name = f"{lab_project.name}-proxy"
    lab.run(["docker", "network", "create", name], check=True)
    try:
        yield name
    finally:
        lab.run(["docker", "network", "rm", name])


def on_proxy(p: LabProject, net: str, *services: str) -> None:
    image = p.push("lab/app:v1", "app").split("@")[0] + ":latest"
    p.write_compose({
        "services": {
            s: {"image": image, "networks": ["proxy", "default"], "entrypoint": RESOLVER} for s in services
        },
        "networks": {"proxy": {"external": True, "name": net}},
    })
    r = p.compose("up", "-d", "--wait")
    assert r.returncode == 0, r.stderr


def resolution(p: LabProject) -> list[dict]:
    r = p.cg("doctor", "--json", "-v")
    assert r.returncode in (0, 6, 7), r.stderr
    return [f for f in json.loads(r.stdout)["findings"] if f["area"] == "network" and " on " in f["message"]]


@lab.same_on_zfs("name resolution does not depend on the storage")
def test_services_resolve_each_other_then_a_namesake_is_found(
    lab_project: LabProject, other_project: LabProject, proxy_network: str
) -> None:
    p, q = lab_project, other_project
    on_proxy(p, proxy_network, "web", "api")

    found = resolution(p)

    assert sorted((f["severity"], f["message"]) for f in found) == [
        ("ok", f"api resolves web on {proxy_network}"),
        ("ok", f"web resolves api on {proxy_network}"),
    ], found

    on_proxy(q, proxy_network, "api")  # another project's "api" joins the same network

    found = resolution(p)

    bad = [f for f in found if f["severity"] in ("warning", "error")]
    assert len(bad) == 1 and bad[0]["service"] == "web" and "resolves api" in bad[0]["message"], found
    assert bad[0]["fix"], found
