"""The rollback unit (DESIGN step 4) and the start order of a unit.

The mappings have one key per service in scope, as the planner builds them
(``planner.map_storage``): a service without dependencies maps to [] and a service without
data volumes maps to []. Data is given as host paths: services are tied together when their
paths overlap (equal, or one inside the other), not merely because they share a dataset.
"""

from __future__ import annotations

import threading

from composeguard.upgrade.unit import dependencies_of, neighbours, rollback_unit, start_order


def run_with_timeout(fn, *args, seconds: float = 5.0):
    """Call fn(*args) in a thread; fail instead of hanging the suite."""
    result: list = []
    t = threading.Thread(target=lambda: result.append(fn(*args)), daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"{fn.__name__} did not return within {seconds}s"
    return result[0]


def test_only_the_changed_service_when_it_stands_alone():
    deps = {"web": [], "worker": [], "db": []}
    ds = {"web": ["/pool/web"], "worker": ["/pool/worker"], "db": ["/pool/db"]}
    assert rollback_unit(["web"], deps, ds) == ["web"]


def test_no_changes_is_an_empty_unit():
    assert rollback_unit([], {"a": ["b"], "b": []}, {"a": ["/p/a"], "b": ["/p/b"]}) == []


def test_dependencies_are_pulled_in_transitively():
    deps = {"app": ["api"], "api": ["db"], "db": [], "other": []}
    ds = {"app": [], "api": [], "db": ["/pool/pg"], "other": ["/pool/other"]}
    assert rollback_unit(["app"], deps, ds) == ["api", "app", "db"]


def test_dependents_are_not_pulled_in():
    # the unit follows depends_on downwards only: a changed db does not drag app along
    deps = {"app": ["db"], "db": []}
    ds = {"app": ["/pool/app"], "db": ["/pool/db"]}
    assert rollback_unit(["db"], deps, ds) == ["db"]


def test_same_dataset_different_directories_are_not_tied_together():
    # /volume1/docker/<app>: one Btrfs subvolume, a directory per app (Synology, Unraid)
    deps = {"a": [], "b": []}
    paths = {"a": ["/volume1/docker/a"], "b": ["/volume1/docker/b"]}
    assert rollback_unit(["a"], deps, paths) == ["a"]


def test_a_path_inside_another_ties_the_services():
    deps = {"app": [], "files": [], "other": []}
    paths = {"app": ["/srv/data/app/db"], "files": ["/srv/data/app"], "other": ["/srv/data/application"]}
    assert rollback_unit(["app"], deps, paths) == ["app", "files"]
    assert rollback_unit(["files"], deps, paths) == ["app", "files"]


def test_sharing_data_pulls_in_a_service():
    deps = {"nextcloud": [], "cron": [], "redis": []}
    ds = {"nextcloud": ["/tank/nc"], "cron": ["/tank/nc"], "redis": ["/tank/redis"]}
    assert rollback_unit(["nextcloud"], deps, ds) == ["cron", "nextcloud"]


def test_sharing_via_a_dependencys_dataset():
    # app -> db; backup shares db's dataset, so when db's data goes back backup must stop too
    deps = {"app": ["db"], "db": [], "backup": [], "unrelated": []}
    ds = {
        "app": ["/pool/app"],
        "db": ["/pool/pg"],
        "backup": ["/pool/backup", "/pool/pg"],
        "unrelated": ["/pool/unrelated"],
    }
    assert rollback_unit(["app"], deps, ds) == ["app", "backup", "db"]


def test_closure_follows_the_dependencies_of_a_service_pulled_in_by_sharing():
    deps = {"app": [], "sidecar": ["cache"], "cache": [], "lone": []}
    ds = {"app": ["/p/shared"], "sidecar": ["/p/shared"], "cache": [], "lone": []}
    assert rollback_unit(["app"], deps, ds) == ["app", "cache", "sidecar"]


def test_dependency_cycles_terminate():
    deps = {"a": ["b"], "b": ["c"], "c": ["a"], "d": []}
    ds = {"a": [], "b": [], "c": [], "d": []}
    assert run_with_timeout(rollback_unit, ["a"], deps, ds) == ["a", "b", "c"]


def test_self_dependency_terminates():
    assert run_with_timeout(rollback_unit, ["a"], {"a": ["a"]}, {"a": ["/p/a"]}) == ["a"]


def test_unrelated_services_stay_out():
    deps = {"app": ["db"], "db": [], "mail": ["mailstore"], "mailstore": []}
    ds = {"app": [], "db": ["/p/db"], "mail": ["/p/mail"], "mailstore": ["/p/mailstore"]}
    unit = rollback_unit(["app"], deps, ds)
    assert unit == ["app", "db"]
    assert "mail" not in unit and "mailstore" not in unit


def test_several_changed_services_are_merged_and_sorted():
    deps = {"z": ["y"], "y": [], "b": [], "a": []}
    ds = {"z": [], "y": [], "b": ["/p/b"], "a": []}
    assert rollback_unit(["z", "b"], deps, ds) == ["b", "y", "z"]


def test_services_outside_the_scope_are_not_added():
    # the planner drops dependencies outside the scope; names absent from both maps stay out
    deps = {"app": ["db"]}
    ds = {"app": ["/p/app"]}
    assert rollback_unit(["app"], deps, ds) == ["app"]


def test_accepts_any_iterables():
    deps = {"app": ("db",), "db": ()}
    ds = {"app": iter(()), "db": {"/p/db"}}
    assert rollback_unit(iter(["app"]), deps, ds) == ["app", "db"]


# -- neighbours: around the unit, stopped with it, their data not restored ----------------


def test_a_service_that_depends_on_the_unit_is_a_neighbour():
    # the worker writes into db all along: a rollback of db's data would lose those writes
    deps = {"app": ["db"], "db": [], "worker": ["db"], "mail": []}
    ds = {"app": [], "db": ["/p/db"], "worker": [], "mail": ["/p/mail"]}
    unit = rollback_unit(["app"], deps, ds)
    assert unit == ["app", "db"], "its data does not go back: it is stopped, so it cannot change"
    assert neighbours(unit, deps, {}, ds) == {"worker": "depends on db (in the rollback unit)"}


def test_neighbours_are_found_at_any_depth_and_any_cycle_ends():
    deps = {"db": [], "api": ["db"], "front": ["api"], "a": ["b"], "b": ["a"], "lone": []}
    around = run_with_timeout(neighbours, ["db"], deps, {}, {"db": ["/p/db"]})
    assert around == {
        "api": "depends on db (in the rollback unit)",
        "front": "depends on api (stopped with it)",
    }


def test_a_read_only_reader_of_the_units_data_is_a_neighbour():
    # nginx in front of Nextcloud serves its folder read-only (- ./html:/srv:ro)
    deps = {"app": [], "web": [], "other": []}
    data = {"app": ["/srv/site/html"], "web": [], "other": []}
    reads = {"web": ["/srv/site/html/static"], "other": ["/srv/site/other"]}
    assert neighbours(["app"], deps, reads, data) == {
        "web": "reads /srv/site/html/static (read-only), data of app"
    }


def test_dependencies_of_follows_depends_on_downwards_only():
    deps = {"app": ["api"], "api": ["db"], "db": [], "worker": ["db"]}
    assert dependencies_of(["app"], deps) == {"api", "db"}


# -- start_order ----------------------------------------------------------------------------


def test_start_order_puts_dependencies_first():
    deps = {"app": ["api"], "api": ["db", "cache"], "db": [], "cache": []}
    order = start_order(["app", "api", "db", "cache"], deps)
    assert sorted(order) == ["api", "app", "cache", "db"]
    assert order.index("db") < order.index("api") < order.index("app")
    assert order.index("cache") < order.index("api")


def test_start_order_ignores_dependencies_outside_the_set():
    order = start_order(["app"], {"app": ["db"], "db": []})
    assert order == ["app"]


def test_start_order_is_deterministic():
    deps = {"b": [], "a": [], "c": []}
    assert start_order(["c", "a", "b"], deps) == ["a", "b", "c"]
    assert start_order({"b", "c", "a"}, deps) == ["a", "b", "c"]


def test_start_order_with_a_cycle_terminates_and_lists_each_service_once():
    deps = {"a": ["b"], "b": ["a"], "c": ["a"]}
    order = run_with_timeout(start_order, ["a", "b", "c"], deps)
    assert sorted(order) == ["a", "b", "c"]
    assert order.index("a") < order.index("c")


def test_start_order_diamond():
    deps = {"top": ["l", "r"], "l": ["base"], "r": ["base"], "base": []}
    order = start_order(["top", "l", "r", "base"], deps)
    assert order[0] == "base" and order[-1] == "top"
    assert len(order) == 4
