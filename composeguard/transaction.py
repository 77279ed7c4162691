"""The guarded upgrade as one readable sequence: record, snapshot, start, probe, then commit
or roll back. The contract's "The upgrade transaction" section, step by step.

Before the snapshots exist a failure undoes the quiesce and changes nothing; after them any
failure (a probe, compose, Ctrl-C) takes the rollback path, which is always run and always
ends in exit 3 (old version on old data) or exit 4 (a human must look).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from typing import NoReturn

from composeguard.compose import docker
from composeguard.compose.project import Project, resolve
from composeguard.errors import ConfigError, GuardError, RollbackFailed, RolledBack, StorageError, last_line
from composeguard.faults import pause_point
from composeguard.journal import (
    ABORTED,
    COMMITTED,
    ROLLBACK_FAILED,
    ROLLED_BACK,
    Journal,
    ServiceChange,
)
from composeguard.lock import project_lock
from composeguard.pins import PinFile
from composeguard.planner import Plan, detect_changes, map_storage, record_running, scope_of
from composeguard.probe import DOCKERD_GONE, ProbeResult, probe_all
from composeguard.report import Reporter, short
from composeguard.storage.base import Dataset, Snapshot, SnapshotTags
from composeguard.storage.mounts import read_mounts
from composeguard.storage.pathrestore import cleanup, restore_paths

log = logging.getLogger("composeguard.transaction")


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


# Options of `docker compose up` that take a value (to find the service arguments).
UP_OPTIONS_WITH_VALUE = {
    "--attach",
    "--exit-code-from",
    "--no-attach",
    "--pull",
    "--scale",
    "-t",
    "--timeout",
    "--wait-timeout",
}


def parse_up_args(args: list[str]) -> tuple[list[str], dict[str, str | bool]]:
    """(service names, options) from ``up`` arguments."""
    services: list[str] = []
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(args):
        a = args[i]
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            if name in UP_OPTIONS_WITH_VALUE and not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
                i += 1
            opts[name] = value if name in UP_OPTIONS_WITH_VALUE else True
        else:
            services.append(a)
        i += 1
    return services, opts


def upgrade_up_args(args: list[str]) -> list[str]:
    """The user's ``up`` arguments, made to start what was recorded and return to us:
    detached (the probe runs after ``up``), and no second pull (what starts is what was
    pulled and recorded)."""
    out: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--pull" and i + 1 < len(args):  # a --pull without its value stays, for compose to refuse
            i += 2
            continue
        if a.startswith("--pull="):
            i += 1
            continue
        out.append(a)
        i += 1
    _, opts = parse_up_args(out)
    if not any(k in opts for k in ("-d", "--detach", "--wait")):
        out.insert(0, "--detach")
    return ["--pull", "missing", *out]


def refuse_if_unfinished(project: str) -> None:
    j = Journal.unfinished(project)
    if j is not None and j.outcome == ROLLBACK_FAILED:
        raise GuardError(
            f"the rollback of transaction {j.id} of project {project} failed ({j.rollback_error}); "
            f"fix the cause, then run `composeguard recover` (nothing was changed now)"
        )
    if j is not None:
        raise GuardError(
            f"transaction {j.id} of project {project} was interrupted at step '{j.phase}'; "
            f"run `composeguard recover` first (nothing was changed now)"
        )


def guarded_up(req: UpRequest, rep: Reporter) -> int:
    project = resolve(req.global_args, services=req.services)
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


def _pull(
    project: Project, services: list[str], pin_files: list[str], rep: Reporter, quiet: bool = False
) -> None:
    if not services:
        return
    if not quiet:
        rep.step(f"pulling {', '.join(services)}")
    args = ["pull", "--quiet", *services] if quiet else ["pull", *services]
    proc = docker.compose(project, args, extra_files=pin_files, check=False, capture=quiet)
    if proc.returncode != 0:
        detail = f": {last_line(proc.stderr, '')}" if quiet and last_line(proc.stderr, "") else ""
        raise GuardError(f"docker compose pull failed (exit {proc.returncode}){detail}; nothing was changed")


def _lift_pins(project: Project, pins: PinFile, running: dict, rep: Reporter) -> set[str]:
    """``update``: a pinned service is tried again when its tag now points to a digest that
    is neither running nor known bad. Returns the services whose pin is lifted for this run."""
    lifted = set()
    for svc, pin in pins.pins.items():
        if svc not in running or not project.services.get(svc) or not project.services[svc].image:
            continue
        info = docker.image_info(project.services[svc].image or "")
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


def _not_an_upgrade(project: Project, req: UpRequest, pin_files: list[str]) -> None:
    """``up`` options that mean "do not start or recreate": handled truthfully before anything
    is stopped. ``--dry-run`` (global or after ``up``) and ``--no-recreate`` change no running
    container's image, so they are compose's own business (with the pins applied);
    ``--no-start`` would replace the containers without anything to probe: refused."""
    if req.command != "up":
        return
    _, opts = parse_up_args(req.up_args)
    if "--no-start" in opts:
        raise ConfigError(
            "composeguard cannot guard `up --no-start`: the new version would not run, so it "
            "could not be probed; run `docker compose up --no-start` yourself. Nothing was changed"
        )
    if "--dry-run" in req.global_args or "--dry-run" in opts or "--no-recreate" in opts:
        base = project.compose_args(pin_files) if pin_files else req.global_args
        if "--dry-run" in req.global_args and "--dry-run" not in base:
            base = ["--dry-run", *base]
        raise ExecInstead([*base, "up", *req.up_args])


def _up_locked(project: Project, req: UpRequest, rep: Reporter) -> int:
    pins = PinFile(project.name)
    _not_an_upgrade(project, req, pins.applied_file(set(project.services)))
    scope = scope_of(project, req.services, req.no_deps)
    running = record_running(project, scope)
    with_images = [s for s in scope if project.services[s].image]
    if req.command == "update":
        opted_in = [s for s in scope if project.settings.for_service(project.services[s].settings).update]
        scope = [s for s in scope if s in opted_in]
        running = {s: r for s, r in running.items() if s in opted_in}
        with_images = [s for s in with_images if s in opted_in]
        # Pull the compose file's own tags (not the pinned digests) to see what is new.
        _pull(project, with_images, [], rep, quiet=True)
        pins = pins.without(_lift_pins(project, pins, running, rep))
    pin_files = pins.applied_file(set(project.services))
    if req.pull and req.command != "update":
        _pull(project, with_images, pin_files, rep)
    elif req.command != "update":
        missing = [
            s
            for s in with_images
            if s in running
            and docker.image_info(pins.image_for(s) or project.services[s].image or "") is None
        ]
        _pull(project, missing, pin_files, rep)
    changes = detect_changes(project, pins, running)
    if not changes and req.command == "update":
        rep.verbose(f"{project.name}: nothing to update")
        return 0
    if not changes:
        log.info("no service changes its image: plain docker compose up")
        base = project.compose_args(pin_files) if pin_files else req.global_args
        raise ExecInstead([*base, "up", *req.up_args])
    # compose checks the user's `up` arguments before anything is stopped: a typo must not
    # stop, snapshot and roll back a healthy project (and pin a good image as bad).
    dry = docker.compose(
        project,
        ["--dry-run", "up", *upgrade_up_args(req.up_args)],
        extra_files=pin_files,
        capture=True,
        check=False,
    )
    if dry.returncode != 0:
        raise ConfigError(
            f"docker compose up refused the arguments: {last_line(dry.stderr, '?')}; nothing was changed"
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
    mapper_backends = _backends(project)
    for kind in sorted({d.backend for d in datasets}):
        try:
            group = [d for d in datasets if d.backend == kind]
            mapper_backends(kind).check_location(group, project.name)
            mapper_backends(kind).check_free_space(group, project.settings.min_free)
        except ConfigError:
            raise
        except StorageError as e:
            raise GuardError(f"{e}; nothing was changed") from e
    for d in datasets:  # a directory-level restore by byte copy needs room for the copy
        use = plan.usage.get(d.name)
        if use and use.restore == "paths" and use.method == "copy":
            free = mapper_backends(d.backend).free_bytes(d)
            if free < use.size * 1.1:
                raise GuardError(
                    f"{d.name} is shared, so a rollback would copy {_mib(use.size)} back from the "
                    f"snapshot, but only {_mib(free)} is free; nothing was changed"
                )
    return run_transaction(project, plan, pins, pin_files, req, rep)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def describe_restore(d: Dataset, use: dict) -> str:
    """'btrfs:/srv/pool/appdata (shared: restores a, b by reflink)' for the progress lines."""
    if not use or use.get("restore") != "paths":
        return f"{d.backend}:{d.name}"
    method = use.get("method", "")
    how = f"by {method}" + (f" of {_mib(use.get('size', 0))}" if method == "copy" else "")
    paths = ", ".join(os.path.relpath(p, use.get("root") or d.name) for p in use.get("paths", []))
    return f"{d.backend}:{d.name} (shared: restores {paths} {how})"


def _backends(project: Project):
    from composeguard.storage.resolve import StorageMapper

    mapper = StorageMapper(project, read_mounts())
    return mapper.backend


def _old_ref(change_digest: str | None, image_id: str, new_ref: str, txn: str) -> str:
    """What a pin runs: the old repo digest, or (a local build) a composeguard tag on the ID."""
    if change_digest:
        return change_digest
    tag = f"{docker.repository(new_ref)}:composeguard-{txn.lower()}"
    docker.tag_image(image_id, tag)
    return tag


def run_transaction(
    project: Project, plan: Plan, pins: PinFile, pin_files: list[str], req: UpRequest, rep: Reporter
) -> int:
    j = Journal.new(project.name, req.command)
    try:
        return _run_transaction(project, plan, pins, pin_files, req, rep, j)
    finally:
        if j.outcome:
            from composeguard.notify import notify

            notify(project.settings, j)


def _run_transaction(
    project: Project,
    plan: Plan,
    pins: PinFile,
    pin_files: list[str],
    req: UpRequest,
    rep: Reporter,
    j: Journal,
) -> int:
    from composeguard.runlog import attach_run_log

    attach_run_log(j.files_dir / "run.log")
    j.compose_args = project.compose_args()
    if req.command == "update":
        # exactly the planned services: compose must not recreate one the guard did not plan
        # for (an opted-out service whose tag moved, a service outside the scope)
        j.up_args = upgrade_up_args(["--detach", "--no-deps", *sorted(plan.changes)])
    else:
        j.up_args = upgrade_up_args(req.up_args)
    j.unit = plan.unit
    for s, c in plan.changes.items():
        j.changes[s] = ServiceChange(
            service=s,
            old_image_id=c.old_image_id,
            old_ref=_old_ref(c.old_digest, c.old_image_id, c.new_ref, j.id),
            old_digest=c.old_digest,
            new_image_id=c.new_image_id,
            new_ref=c.new_ref,
            new_digest=c.new_digest,
        )
    datasets = plan.datasets()
    j.datasets = [d.to_json() for d in datasets]
    for d in datasets:
        use = plan.usage.get(d.name)
        if use is not None and use.restore == "paths":
            j.restores[d.name] = {
                "restore": "paths",
                "root": use.root,
                "paths": use.unit_paths,
                "method": use.method,
                "size": use.size,
                "used_by": use.others,
                "child_mounts": [x.mountpoint for x in datasets if x.name.startswith(d.name + "/")],
            }
    j.step("recorded")
    for c in j.changes.values():
        rep.step(
            f"{c.service}: {short(c.old_digest or c.old_image_id)} -> {short(c.new_digest or c.new_image_id)}"
        )
    rep.step(
        f"transaction {j.id}: rollback unit {', '.join(plan.unit)}; "
        f"{len(datasets)} dataset(s) to snapshot: "
        + (", ".join(describe_restore(d, j.restores.get(d.name, {})) for d in datasets) or "none")
    )

    backend = _backends(project)
    # -- quiesce and snapshot: a failure here undoes the quiesce; nothing else changed --
    try:
        _quiesce(project, plan, pins, pin_files, j, rep)
        pause_point("stopped")
        tags = SnapshotTags(
            txn=j.id,
            project=project.name,
            services=tuple(plan.unit),
            old_digests={s: c.old_digest or c.old_image_id for s, c in j.changes.items()},
            new_digests={s: c.new_digest or (c.new_image_id or "") for s, c in j.changes.items()},
        )
        for kind in sorted({d.backend for d in datasets}):
            group = [d for d in datasets if d.backend == kind]

            # The journal already lists the datasets and the snapshot names follow from the
            # transaction ID, so it is written once per backend, not once per snapshot (a
            # snapshot made just before a kill is found by `recover`).
            def made(snap: Snapshot) -> None:
                j.snapshots.append(snap.to_json())
                if len(j.snapshots) == 1 and len(datasets) > 1:
                    pause_point("between-snapshots")

            backend(kind).snapshot(group, tags, on_each=made)
            j.save()
        j.step("snapshotted")
        rep.step(f"snapshotted {len(j.snapshots)} dataset(s)")
    except BaseException as e:  # noqa: BLE001 - Ctrl-C included: undo, then report
        _abort(project, j, pins, pin_files, e, rep)

    # -- start and probe: a failure from here on rolls back --
    failures: list[str] = []
    judged = False  # the new version ran and failed (not: we were interrupted)
    try:
        pause_point("snapshotted")
        j.step("starting")
        pause_point("starting")
        rep.step("starting the new version: docker compose up " + " ".join(j.up_args))
        proc = docker.compose(project, ["up", *j.up_args], extra_files=pin_files, check=False)
        if proc.returncode != 0:
            failures.append(f"docker compose up exited with {proc.returncode}")
            judged = docker.wait_for_daemon(5)  # not a verdict when dockerd went away
        _resume_quiesced(project, j, pin_files)
        j.step("probing")
        pause_point("probing")
        results = _probe(project, list(j.changes), rep)
        failed = [r for r in results if not r.ok]
        failures += [f"{r.service}: {r.detail}" for r in failed]
        judged = judged or any(r.detail != DOCKERD_GONE for r in failed)
    except BaseException as e:  # noqa: BLE001
        failures.append("interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {e}")
        judged = False
    if failures:
        j.judged_bad = judged
        roll_back(project, j, "; ".join(failures), rep)
    j.finish(COMMITTED)
    lifted = [s for s in j.changes if PinFile(project.name).image_for(s)]
    if lifted:  # an update tried a new digest for a pinned service and it works: unpin
        on_disk = PinFile(project.name)
        for s in lifted:
            on_disk.unpin(s)
        on_disk.save()
        rep.step(f"unpinned {', '.join(lifted)}: the new digest passed its probe")
    rep.step(
        f"committed {j.id}: {', '.join(j.changes)} upgraded; snapshots kept "
        f"(retention: last {project.settings.retention})"
    )
    apply_retention(project, rep)
    return 0


def _quiesce(
    project: Project, plan: Plan, pins: PinFile, pin_files: list[str], j: Journal, rep: Reporter
) -> None:
    to_stop = sorted(plan.changes)
    to_pause = []
    for s in plan.unit:
        if s in plan.changes:
            continue
        mode = project.settings.for_service(project.services[s].settings).quiesce
        if mode == "stop":
            to_stop.append(s)
        elif mode == "pause":
            to_pause.append(s)
    j.stopped, j.paused = to_stop, to_pause
    j.step("quiescing")
    rep.step(f"stopping {', '.join(to_stop)}" + (f"; pausing {', '.join(to_pause)}" if to_pause else ""))
    docker.compose(project, ["stop", *to_stop], extra_files=pin_files, capture=True)
    if to_pause:
        docker.compose(project, ["pause", *to_pause], extra_files=pin_files, capture=True)


def _resume_quiesced(project: Project, j: Journal, pin_files: list[str]) -> None:
    """Dependencies stopped or paused for the snapshot (quiesce) run again once the new
    version is up: `up` with --no-deps, or naming services, would leave them down."""
    if j.paused:
        docker.compose(project, ["unpause", *j.paused], extra_files=pin_files, check=False, capture=True)
    deps = [s for s in j.stopped if s not in j.changes]
    if deps:
        docker.compose(project, ["start", *deps], extra_files=pin_files, check=False, capture=True)


def _abort(
    project: Project,
    j: Journal,
    pins: PinFile,
    pin_files: list[str],
    e: BaseException,
    rep: Reporter,
) -> NoReturn:
    """Undo a failed quiesce/snapshot: restart what we stopped FIRST (the services must not
    stay down because a snapshot cannot be destroyed), then drop our partial snapshots."""
    reason = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
    j.step("aborting", reason=reason)
    if j.paused:
        docker.compose(project, ["unpause", *j.paused], extra_files=pin_files, check=False, capture=True)
    if j.stopped:
        docker.compose(project, ["start", *j.stopped], extra_files=pin_files, check=False, capture=True)
    backend = _backends(project)
    left = []
    for s in list(j.snapshots):
        snap = Snapshot.from_json(s)
        try:
            backend(snap.dataset.backend).destroy(snap.name)
        except (StorageError, OSError) as err:
            rep.warn(f"could not destroy the partial snapshot {snap.name}: {err}")
            left.append(s)
    j.snapshots = left
    if left:
        reason += f"; partial snapshot(s) left for you to delete: {', '.join(s['name'] for s in left)}"
    j.finish(ABORTED, reason)
    if isinstance(e, KeyboardInterrupt):
        raise e
    raise GuardError(f"{reason}; the stopped services were started again, nothing was changed") from e


def one_shot_services(project: Project) -> frozenset[str]:
    """Services whose success is to run and exit 0: ``restart: "no"`` set explicitly, or a
    dependency some service awaits with ``condition: service_completed_successfully``."""
    out = {s for s, svc in project.services.items() if svc.raw.get("restart") in ("no", False)}
    for svc in project.services.values():
        deps = svc.raw.get("depends_on")
        if isinstance(deps, dict):
            out |= {
                d for d, how in deps.items()
                if isinstance(how, dict) and how.get("condition") == "service_completed_successfully"
            }
    return frozenset(out)


def _probe(project: Project, services: list[str], rep: Reporter) -> list[ProbeResult]:
    if not docker.wait_for_daemon(max(project.settings.timeout, 60)):
        return [ProbeResult(s, False, DOCKERD_GONE, 0.0) for s in services]
    containers = [c for c in docker.project_containers(project.name) if c.service in services]
    targets = [
        (c.service, c.id, project.settings.for_service(project.services[c.service].settings))
        for c in containers
    ]
    missing = [s for s in services if s not in {c.service for c in containers}]
    rep.step(f"probing {', '.join(services)}")
    results = probe_all(targets, one_shot_services(project))
    results += [ProbeResult(s, False, "no container", 0.0) for s in missing]
    for r in results:
        rep.step(f"  {r.service}: {'ok' if r.ok else 'FAILED'}: {r.detail} ({r.seconds:.1f}s)")
    return results


def roll_back(project: Project, j: Journal, reason: str, rep: Reporter) -> NoReturn:
    """Put the unit back on its pre-upgrade data and old digests. Raises RolledBack (exit 3)
    or RollbackFailed (exit 4)."""
    j.reason = reason
    j.step("rolling-back", reason=reason)
    rep.step(f"rolling back: {reason}")
    backend = _backends(project)
    pins = PinFile(project.name)
    try:
        if not docker.wait_for_daemon(120):
            raise GuardError("dockerd does not answer")
        for c in docker.project_containers(project.name):
            if c.service in j.changes:
                docker.save_logs(c.id, str(j.files_dir / f"{c.service}.{c.name}.log"))
        j.step("stopping-unit")
        docker.compose(
            project,
            ["stop", *j.unit],
            extra_files=pins.applied_file(set(project.services)),
            capture=True,
        )
        j.step("restoring")
        pause_point("restoring")
        failed_states = []
        for n, s in enumerate(j.snapshots):
            snap = Snapshot.from_json(s)
            record = j.restores.get(snap.dataset.name)
            if record is not None:
                rep.step(f"restoring {describe_restore(snap.dataset, record)}")
                failed_states += restore_paths(
                    backend(snap.dataset.backend), snap, record, j.project, j.id, j.save
                )
            else:
                failed_states.append(backend(snap.dataset.backend).restore(snap, j.id))
            if n == 0 and len(j.snapshots) > 1:
                pause_point("restored-one")
        j.failed_states = failed_states
        j.step("restored")
        rep.step(
            f"restored {len(j.snapshots)} dataset(s); failed state kept at "
            + (", ".join(failed_states) or "(no datasets)")
        )
        for s, c in j.changes.items():  # quarantine the new digest only on a verdict
            pins.pin(s, c.old_ref, j.id, (c.new_digest or c.new_image_id) if j.judged_bad else None, reason)
        pins.save()
        j.step("pinned")
        pause_point("pinned")
        pin_files = pins.applied_file(set(project.services))
        rep.step(
            f"pinned {', '.join(f'{s}={short(c.old_ref)}' for s, c in j.changes.items())}; "
            f"starting the old version"
        )
        # The rest of the unit (dependencies, services sharing the data) runs again as the
        # very containers that were stopped, whatever their tags point to now: a rollback
        # recreates nothing it did not plan for. Then the changed services, on the old digests.
        others = [s for s in j.unit if s not in j.changes]
        if others:
            docker.compose(
                project,
                ["up", "--detach", "--no-recreate", "--no-deps", "--pull", "missing", "--no-build", *others],
                extra_files=pin_files,
            )
        docker.compose(
            project,
            ["up", "--detach", "--force-recreate", "--no-deps", "--pull", "missing", "--no-build",
             *sorted(j.changes)],
            extra_files=pin_files,
        )
        j.step("reprobing")
        results = _probe(project, list(j.changes), rep)
        bad = [r for r in results if not r.ok]
        if bad:
            raise GuardError(
                "the old version is not healthy either: " + "; ".join(f"{r.service}: {r.detail}" for r in bad)
            )
    except BaseException as e:  # noqa: BLE001
        phase = j.phase
        j.rollback_error = f"at step '{phase}': {'interrupted' if isinstance(e, KeyboardInterrupt) else e}"
        j.finish(ROLLBACK_FAILED, reason)
        snaps = ", ".join(s["name"] for s in j.snapshots) or "none"
        raise RollbackFailed(
            f"the rollback of {j.id} failed at step '{phase}': {e}. The pre-upgrade snapshots "
            f"are kept ({snaps}); fix the cause, then run `composeguard recover`"
        ) from e
    for name, record in j.restores.items():
        try:  # the moved-aside failed directories (their contents are in the failed snapshot)
            cleanup(record, j.id)
        except (OSError, StorageError) as e:
            rep.warn(f"could not delete the moved-aside failed directories in {name}: {e}")
    j.rollback_error = ""
    j.finish(ROLLED_BACK, reason)
    raise RolledBack(
        f"the upgrade failed ({reason}) and was rolled back: {', '.join(j.changes)} back on the old "
        f"digest on the pre-upgrade data; failed state kept at "
        f"{', '.join(j.failed_states) or '(no datasets)'}; see `composeguard history`"
    )


def apply_retention(project: Project, rep: Reporter) -> None:
    """Keep the pre-upgrade snapshots of the last N committed transactions; destroy older
    ones. Only snapshots recorded in composeguard's own journals are ever destroyed."""
    keep = project.settings.retention
    committed = [
        j
        for j in Journal.all(project.name)
        if j.outcome == COMMITTED and j.snapshots and not j.snapshots_released
    ]
    backend = _backends(project)
    for j in committed[:-keep] if len(committed) > keep else []:
        try:
            for s in j.snapshots:
                snap = Snapshot.from_json(s)
                backend(snap.dataset.backend).destroy(snap.name)
        except StorageError as e:  # the upgrade is committed; a snapshot left over is no harm
            rep.warn(f"retention could not release the snapshots of {j.id}: {e}")
            continue
        j.snapshots_released = True
        j.save()
        rep.step(f"retention: released the snapshots of {j.id}")


BEFORE_SNAPSHOTS = ("started", "recorded", "quiescing", "aborting")


def _adopt_unrecorded_snapshots(project: Project, j: Journal, rep: Reporter) -> None:
    """A kill between making a snapshot and journaling it (or, on ZFS, after the one atomic
    snapshot of several datasets) leaves snapshots the journal does not list: take them into
    the journal, so that the abort destroys them or the rollback can use them."""
    recorded = {Snapshot.from_json(s).dataset.name for s in j.snapshots}
    backend = _backends(project)
    for d in (Dataset.from_json(x) for x in j.datasets):
        if d.name in recorded:
            continue
        snap = backend(d.backend).find_snapshot(d, j.project, j.id)
        if snap is not None:
            rep.step(f"found the unrecorded snapshot {snap.name}")
            j.snapshots.append(snap.to_json())
            j.save()


def finish_interrupted(project: Project, j: Journal, rep: Reporter) -> int:
    """Finish a transaction that was killed: before its snapshots were complete it is undone
    (nothing had changed); after that it is rolled back to the old version on the old data."""
    if j.outcome == ROLLBACK_FAILED:  # resume it: every step of roll_back can run again
        rep.step(f"resuming the rollback of {j.id}, which failed {j.rollback_error}")
        j.outcome, j.finished = None, None
    else:
        rep.step(f"recovering {j.id}, interrupted at '{j.phase}'")
    _adopt_unrecorded_snapshots(project, j, rep)
    pins = PinFile(project.name)
    pin_files = pins.applied_file(set(project.services))
    if j.phase in BEFORE_SNAPSHOTS:
        try:
            _abort(project, j, pins, pin_files, GuardError("interrupted before the snapshots"), rep)
        except GuardError as e:
            rep.step(f"recovered: {e}")
        return 0
    try:
        roll_back(project, j, j.reason or f"interrupted at '{j.phase}'", rep)
    except RolledBack as e:
        rep.step(f"recovered: {e}")
    return 0
