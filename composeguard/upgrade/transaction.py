"""The guarded upgrade as one readable sequence: record, snapshot, start, probe, then commit
or roll back. The contract's "The upgrade transaction" section, step by step.

Before the snapshots exist a failure undoes the quiesce and changes nothing; after them any
failure (a probe, compose, Ctrl-C) takes the rollback path, which is always run and always
ends in exit 3 (old version on old data) or exit 4 (a human must look).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

from composeguard.compose import docker, images
from composeguard.compose.project import Project
from composeguard.compose.upargs import parse_up_args, replace_up_args, up_options, upgrade_up_args
from composeguard.faults import pause_point
from composeguard.pins.pinfile import PinFile
from composeguard.report import Reporter, short
from composeguard.storage.base import Snapshot
from composeguard.storage.resolve import Backends, backends_for
from composeguard.upgrade.journal import COMMITTED, Journal, ServiceChange
from composeguard.upgrade.planner import Plan
from composeguard.upgrade.probe import DOCKERD_GONE, probe_services
from composeguard.upgrade.restorecheck import paths_record
from composeguard.upgrade.retention import apply_retention
from composeguard.upgrade.rollback import abort, describe_restore, roll_back
from composeguard.upgrade.snapshotting import snapshot_as_one_moment, tags_for
from composeguard.upgrade.trial import TrialCheck

log = logging.getLogger("composeguard.transaction")


def old_ref(change_digest: str | None, image_id: str, new_ref: str, txn: str) -> str:
    """What a pin runs: the old repo digest, or (a local build) a composeguard tag on the ID."""
    if change_digest:
        return change_digest
    tag = f"{images.repository(new_ref)}:composeguard-{txn.lower()}"
    images.tag_image(image_id, tag)
    return tag


def without_held(project: Project, up_args: list[str], held: list[str], changes: dict) -> list[str]:
    """The user's ``up`` arguments, made not to start the services held until the verdict:
    ``up`` with no service names starts every service, so it is given every other one; a
    held service the user named is left out (``start_held`` starts it after the commit)."""
    if not held:
        return up_args
    named, _ = parse_up_args(up_args)
    keep = [s for s in (named or sorted(project.services)) if s not in held] or sorted(changes)
    return [*up_options(up_args), *keep]


class Transaction:
    """One guarded upgrade of a planned unit: the project, its plan, the pins it runs with, the
    journal every step is written to first, the reporter and the storage backends of the run."""

    def __init__(
        self, project: Project, plan: Plan, pin_files: list[str], command: str, up_args: list[str],
        rep: Reporter, backends: Backends | None = None,
    ) -> None:
        self.project, self.plan, self.pin_files = project, plan, pin_files
        self.command, self.user_up_args, self.rep = command, up_args, rep
        self.backends = backends or backends_for(project)
        self.journal = Journal.new(project.name, command)
        self.trial: TrialCheck | None = None  # run a trial first (trial.py)

    def run(self) -> int:
        """The contract: record; quiesce and snapshot (undone on failure, nothing changed);
        start and probe the new version; commit, or roll back to the old version on the old
        data. Exit 0, 3 (rolled back) or 4 (the rollback needs a human)."""
        from composeguard.upgrade.runlog import run_log

        try:
            with run_log(self.journal.files_dir / "run.log"):
                return self._run()
        finally:
            if self.journal.outcome:
                from composeguard.upgrade.notify import notify

                notify(self.project.settings, self.journal)

    def _run(self) -> int:
        self.record()
        if self.trial is not None:
            from composeguard.upgrade.trial import Trial

            tx = (self.project, self.plan, self.journal, self.pin_files, self.rep, self.backends)
            Trial(*tx, explicit=self.trial.explicit).run()
        with self.undone_on_failure():
            self.quiesce()
            self.snapshot()
        # From here on every failure leads to the rollback: a journal that cannot be written
        # (a full disk) must not stop it.
        self.journal.best_effort = True
        failures, judged = self.start_and_probe()
        if failures:
            self.journal.judged_bad = judged
            roll_back(self.project, self.journal, "; ".join(failures), self.rep, self.backends)
        return self.commit()

    # -- the steps ---------------------------------------------------------------------------
    def record(self) -> None:
        """Write down, before anything changes, what runs now, what will run, the unit and the
        datasets (and how each would be restored)."""
        from composeguard.state import make_reserve

        j, plan = self.journal, self.plan
        make_reserve()
        j.compose_args = self.project.compose_args()
        j.cwd = os.getcwd()
        j.held = plan.held()
        if self.command == "update":
            # exactly the planned services: compose must not recreate one the guard did not plan
            # for (an opted-out service whose tag moved, a service outside the scope)
            j.up_args = upgrade_up_args(["--detach", "--no-deps", *sorted(plan.changes)])
        else:
            j.up_args = upgrade_up_args(without_held(self.project, self.user_up_args, j.held, plan.changes))
        j.unit = plan.unit
        for s, c in plan.changes.items():
            j.changes[s] = ServiceChange(
                service=s,
                old_image_id=c.old_image_id,
                old_ref=old_ref(c.old_digest, c.old_image_id, c.new_ref, j.id),
                old_digest=c.old_digest,
                new_image_id=c.new_image_id,
                new_ref=c.new_ref,
                new_digest=c.new_digest,
                labels=c.labels,
            )
        datasets = plan.datasets()
        j.datasets = list(datasets)
        for d in datasets:
            use = plan.usage.get(d.name)
            if use is not None:
                j.unit_paths[d.name] = use.unit_paths
            if use is not None and use.restore == "paths":
                j.restores[d.name] = paths_record(use, datasets)
        j.step("recorded")
        for c in j.changes.values():
            old, new = short(c.old_digest or c.old_image_id), short(c.new_digest or c.new_image_id)
            self.rep.step(f"{c.service}: {old} -> {new}")
        self.rep.step(
            f"transaction {j.id}: rollback unit {', '.join(plan.unit)}; "
            f"{len(datasets)} dataset(s) to snapshot: "
            + (", ".join(describe_restore(d, j.restores.get(d.name, {})) for d in datasets) or "none")
        )

    @contextmanager
    def undone_on_failure(self) -> Iterator[None]:
        """Until the snapshots are complete any failure, Ctrl-C included, restarts what was
        stopped and drops the partial snapshots: nothing was changed."""
        try:
            yield
        except BaseException as e:  # noqa: BLE001 - undo, then report
            abort(self.project, self.journal, self.pin_files, e, self.rep, self.backends)

    def quiesce(self) -> None:
        """Stop the changing services (and the dependencies set to ``quiesce: stop``), pause
        those set to ``pause``: the snapshot must see data nobody is writing.

        The changing services are not stopped by ``docker compose stop`` but replaced by
        ``up --no-start`` (upargs.replace_up_args): compose creates each new container while
        the old one still serves, then stops and removes the old one, so creating thirty
        containers is no longer part of the downtime, and the new version's ``up`` after the
        snapshots only starts them. The new containers never run before the snapshots;
        undoing this (abort) brings the old version back for them. Order: what is held
        around the unit first (it writes into it), then the changing services, then their
        dependencies (compose's own stop order)."""
        project, plan, j = self.project, self.plan, self.journal
        changed = sorted(plan.changes)
        deps, to_pause = [], []
        for s in plan.unit:
            if s in plan.changes:
                continue
            mode = project.settings.for_service(project.services[s].settings).quiesce
            if mode == "stop":
                deps.append(s)
            elif mode == "pause":
                to_pause.append(s)
        held = [s for s in j.held if s not in changed and s not in deps]
        to_pause = [s for s in to_pause if s not in j.held]
        j.stopped, j.paused = [*changed, *deps, *held], to_pause
        j.step("quiescing")
        pausing = f"; pausing {', '.join(to_pause)}" if to_pause else ""
        until = f" (until the upgrade is decided: {', '.join(j.held)})" if j.held else ""
        self.rep.step(f"stopping {', '.join(j.stopped)}{until}{pausing}")
        files = self.pin_files
        if held:
            docker.compose(project, ["stop", *held], extra_files=files, capture=True)
        j.replaced = changed
        j.save()  # before the old containers go: an abort must know to bring them back
        docker.compose(project, ["up", *replace_up_args(j.up_args, changed)], extra_files=files)
        if deps:
            docker.compose(project, ["stop", *deps], extra_files=files, capture=True)
        if to_pause:
            docker.compose(project, ["pause", *to_pause], extra_files=files, capture=True)
        pause_point("stopped")

    def snapshot(self) -> None:
        j, plan = self.journal, self.plan
        datasets = plan.datasets()
        tags = tags_for(self.project, j, j.id, plan.unit)

        # The journal already lists the datasets and the snapshot names follow from the
        # transaction ID, so it is written once per backend, not once per snapshot (a
        # snapshot made just before a kill is found by `recover`).
        def made(snap: Snapshot) -> None:
            j.snapshots.append(snap)
            if len(j.snapshots) == 1 and len(datasets) > 1:
                pause_point("between-snapshots")

        j.frozen = self.plan.frozen([*j.stopped, *j.paused])
        snapshot_as_one_moment(
            self.project, j, datasets, tags, made, self.pin_files, self.rep, self.backends
        )
        j.step("snapshotted")
        self.rep.step(f"snapshotted {len(j.snapshots)} dataset(s)")

    def start_and_probe(self) -> tuple[list[str], bool]:
        """Start the new version and probe it. Returns what failed, and whether that is a
        verdict on the new images (it ran and failed) rather than an interruption."""
        j, project = self.journal, self.project
        failures: list[str] = []
        judged = False
        try:
            pause_point("snapshotted")
            j.step("starting")
            pause_point("starting")
            self.resume_quiesced()
            self.rep.step("starting the new version: docker compose up " + " ".join(j.up_args))
            since = time.monotonic()  # no container of the new version is older than this
            proc = docker.compose(project, ["up", *j.up_args], extra_files=self.pin_files, check=False)
            if proc.returncode != 0:
                failures.append(f"docker compose up exited with {proc.returncode}")
                judged = docker.wait_for_daemon(5)  # not a verdict when dockerd went away
            j.step("probing")
            pause_point("probing")
            failed = [r for r in probe_services(project, list(j.changes), self.rep, since=since) if not r.ok]
            failures += [f"{r.service}: {r.detail}" for r in failed]
            judged = judged or any(r.detail != DOCKERD_GONE for r in failed)
        except BaseException as e:  # noqa: BLE001 - Ctrl-C included: it rolls back
            failures.append("interrupted" if isinstance(e, KeyboardInterrupt) else f"error: {e}")
            judged = False
        return failures, judged

    def resume_quiesced(self) -> None:
        """Dependencies stopped or paused for the snapshot (quiesce) run again before the new
        version starts, as compose itself would order them (`up --no-deps`, or naming
        services, would leave them down), and are healthy again first: dockerd reports a
        container it paused ``unhealthy`` until its next passing check, and compose fails a
        service that waits on it with ``condition: service_healthy`` at once."""
        j, files = self.journal, self.pin_files
        if j.paused:
            docker.compose(self.project, ["unpause", *j.paused], extra_files=files, check=False, capture=True)
        deps = [s for s in j.stopped if s not in j.changes and s not in j.held]
        if deps:
            docker.compose(self.project, ["start", *deps], extra_files=files, check=False, capture=True)
        resumed = {*j.paused, *j.frozen, *deps}
        if resumed:
            ids = [c.id for c in docker.project_containers(self.project.name) if c.service in resumed]
            for name in docker.wait_healthy_again(ids):
                self.rep.warn(f"{name} is not healthy again after the snapshots; starting the new version")

    def start_held(self) -> None:
        """The services held around the unit run again once the upgrade is committed: those
        the user's ``up`` would have started or recreated get that ``up`` (their own
        config changes apply), the others are started as the very containers that were stopped."""
        j = self.journal
        if not j.held:
            return
        named, _ = parse_up_args(self.user_up_args)
        covered = [s for s in j.held if self.command != "update" and (not named or s in named)]
        rest = [s for s in j.held if s not in covered]
        self.rep.step(f"starting {', '.join(j.held)} again")
        if covered:
            args = [*up_options(j.up_args), *covered]
            docker.compose(self.project, ["up", *args], extra_files=self.pin_files, check=False)
        if rest:
            files = self.pin_files
            docker.compose(self.project, ["start", *rest], extra_files=files, check=False, capture=True)

    def commit(self) -> int:
        j, project = self.journal, self.project
        j.held_pending = bool(j.held)  # saved with the outcome: a kill now leaves them to recover
        j.finish(COMMITTED)
        self.start_held()
        if j.held_pending:
            j.held_pending = False
            j.save()
        lifted = [s for s in j.changes if PinFile(project.name).image_for(s)]
        if lifted:  # an update tried a new digest for a pinned service and it works: unpin
            on_disk = PinFile(project.name)
            for s in lifted:
                good = short(j.changes[s].new_digest or j.changes[s].new_image_id)
                on_disk.unpin(s, f"{good} passed its probe ({j.id})")
            on_disk.save()
            self.rep.step(f"unpinned {', '.join(lifted)}: the new digest passed its probe")
        if j.snapshots:  # `rollback TXN` needs the old images as long as the snapshots are kept
            from composeguard.upgrade.imagehold import hold_images

            for problem in hold_images(j):
                self.rep.warn(f"could not keep the old image of {problem}; `rollback {j.id}` would pull it")
        self.rep.step(
            f"committed {j.id}: {', '.join(j.changes)} upgraded; snapshots kept "
            f"(retention: last {project.settings.retention})"
        )
        apply_retention(project, self.rep, self.backends)
        return 0
