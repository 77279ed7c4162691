"""Containers compose cannot stop with the unit that can reach it over a network (planner.
outside_writers): named by plan and doctor as a warning, from made-up container lists."""

from __future__ import annotations

from composeguard.compose.docker import ContainerUse
from composeguard.compose.invocation import Invocation
from composeguard.compose.project import parse_project
from composeguard.upgrade.plan_storage import outside_writers
from composeguard.upgrade.planner import Plan

COMPOSE = "name: shop\nservices:\n  db: {image: reg/db:1}\n  app: {image: reg/app:1}\n"


def use(name: str, project: str, service: str, *networks: str, running: bool = True) -> ContainerUse:
    return ContainerUse(name, name, project, service, (), running, networks)


def test_another_projects_container_on_a_shared_network_is_named() -> None:
    project = parse_project(COMPOSE, Invocation.parse([]), ["/srv/shop/compose.yaml"])
    plan = Plan(project, ["app"], {}, {}, unit=["app", "db"])
    uses = [
        use("shop-db-1", "shop", "db", "shop_default", "backend"),
        use("shop-app-1", "shop", "app", "shop_default"),
        use("billing-api-1", "billing", "api", "backend"),  # writes into shop's db
        use("stats-1", "", "", "bridge"),  # the default bridge: everyone is on it
        use("old-1", "billing", "old", "backend", running=False),  # stopped: writes nothing
        use("mail-1", "mail", "mail", "mail_default"),
    ]
    assert outside_writers(plan, uses) == [
        "container billing-api-1 of project billing shares the network backend with db: writes from it "
        "during an upgrade would be rolled back"
    ]


def test_nothing_to_say_when_only_the_project_is_on_its_networks() -> None:
    project = parse_project(COMPOSE, Invocation.parse([]), ["/srv/shop/compose.yaml"])
    plan = Plan(project, ["app"], {}, {}, unit=["app"])
    assert outside_writers(plan, [use("shop-app-1", "shop", "app", "shop_default")]) == []
