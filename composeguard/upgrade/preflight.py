"""Before a guarded ``up`` or ``update`` changes anything: resolve the project, take its lock,
handle what is not an upgrade (plain compose, dry runs, not root), pull, find what changes,
map the storage and refuse what cannot be guarded. Then hand the plan to the Transaction.
Every refusal here leaves everything as it was ("nothing was changed").
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import Any

from composeguard import execute
from composeguard.compose import docker, images, reads
from composeguard.compose.project import Project, resolve
from composeguard.compose.upargs import (
    UP_OPTIONS_WITH_VALUE,
    dry_run_options,
    is_dry_run,
    parse_up_args,
    plainly_valid,
    upgrade_up_args,
)
from composeguard.dockercli import GLOBAL_OPTIONS_WITH_VALUE
from composeguard.errors import ConfigError, GuardError, StorageError, last_line
from composeguard.lock import project_lock
from composeguard.pins.pinfile import PinFile
from composeguard.report import Reporter, mib, short
from composeguard.storage.base import by_backend
from composeguard.storage.resolve import backends_for
from composeguard.upgrade.plan_storage import map_storage
from composeguard.upgrade.planner import Plan, detect_changes, images_in_use, record_running, scope_of
from composeguard.upgrade.policy import hold_back, run_vetoes, tell_waiting
from composeguard.upgrade.pull import pull, pulled, start_pull
from composeguard.upgrade.rollback import refuse_if_unfinished
from composeguard.upgrade.transaction import Transaction
from composeguard.upgrade.trial import check_trial

log = logging.getLogger("composeguard.preflight")


class ExecInstead(Exception):
    """Nothing to guard: replace composeguard with ``docker compose ARGS``."""

    def __init__(self, args: list[str]) -> None:
        super().__init__(" ".join(args))
        self.args_ = args


@dataclass
class UpRequest:
    global_args: list[str]
    up_args: list[str]
    services: list[str] = field(default_factory=list)
    pull: bool = False
    allow_unprotected: bool = False
    no_deps: bool = False
    command: str = "up"
    # update --all: ``services`` are those with containers; one no longer in the compose
    # files (an orphan) is left alone rather than refused.
    deployed: bool = False
    trial: bool = False  # --trial: a trial run was asked for (a refusal stops the upgrade)
    now: bool = False  # update --now: the named services are installed whatever their policy
    config: execute.Background | None = None  # `docker compose config`, started early (runner.py)
    # Filled in for the caller (update's JSON): what the policy held back (policy.py).
    told: dict[str, Any] = field(default_factory=dict)


def guarded_up(req: UpRequest, rep: Reporter) -> int:
    project = resolve(req.global_args, services=req.services, early=req.config)
    if req.deployed:
        orphans = [s for s in req.services if s not in project.services]
        if orphans:
            log.info("not in the compose files any more, left alone: %s", ", ".join(orphans))
            kept = [s for s in req.services if s in project.services]
            if not kept:
                return 0
            req = replace(req, services=kept, up_args=["--detach", *kept])
    if os.geteuid() != 0:
        return _up_unprivileged(project, req)
    with project_lock(project.name):
        refuse_if_unfinished(project.name)
        return _up_locked(project, req, rep)


def _lift_pins(project: Project, pins: PinFile, running: dict, rep: Reporter) -> set[str]:
    """``update``: a pinned service is tried again when its tag now points to a digest that
    is neither running nor known bad. Returns the services whose pin is lifted for this run."""
    lifted = set()
    for svc, pin in pins.pins.items():
        if svc not in running or not project.services.get(svc) or not project.services[svc].image:
            continue
        info = images.image_info(project.services[svc].image or "")
        if info is None:
            continue
        digest = info.digest_for(project.services[svc].image or "") or info.id
        if any(b.digest in (digest, info.id) for b in pin.bad):
            log.info("%s: %s failed before; not retried", svc, short(digest))
            continue
        if info.id != running[svc].image_id:
            rep.step(f"{svc}: the registry offers {short(digest)}, not known bad: trying it")
            lifted.add(svc)
    return lifted


def _up_unprivileged(project: Project, req: UpRequest) -> int:
    """Not root (a docker-group user with the alias): a plain up still works, pins applied;
    an upgrade needs root for the snapshots, so it is refused before anything changes."""
    if req.command == "update":
        raise ConfigError("composeguard update needs root (it snapshots ZFS/Btrfs); nothing was changed")
    try:
        pins = PinFile(project.name)
    except (GuardError, OSError):
        # root's state dir is private (0700): judge by the compose file alone. An up that
        # changes no running image is plain compose; anything else (an upgrade, or undoing a
        # pin root set) is refused below with the one line that says root is needed.
        pins = PinFile.unreadable(project.name)
    _not_an_upgrade(project, req, [str(pins.path)] if pins.pins else [])
    scope = scope_of(project, req.services, req.no_deps)
    try:
        changes = detect_changes(project, pins, record_running(project, scope))
    except GuardError as e:
        raise ConfigError(f"composeguard needs root or the docker group ({e}); nothing was changed") from e
    if changes:
        raise ConfigError(
            f"upgrading {', '.join(sorted(changes))} needs root (composeguard snapshots the data "
            f"first); run it as root. Nothing was changed"
        )
    if pins.pins and not set(pins.pins) <= set(project.services):
        raise ConfigError("composeguard needs root to apply its pins to this project; nothing was changed")
    base = project.compose_args([str(pins.path)]) if pins.pins else req.global_args
    raise ExecInstead([*base, "up", *req.up_args])


def _dry_run_update(project: Project, req: UpRequest, pin_files: list[str], rep: Reporter) -> int:
    """``composeguard --dry-run update``: compose's own dry run of the pull and the up, and
    nothing else (no snapshot, no journal, no commit, no retention)."""
    services = [s for s in scope_of(project, req.services, req.no_deps) if project.services[s].image]
    rep.step("dry run: docker compose shows what the update would do; nothing is changed")
    dry_pull = docker.compose(project, ["--dry-run", "pull", *services], check=False)
    if dry_pull.returncode != 0:
        return dry_pull.returncode
    up = ["--dry-run", "up", "--detach", "--no-deps", *services]
    return docker.compose(project, up, extra_files=pin_files, check=False).returncode


def _not_an_upgrade(project: Project, req: UpRequest, pin_files: list[str]) -> None:
    """``up`` options that mean "do not start or recreate": handled truthfully before anything
    is stopped. ``--dry-run`` (global or after ``up``, any spelling compose accepts) and
    ``--no-recreate`` change no running container's image, so they are compose's own business
    (with the pins applied); ``--no-start`` would replace the containers without anything to
    probe: refused."""
    if req.command != "up":
        return
    _, opts = parse_up_args(req.up_args)
    dry = is_dry_run(req.global_args, GLOBAL_OPTIONS_WITH_VALUE) or is_dry_run(
        req.up_args, UP_OPTIONS_WITH_VALUE
    )
    if opts.get("--no-start"):
        raise ConfigError(
            "composeguard cannot guard `up --no-start`: the new version would not run, so it "
            "could not be probed; run `docker compose up --no-start` yourself. Nothing was changed"
        )
    if dry or opts.get("--no-recreate"):
        base = project.compose_args(pin_files) if pin_files else req.global_args
        if pin_files:  # the user's own spelling of the global option, in front of the files
            base = dry_run_options(req.global_args, base) + base
        raise ExecInstead([*base, "up", *req.up_args])


def _up_locked(project: Project, req: UpRequest, rep: Reporter) -> int:
    pins = PinFile(project.name)
    applied = pins.applied_file(set(project.services))
    _not_an_upgrade(project, req, applied)
    if req.command == "update" and is_dry_run(req.global_args, GLOBAL_OPTIONS_WITH_VALUE):
        return _dry_run_update(project, req, applied, rep)
    with reads.inspect_once():  # the plan reads the same containers three times
        planned = _plan(project, req, rep, pins)
    return planned if isinstance(planned, int) else planned.run()


def _plan(project: Project, req: UpRequest, rep: Reporter, pins: PinFile) -> int | Transaction:
    """Everything before the transaction: the pull, what changes, the storage, the checks;
    an exit code when there is nothing to guard, else the Transaction to run."""
    scope = scope_of(project, req.services, req.no_deps)
    with_images = [s for s in scope if project.services[s].image]
    if req.command == "update":
        running = record_running(project, scope)
        opted_in = [s for s in scope if project.settings.for_service(project.services[s].settings).update]
        scope = [s for s in scope if s in opted_in]
        running = {s: r for s, r in running.items() if s in opted_in}
        with_images = [s for s in with_images if s in opted_in]
        # Pull the compose file's own tags (not the pinned digests) to see what is new.
        pull(project, with_images, [], rep, quiet=True)
        pins = pins.without(_lift_pins(project, pins, running, rep))
        return _plan_pulled(project, req, rep, pins, pins.applied_file(set(project.services)), scope, running)
    pin_files = pins.applied_file(set(project.services))
    if not req.pull:
        running = record_running(project, scope)
        missing = [
            s
            for s in with_images
            if s in running
            and images.image_info(pins.image_for(s) or project.services[s].image or "") is None
        ]
        pull(project, missing, pin_files, rep)
        return _plan_pulled(project, req, rep, pins, pin_files, scope, running)
    # `up --pull always`: compose checks the user's `up` arguments (a typo must not stop,
    # snapshot and roll back a healthy project, and pin a good image as bad) and pulls while
    # composeguard reads what runs now. Only the running images must be read before the pull
    # moves their tags; the containers are read meanwhile.
    dry = _check_up_args(project, req, pin_files)
    pulling: execute.Background | None = None
    try:
        before = images_in_use(project)
        if before is None:  # no Engine API: read everything first, as compose is slow to ask
            running = record_running(project, scope)
            pull(project, with_images, pin_files, rep)
        else:
            pulling = start_pull(project, with_images, pin_files, rep)
            running = record_running(project, scope, before)
            pulled(pulling)
        return _plan_pulled(project, req, rep, pins, pin_files, scope, running, dry)
    finally:
        if dry is not None:
            dry.cancel()
        if pulling is not None:
            pulling.cancel()


def _check_up_args(project: Project, req: UpRequest, pin_files: list[str]) -> execute.Background | None:
    """``docker compose --dry-run up`` of the user's arguments, started now, read later; None
    when compose certainly accepts them (``up -d --pull always app``: one compose process
    less, on a host where every process competes with the healthchecks for the CPU)."""
    if plainly_valid(req.up_args, project.services):
        return None
    args = ["--dry-run", "up", *upgrade_up_args(req.up_args)]
    return execute.Background(execute.compose_command(*project.compose_args(pin_files), *args))


def _plan_pulled(
    project: Project,
    req: UpRequest,
    rep: Reporter,
    pins: PinFile,
    pin_files: list[str],
    scope: list[str],
    running: dict,
    dry: execute.Background | None = None,
) -> int | Transaction:
    changes = detect_changes(project, pins, running)
    if req.command == "update":
        changes = _held_back(project, changes, req, rep)
    if not changes and req.command == "update":
        rep.verbose(f"{project.name}: nothing to update")
        return 0
    if not changes:
        log.info("no service changes its image: plain docker compose up")
        base = project.compose_args(pin_files) if pin_files else req.global_args
        raise ExecInstead([*base, "up", *req.up_args])
    dry = dry or _check_up_args(project, req, pin_files)
    checked = dry.result() if dry else None
    if checked and checked.returncode != 0:
        raise ConfigError(
            f"docker compose up refused the arguments: {last_line(checked.stderr, '?')}; nothing was changed"
        )
    plan = Plan(project, scope, running, changes)
    map_storage(plan)
    refused = plan.refusals(req.allow_unprotected)
    if refused:
        svc, u = refused[0]
        raise ConfigError(
            f"service {svc}: the data volume {u.target} is not protected: {u.reason}. "
            f"Nothing was changed. Allow it with x-composeguard: {{unprotected: allow}} "
            f"or --allow-unprotected"
        )
    conflicts = plan.conflicts()
    if conflicts:
        raise ConfigError(f"cannot guard this upgrade: {conflicts[0]}. Nothing was changed")
    datasets = plan.datasets()
    backends = plan.mapper.backend if plan.mapper else backends_for(project)
    for kind, group in by_backend(datasets).items():
        try:
            backends(kind).check_location(group, project.name)
            backends(kind).check_free_space(group, project.settings.min_free)
        except ConfigError:
            raise
        except StorageError as e:
            raise GuardError(f"{e}; nothing was changed") from e
    for d in datasets:  # a directory-level restore by byte copy needs room for the copy
        use = plan.usage.get(d.name)
        if use and use.restore == "paths" and use.method == "copy":
            free = backends(d.backend).free_bytes(d)
            if free < use.size * 1.1:
                raise GuardError(
                    f"{d.name} is shared, so a rollback would copy {mib(use.size)} back from the "
                    f"snapshot, but only {mib(free)} is free; nothing was changed"
                )
    trial = check_trial(plan, req.trial)
    if trial.wanted and trial.refusals:
        if trial.explicit:
            raise ConfigError(f"{trial.refusals[0]} (a trial was asked for); nothing was changed")
        for line in trial.refusals:
            rep.warn(f"{line}; upgrading without one")
    run_vetoes(project, sorted(plan.changes), pin_files, rep)  # the last word before anything changes
    tx = Transaction(project, plan, pin_files, req.command, req.up_args, rep, backends)
    tx.trial = trial if trial.runs else None
    return tx


def _held_back(project: Project, changes: dict, req: UpRequest, rep: Reporter) -> dict:
    """``update``: what its policy installs now (policy.py); the rest is told, not installed."""
    held = hold_back(project, changes, now_for=set(req.services) if req.now else None)
    tell_waiting(held, rep)
    req.told["project"] = project.name
    req.told["waiting"] = [w.to_json() for w in held.waiting]
    req.told["available"] = [
        {"service": s, "digest": c.new_digest or c.new_image_id, "labels": c.labels}
        for s, c in sorted(held.available.items())
    ]
    if held.fresh:
        from composeguard.upgrade.notify import notify_available

        notify_available(project, {s: held.available[s] for s in held.fresh})
    return held.install
