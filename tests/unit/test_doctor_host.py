"""doctor/host.py: networks, GPUs and CPU pinning, on faked host facts and a faked runner.

The projects are real compose files where the check is about them (tests/unit/data/doctor/*,
normalised by ``docker compose config``: immich with its CUDA override, the nextcloud and
traefik examples, faster-whisper-server's CDI file, ...); the rest are small configs in the
shape ``docker compose config`` prints.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from composeguard.compose.docker import DaemonUnreachable
from composeguard.compose.invocation import Invocation
from composeguard.compose.project import Project, parse_project
from composeguard.doctor import host, networks
from composeguard.doctor.command import check_host
from composeguard.doctor.cpus import check_cpus
from composeguard.doctor.findings import EXIT_ERRORS, Finding, exit_code
from composeguard.doctor.gpus import check_gpus
from composeguard.doctor.host import HostFacts, format_cpuset, gpu_requests, parse_cpuset, read_cdi_specs
from composeguard.doctor.networks import (
    check_name_resolution,
    check_networks,
    proxy_networks,
    resolved_addresses,
)
from composeguard.errors import CommandError

DATA = Path(__file__).parent / "data" / "doctor"
BARE = HostFacts(runtimes=frozenset({"runc", "io.containerd.runc.v2"}), online_cpus=frozenset({0, 1}))
DEFAULT_NETS = frozenset({"bridge", "host", "none"})


def load(name: str) -> Project:
    path = DATA / name / "config.yml"
    return parse_project(path.read_text(), Invocation(), [str(path)])


def config(text: str) -> Project:
    return parse_project(text, Invocation(), ["/srv/p/compose.yaml"])


def pick(findings: list[Finding], **want: str) -> list[Finding]:
    return [f for f in findings if all(getattr(f, k) == v for k, v in want.items())]


def with_facts(**changes) -> HostFacts:
    return HostFacts(**{**BARE.__dict__, **changes})


# --- networks -------------------------------------------------------------------------------


def test_missing_external_traefik_network_is_an_error_with_the_create_command():
    # nextcloud's traefik example: `networks: default: external: name: traefik` (the old form)
    found = check_networks(load("nextcloud-traefik"), with_facts(networks=DEFAULT_NETS))
    [err] = pick(found, severity="error")
    assert (err.service, err.area) == ("", "network")
    assert "traefik" in err.message and "nextcloud" in err.message
    assert err.fix == "docker network create traefik"


def test_existing_external_network_is_ok():
    found = check_networks(load("nextcloud-traefik"), with_facts(networks=DEFAULT_NETS | {"traefik"}))
    assert pick(found, severity="error") == []
    assert [f.message for f in pick(found, severity="ok")] == ["external network traefik exists"]


def test_network_ids_count_as_existing():
    facts = with_facts(networks=frozenset({"3f1c0ffee", "bridge"}))
    project = config(
        "name: p\nservices:\n  a:\n    image: x\n    networks:\n      n: null\n"
        "networks:\n  n:\n    name: 3f1c0ffee\n    external: true\n"
    )
    assert pick(check_networks(project, facts), severity="error") == []


def test_the_proxy_itself_may_publish_ports():
    # traefik's own stack on the external network "web": missing network, but no port hint
    found = check_networks(load("traefik-web"), with_facts(networks=DEFAULT_NETS))
    assert [(f.severity, f.fix) for f in found] == [("error", "docker network create web")]


def test_service_publishing_ports_on_the_proxy_network_gets_a_hint():
    # quadeare/wiki: app is routed by traefik labels on the external network traefik and also
    # publishes 80:3000 and 8080:4000
    found = check_networks(load("quadeare"), with_facts(networks=DEFAULT_NETS | {"traefik"}))
    [hint] = pick(found, severity="hint")
    assert (hint.service, hint.area) == ("app", "network")
    assert "80:3000" in hint.message and "8080:4000" in hint.message and "traefik" in hint.message
    assert "app:3000" in hint.message  # how the proxy reaches it
    assert "127.0.0.1" in hint.fix
    assert pick(found, service="db") == []


def test_port_hint_and_network_are_limited_to_the_selected_services():
    found = check_networks(load("quadeare"), with_facts(networks=DEFAULT_NETS), services=["db"])
    assert found == []  # db publishes nothing and is not on the external network
    found = check_networks(load("quadeare"), with_facts(networks=DEFAULT_NETS), services=["app"])
    assert {f.severity for f in found} == {"error", "hint"}


def test_locally_built_proxy_is_recognised_and_not_hinted():
    # nextcloud's nginx-proxy example builds its proxy (no image): it publishes 80/443 and
    # mounts the docker socket; the app is on its network without ports
    project = load("nextcloud-nginx-proxy")
    assert "proxy-tier" in proxy_networks(project)
    assert check_networks(project, with_facts(networks=DEFAULT_NETS)) == []


LOOPBACK_APP = """\
name: p
services:
  app:
    image: nextcloud:apache
    labels:
      traefik.enable: "true"
    networks:
      proxy: null
    ports:
      - mode: ingress
        host_ip: {ip}
        target: 80
        published: "8080"
        protocol: tcp
networks:
  proxy:
    name: proxy
    external: true
"""


def test_loopback_ports_do_not_bypass_the_proxy():
    facts = with_facts(networks=DEFAULT_NETS | {"proxy"})
    assert pick(check_networks(config(LOOPBACK_APP.format(ip="127.0.0.1")), facts), severity="hint") == []
    [hint] = pick(check_networks(config(LOOPBACK_APP.format(ip="0.0.0.0")), facts), severity="hint")
    assert "0.0.0.0:8080:80" in hint.message


def test_external_network_without_a_proxy_is_not_a_proxy_network():
    text = LOOPBACK_APP.format(ip="0.0.0.0").replace('    labels:\n      traefik.enable: "true"\n', "")
    text = text.replace("proxy", "shareddb")
    assert proxy_networks(config(text)) == {}


def test_network_list_unknown_is_a_hint_not_an_error():
    found = check_networks(load("traefik-web"), with_facts(networks=None))
    assert [f.severity for f in found] == ["hint"]


# --- name resolution ----------------------------------------------------------------------------

PROXY_STACK = """\
name: p
services:
  traefik:
    image: traefik:v3
    networks:
      edge: null
  app:
    image: example/app
    networks:
      edge: null
  api:
    image: example/api
    networks:
      edge: null
      default: null
  worker:
    image: example/worker
    networks:
      default: null
networks:
  default:
    name: p_default
  edge:
    name: proxy
    external: true
"""


def container(service: str, ips: dict[str, str], running: bool = True, oneoff: bool = False) -> dict:
    labels = {"com.docker.compose.service": service, "com.docker.compose.project": "p"}
    if oneoff:
        labels["com.docker.compose.oneoff"] = "True"
    return {
        "Id": f"id-{service}",
        "Name": f"/p-{service}-1",
        "Config": {"Labels": labels},
        "State": {"Running": running},
        "NetworkSettings": {"Networks": {n: {"IPAddress": ip} for n, ip in ips.items()}},
    }


RUNNING = [
    container("traefik", {"proxy": "172.20.0.2"}),
    container("app", {"proxy": "172.20.0.3"}),
    container("api", {"proxy": "172.20.0.4", "p_default": "172.21.0.2"}),
    container("worker", {"p_default": "172.21.0.3"}),
]


class FakeRunner:
    """Answers ``docker exec C TOOL… NAME`` from a table; records every call."""

    def __init__(self, answers: dict[str, str] | None = None, missing: tuple[str, ...] = (), rc: int = 0):
        self.answers = answers or {"app": "172.20.0.3", "api": "172.20.0.4", "traefik": "172.20.0.2"}
        self.missing = missing
        self.rc = rc
        self.calls: list[list[str]] = []

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        assert argv[1:2] == ["exec"]
        tool, name = argv[3], argv[-1]
        if tool in self.missing:
            err = f'OCI runtime exec failed: exec: "{tool}": executable file not found in $PATH'
            return subprocess.CompletedProcess(argv, 127, "", err)
        ip = self.answers.get(name, "")
        if not ip:
            return subprocess.CompletedProcess(argv, 2 if tool == "getent" else 1, "", "")
        if tool == "getent":
            out = "".join(f"{a}      {name}\n" for a in ip.split(","))
        else:
            out = "Server:\t\t127.0.0.11\nAddress:\t127.0.0.11:53\n\nNon-authoritative answer:\n"
            out += "".join(f"Name:\t{name}\nAddress: {a}\n" for a in ip.split(","))
        return subprocess.CompletedProcess(argv, self.rc, out, "")


def test_from_the_proxy_to_each_service_on_the_external_network():
    run = FakeRunner()
    found = check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run)
    assert [c[2:] for c in run.calls] == [
        ["p-traefik-1", "getent", "hosts", "api"],
        ["p-traefik-1", "getent", "hosts", "app"],
    ]
    assert [(f.service, f.severity) for f in found] == [("traefik", "ok"), ("traefik", "ok")]
    assert all(c[0] == "docker" for c in run.calls)


def test_without_a_proxy_both_ways_between_every_two():
    text = PROXY_STACK.replace("image: traefik:v3", "image: example/web")
    run = FakeRunner()
    found = check_name_resolution(config(text), containers=RUNNING, run=run)
    # a namesake of a service on the network only shows when that service is looked up
    assert sorted((c[2], c[-1]) for c in run.calls) == [
        ("p-api-1", "app"), ("p-api-1", "traefik"), ("p-app-1", "api"),
        ("p-app-1", "traefik"), ("p-traefik-1", "api"), ("p-traefik-1", "app"),
    ]
    assert {f.severity for f in found} == {"ok"}


def test_only_running_non_oneoff_containers_on_the_network():
    containers = [
        container("traefik", {"proxy": "172.20.0.2"}),
        container("app", {"proxy": "172.20.0.3"}, running=False),
        container("api", {"proxy": "172.20.0.9"}, oneoff=True),
    ]
    run = FakeRunner()
    assert check_name_resolution(config(PROXY_STACK), containers=containers, run=run) == []
    assert run.calls == []


def test_falls_back_to_nslookup_and_remembers_it_per_container():
    run = FakeRunner(missing=("getent",))
    found = check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run)
    assert [c[3] for c in run.calls] == ["getent", "nslookup", "nslookup"]
    assert {f.severity for f in found} == {"ok"}


def test_image_without_getent_or_nslookup_is_a_hint_never_an_error():
    run = FakeRunner(missing=("getent", "nslookup"))
    found = check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run)
    assert [f.severity for f in found] == ["hint", "hint"]
    assert "not checked" in found[0].message
    assert len(run.calls) == 2  # the second pair from the same container runs nothing


def test_name_not_resolved_is_an_error():
    run = FakeRunner(answers={"app": "172.20.0.3"})
    found = check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run)
    [err] = pick(found, severity="error")
    assert "cannot resolve api" in err.message and "proxy" in err.message
    assert "force-recreate api" in err.fix


def test_name_answered_by_another_container_is_an_error():
    run = FakeRunner(answers={"app": "172.20.0.3", "api": "172.20.0.77"})
    [err] = pick(check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run), severity="error")
    assert "172.20.0.77" in err.message and "172.20.0.4" in err.message
    assert "alias" in err.fix


def test_name_shared_with_another_project_is_a_warning():
    run = FakeRunner(answers={"app": "172.20.0.3,172.20.0.50", "api": "172.20.0.4"})
    [warn] = pick(check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run), severity="warning")
    assert "app" in warn.message and "172.20.0.50" in warn.message


def test_a_timeout_is_a_hint():
    def run(argv):
        raise CommandError(argv, 124, "", "docker exec p-traefik-1 timed out after 5s")

    found = check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run)
    assert [f.severity for f in found] == ["hint", "hint"] and "timed out" in found[0].message


def test_pairs_are_capped():
    run = FakeRunner()
    found = check_name_resolution(config(PROXY_STACK), containers=RUNNING, run=run, limit=1)
    assert len(run.calls) == 1
    assert "1 more pairs not checked" in found[-1].message


def test_selected_services_only():
    run = FakeRunner()
    check_name_resolution(config(PROXY_STACK), ["app"], containers=RUNNING, run=run)
    assert [c[-1] for c in run.calls] == ["app"]


def test_containers_are_read_only_when_two_services_share_an_external_network(monkeypatch):
    asked: list[str] = []

    def labelled(label: str) -> list[dict]:
        asked.append(label)
        return RUNNING

    monkeypatch.setattr(networks.docker, "containers_labelled", labelled)
    assert check_name_resolution(load("quadeare"), run=FakeRunner()) == []  # app alone on traefik
    assert asked == []
    run = FakeRunner()
    assert len(check_name_resolution(config(PROXY_STACK), run=run)) == 2
    assert asked == ["com.docker.compose.project=p"] and len(run.calls) == 2


def test_dockerd_unreachable_is_a_hint(monkeypatch):
    def labelled(label: str) -> list[dict]:
        raise DaemonUnreachable("dockerd does not answer")

    monkeypatch.setattr(networks.docker, "containers_labelled", labelled)
    [hint] = check_name_resolution(config(PROXY_STACK), run=FakeRunner())
    assert hint.severity == "hint" and "dockerd does not answer" in hint.message


@pytest.mark.parametrize(
    ("tool", "out", "want"),
    [
        ("getent", "172.20.0.3      app\n", {"172.20.0.3"}),
        ("getent", "172.20.0.3      app\n172.20.0.9      app\n", {"172.20.0.3", "172.20.0.9"}),
        ("getent", "", set()),
        # bind's nslookup: the server's own address comes first and is not an answer
        ("nslookup", "Server:\t\t127.0.0.11\nAddress:\t127.0.0.11#53\n\nNon-authoritative answer:\n"
                     "Name:\tapp\nAddress: 172.20.0.3\n", {"172.20.0.3"}),  # fmt: skip
        # old busybox
        ("nslookup", "Server:    127.0.0.11\nAddress 1: 127.0.0.11\n\nName:      app\n"
                     "Address 1: 172.20.0.3 p-app-1.proxy\n", {"172.20.0.3"}),  # fmt: skip
        ("nslookup", "Server:\t\t127.0.0.11\nAddress:\t127.0.0.11:53\n\n** server can't find app: NXDOMAIN\n",
         set()),  # fmt: skip
    ],
)
def test_resolver_output(tool, out, want):
    assert resolved_addresses(tool, out) == want


# --- GPUs ------------------------------------------------------------------------------------


def test_immich_cuda_machine_learning_on_a_host_without_nvidia_is_an_error():
    found = check_gpus(load("immich"), BARE)
    [err] = found
    assert (err.service, err.area, err.severity) == ("immich-machine-learning", "gpu", "error")
    assert "NVIDIA" in err.message and "nvidia.com/gpu" in err.message
    assert err.fix.startswith("install the NVIDIA driver and the NVIDIA Container Toolkit")
    assert exit_code(check_host(load("immich"), BARE)) == EXIT_ERRORS


@pytest.mark.parametrize(
    "facts",
    [
        with_facts(runtimes=frozenset({"runc", "nvidia"})),
        with_facts(nvidia_tools=frozenset({"nvidia-container-runtime-hook"})),
        with_facts(cdi_enabled=True, cdi_devices={"nvidia.com/gpu": frozenset({"0", "all"})}),
    ],
)
def test_immich_cuda_is_ok_with_a_runtime_the_hook_or_cdi(facts):
    assert [(f.service, f.severity) for f in check_gpus(load("immich"), facts)] == [
        ("immich-machine-learning", "ok")
    ]


def test_nvidia_cdi_spec_is_not_enough_while_dockerd_ignores_cdi():
    facts = with_facts(cdi_enabled=False, cdi_devices={"nvidia.com/gpu": frozenset({"all"})})
    assert [f.severity for f in check_gpus(load("immich"), facts)] == ["error"]


def test_toolkit_installed_but_not_configured_says_so():
    [err] = check_gpus(load("immich"), with_facts(nvidia_tools=frozenset({"nvidia-ctk"})))
    assert err.fix.startswith("sudo nvidia-ctk runtime configure --runtime=docker")


def test_cdi_reservation_without_a_spec():
    # faster-whisper-server's compose.cuda-cdi.yaml: driver cdi, nvidia.com/gpu=all
    [err] = check_gpus(load("whisper-cdi"), with_facts(cdi_enabled=True))
    assert err.service == "faster-whisper-server" and "nvidia.com/gpu=all" in err.message
    assert err.fix == "sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"


def test_cdi_reservation_with_a_spec():
    facts = with_facts(cdi_enabled=True, cdi_devices={"nvidia.com/gpu": frozenset({"0", "all"})})
    [ok] = check_gpus(load("whisper-cdi"), facts)
    assert ok.severity == "ok" and "nvidia.com/gpu=all" in ok.message


def test_cdi_spec_present_but_cdi_disabled_in_dockerd():
    facts = with_facts(cdi_enabled=False, cdi_devices={"nvidia.com/gpu": frozenset({"all"})})
    [err] = check_gpus(load("whisper-cdi"), facts)
    assert '"cdi": true' in err.fix and "daemon.json" in err.fix


def test_cdi_device_the_spec_does_not_have():
    facts = with_facts(cdi_enabled=True, cdi_devices={"nvidia.com/gpu": frozenset({"0"})})
    [err] = check_gpus(load("whisper-cdi"), facts)
    assert err.severity == "error" and "has 0" in err.message


GPU_FORMS = """\
name: p
services:
  runtime:
    image: lscr.io/linuxserver/jellyfin
    runtime: nvidia
  gpus:
    image: ollama/ollama
    gpus:
      - count: -1
  cdi-device:
    image: ollama/ollama
    devices:
      - source: nvidia.com/gpu=all
        target: nvidia.com/gpu=all
        permissions: rwm
      - source: /dev/dri
        target: /dev/dri
        permissions: rwm
  dri-only:
    image: jellyfin/jellyfin
    devices:
      - source: /dev/dri
        target: /dev/dri
        permissions: rwm
  other-driver:
    image: x
    deploy:
      resources:
        reservations:
          devices:
            - capabilities: [tpu]
              driver: example
"""


def test_gpu_request_forms():
    project = config(GPU_FORMS)
    kinds = {s: [(r.kind, r.device) for r in gpu_requests(svc.raw)] for s, svc in project.services.items()}
    assert kinds == {
        "runtime": [("runtime", "")],
        "gpus": [("nvidia", "")],
        "cdi-device": [("cdi", "nvidia.com/gpu=all")],
        "dri-only": [],
        "other-driver": [],
    }


def test_runtime_nvidia_needs_the_registered_runtime_even_with_the_hook():
    facts = with_facts(nvidia_tools=frozenset({"nvidia-container-runtime-hook", "nvidia-ctk"}))
    found = {f.service: f for f in check_gpus(config(GPU_FORMS), facts)}
    assert found["runtime"].severity == "error" and "runc" in found["runtime"].message
    assert found["gpus"].severity == "ok"
    assert found["cdi-device"].severity == "error"  # no CDI spec
    assert set(found) == {"runtime", "gpus", "cdi-device"}


def test_gpu_not_checked_without_dockerd():
    found = check_gpus(load("immich"), with_facts(daemon=False))
    assert [f.severity for f in found] == ["hint"]


def test_read_cdi_specs(tmp_path):
    (tmp_path / "nvidia.yaml").write_text(
        'cdiVersion: "0.5.0"\nkind: nvidia.com/gpu\ndevices:\n  - name: "0"\n'
        "    containerEdits:\n      deviceNodes:\n        - path: /dev/nvidia0\n  - name: all\n"
    )
    (tmp_path / "amd.json").write_text(json.dumps({"cdiVersion": "0.6.0", "kind": "amd.com/gpu",
                                                   "devices": [{"name": "gpu0"}]}))  # fmt: skip
    (tmp_path / "broken.yaml").write_text("kind: [\n")
    (tmp_path / "README").write_text("kind: not/a=spec\n")
    notes: list[str] = []
    found = read_cdi_specs([str(tmp_path), str(tmp_path / "missing")], notes)
    assert found == {"nvidia.com/gpu": frozenset({"0", "all"}), "amd.com/gpu": frozenset({"gpu0"})}
    assert len(notes) == 1 and "broken.yaml" in notes[0]


# --- CPU pinning -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "cpus"),
    [("0-3,6", {0, 1, 2, 3, 6}), ("0", {0}), (" 1 , 3-4\n", {1, 3, 4}), ("0-1", {0, 1}), ("2-2", {2})],
)
def test_parse_cpuset(text, cpus):
    assert parse_cpuset(text) == cpus


@pytest.mark.parametrize("text", ["", "a", "3-1", "1-", "-1", "1,,2", "0-3;6", "1.5"])
def test_parse_cpuset_refuses(text):
    with pytest.raises(ValueError):
        parse_cpuset(text)


@pytest.mark.parametrize("cpus", [{0, 1, 2, 3, 6}, {0}, {1, 3, 5}, set(range(64)), {7, 8, 9, 20}])
def test_format_cpuset_round_trips(cpus):
    assert parse_cpuset(format_cpuset(cpus)) == cpus
    assert format_cpuset({0, 1, 2, 3, 6}) == "0-3,6"


def test_cpuset_naming_an_offline_cpu():
    # docker-training/security-workshop's cgroup lab pins to CPU 1: "at least 2 CPU cores"
    [err] = check_cpus(load("cpu-stress"), with_facts(online_cpus=frozenset({0})))
    assert (err.service, err.area, err.severity) == ("cpu-stress", "cpu", "error")
    assert "CPU 1" in err.message and "online: 0" in err.message
    assert [f.severity for f in check_cpus(load("cpu-stress"), BARE)] == ["ok"]


CPUS = """\
name: p
services:
  a:
    image: x
    cpuset: 0-3
  b:
    image: x
    cpuset: "2-5"
  c:
    image: x
    cpuset: "6"
  d:
    image: x
    cpus: 4
  e:
    image: x
    deploy:
      resources:
        limits:
          cpus: 12
  f:
    image: x
    cpus: 2.5
  g:
    image: x
    cpuset: "0-3,x"
"""


def test_cpu_checks_on_an_eight_cpu_host():
    found = check_cpus(config(CPUS), with_facts(online_cpus=frozenset(range(8))))
    assert [f.service for f in pick(found, severity="error")] == ["e", "g"]
    assert "deploy.resources.limits.cpus: 12" in pick(found, service="e")[0].message
    [warn] = pick(found, severity="warning")
    assert warn.service == "a" and "b's cpuset 2-5" in warn.message and "CPU 2-3" in warn.message
    assert "a and b" in warn.fix
    assert pick(found, service="c") == [Finding("c", "cpu", "ok", "cpuset 6: all online")]


def test_cpu_checks_on_a_four_cpu_host():
    found = check_cpus(config(CPUS), with_facts(online_cpus=frozenset(range(4))))
    errors = {f.service: f for f in pick(found, severity="error")}
    assert set(errors) == {"b", "c", "e", "g"}  # d: cpus 4 of 4 is allowed
    assert "CPU 4-5" in errors["b"].message and "online: 0-3" in errors["b"].message
    assert errors["e"].fix == "set deploy.resources.limits.cpus to at most 4"


def test_overlap_needs_one_of_the_pair_selected():
    facts = with_facts(online_cpus=frozenset(range(8)))
    assert pick(check_cpus(config(CPUS), facts, services=["b"]), severity="warning") != []
    assert pick(check_cpus(config(CPUS), facts, services=["c", "d"]), severity="warning") == []


def test_cpus_not_checked_without_the_online_list():
    found = check_cpus(config(CPUS), with_facts(online_cpus=None))
    assert {f.severity for f in pick(found, service="d")} == {"hint"}
    assert pick(found, severity="warning") != []  # overlaps need no host facts


# --- gathering -------------------------------------------------------------------------------


class FakeDocker:
    def __init__(self, info: dict | None = None, rc: int = 0, networks: list[dict] | None = None):
        self.info = info if info is not None else {"Runtimes": {"runc": {}}, "CDISpecDirs": None}
        self.rc = rc
        self.networks = networks or [{"Name": "bridge", "ID": "aa11"}, {"Name": "traefik", "ID": "bb22"}]
        self.calls: list[list[str]] = []

    def __call__(self, argv, *, check=True, timeout=None, **_):
        assert check is False and timeout is not None
        self.calls.append(list(argv))
        if argv[1] == "info":
            return subprocess.CompletedProcess(argv, self.rc, json.dumps(self.info), "")
        if argv[1:3] == ["network", "ls"]:
            rows = "".join(json.dumps(n) + "\n" for n in self.networks)
            return subprocess.CompletedProcess(argv, 0, rows, "")
        raise AssertionError(argv)


@pytest.fixture
def fake_host(monkeypatch, tmp_path):
    online = tmp_path / "online"
    online.write_text("0-3,8-11\n")
    monkeypatch.setattr(host, "CPU_ONLINE", str(online))
    monkeypatch.setattr(host, "DEFAULT_CDI_DIRS", (str(tmp_path / "no-cdi"),))
    monkeypatch.setattr(host, "_which", lambda name: name == "nvidia-ctk")
    docker = FakeDocker()
    monkeypatch.setattr(host.execute, "run", docker)
    return docker


def test_gather_runs_nothing_the_project_does_not_need(fake_host):
    facts = host.gather_facts(load("cpu-stress"))
    assert fake_host.calls == []
    assert facts.online_cpus == frozenset({0, 1, 2, 3, 8, 9, 10, 11})
    assert facts.networks is None and facts.nvidia_tools == frozenset()
    assert facts.daemon is None  # docker info not asked: not "failed"


def test_gather_lists_networks_once_for_external_networks(fake_host):
    facts = host.gather_facts(load("quadeare"))
    assert [c[1:] for c in fake_host.calls] == [["network", "ls", "--no-trunc", "--format", "{{json .}}"]]
    assert facts.networks == frozenset({"bridge", "aa11", "traefik", "bb22"})
    assert pick(check_networks(load("quadeare"), facts), severity="error") == []


def test_gather_reads_docker_info_and_cdi_specs_for_gpus(fake_host, tmp_path):
    cdi = tmp_path / "cdi"
    cdi.mkdir()
    (cdi / "nvidia.yaml").write_text("kind: nvidia.com/gpu\ndevices:\n  - name: all\n")
    fake_host.info = {"Runtimes": {"runc": {}, "nvidia": {}}, "CDISpecDirs": [str(cdi)]}
    facts = host.gather_facts(load("immich"))
    assert [c[1:] for c in fake_host.calls] == [["info", "--format", "{{json .}}"]]
    assert facts.daemon and facts.runtimes == frozenset({"runc", "nvidia"})
    assert facts.cdi_enabled and facts.cdi_devices == {"nvidia.com/gpu": frozenset({"all"})}
    assert facts.nvidia_tools == frozenset({"nvidia-ctk"})


def test_gather_with_cdi_disabled_still_reads_the_default_dirs(fake_host, tmp_path, monkeypatch):
    cdi = tmp_path / "etc-cdi"
    cdi.mkdir()
    (cdi / "nvidia.yaml").write_text("kind: nvidia.com/gpu\ndevices:\n  - name: all\n")
    monkeypatch.setattr(host, "DEFAULT_CDI_DIRS", (str(cdi),))
    facts = host.gather_facts(load("whisper-cdi"))
    assert not facts.cdi_enabled and "nvidia.com/gpu" in facts.cdi_devices
    [err] = check_gpus(load("whisper-cdi"), facts)
    assert "does not read CDI specs" in err.message


def test_gather_when_dockerd_does_not_answer(fake_host):
    fake_host.info = {"ServerErrors": ["Cannot connect to the Docker daemon at unix:///var/run/docker.sock"]}
    facts = host.gather_facts(load("immich"))
    assert not facts.daemon and any("Cannot connect" in n for n in facts.notes)
    assert [f.severity for f in check_gpus(load("immich"), facts)] == ["hint"]


def test_gather_when_docker_info_fails(fake_host):
    fake_host.rc = 1
    facts = host.gather_facts(load("whisper-cdi"))
    assert facts.daemon is False and len(facts.notes) == 1 and facts.notes[0].startswith("docker info")
