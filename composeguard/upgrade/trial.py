"""The trial run: the new version tried on clones of the data, beside the live version.

With ``x-composeguard: {trial: true}`` (or ``COMPOSEGUARD_TRIAL=1``, or ``update --trial``)
the guarded upgrade begins, before anything is stopped, with a trial: the unit's datasets are
snapshotted while the old version runs, each snapshot gets a writable clone (O(1) whatever its
size), and the unit's services are started on the NEW images as a compose project of their
own (``<project>-trial``, trial_model.py: no published port, one internal network, only the
unit's folders of a shared clone bound), then probed exactly as the upgrade would be.

- Failed (it ran and its probe failed): the trial is torn down, its clones are kept read-only
  as the failed state, the new digest is pinned as bad, exit 3. The live version was never
  stopped and its data never saw the new version.
- Passed: the trial is torn down, its clones and snapshots destroyed, and the guarded upgrade
  runs as it always does (stop, snapshot, up, probe, commit or roll back): a trial is
  evidence, not a promise.
- Could not run (compose refused the trial's project before any new container started,
  dockerd went away): no verdict, nothing is pinned, the trial is removed; the upgrade goes
  on guarded as without a trial, or stops (nothing changed) when the trial was asked for
  explicitly.

Every step is journaled first (phases ``trial-*``); a kill anywhere leaves the live version as
it was (paused at most for the instant of the snapshots), and ``recover`` removes the trial's
containers, clones and snapshots, or finishes a failed trial's verdict.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import yaml

from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.errors import ConfigError, GuardError, last_line
from composeguard.faults import pause_point
from composeguard.report import Reporter, short
from composeguard.storage.base import Clone, Dataset, Snapshot
from composeguard.upgrade.journal import Journal
from composeguard.upgrade.planner import Plan
from composeguard.upgrade.probe import DOCKERD_GONE, probe_services
from composeguard.upgrade.rollback import abort
from composeguard.upgrade.snapshotting import snapshot_as_one_moment, tags_for
from composeguard.upgrade.trial_model import TrialModel, trial_model
from composeguard.upgrade.trial_teardown import finish_failed_trial, remove_trial, trial_compose

log = logging.getLogger("composeguard.trial")

NEVER_STARTED = "0001-01-01T00:00:00Z"  # Docker's StartedAt of a container that never ran
PLACEHOLDER = "/run/composeguard/trial/clone-of"  # plan time: where a clone would be


@dataclass
class TrialCheck:
    """What ``plan`` and the guard know before anything runs: whether a trial is asked for
    (``wanted``; ``explicit`` on the command line or in the environment, where a refusal stops
    the upgrade) and why it cannot be done (``refusals``, one "no trial: …" line each)."""

    wanted: bool
    explicit: bool
    refusals: list[str] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)  # external networks the trial does not join

    @property
    def runs(self) -> bool:
        return self.wanted and not self.refusals

    def to_json(self) -> dict[str, Any]:
        return {
            "wanted": self.wanted,
            "explicit": self.explicit,
            "runs": self.runs,
            "refusals": self.refusals,
            "left_out_networks": self.left_out,
        }


def explicitly_asked(flag: bool = False) -> bool:
    return flag or os.environ.get("COMPOSEGUARD_TRIAL", "").lower() in ("1", "true", "yes")


def check_trial(plan: Plan, flag: bool = False) -> TrialCheck:
    """Whether the trial can run for ``plan`` (read-only: nothing is made)."""
    project = plan.project
    explicit = explicitly_asked(flag)
    check = TrialCheck(wanted=explicit or project.settings.trial, explicit=explicit)
    if not plan.changes or not check.wanted:
        return check
    datasets = plan.datasets()
    clones = {d.name: f"{PLACEHOLDER}/{n}" for n, d in enumerate(datasets)}
    model = build_model(plan, {d.name: clones[d.name] for d in datasets})
    check.refusals = list(model.refusals)
    mounting = [d.name for d in datasets if d.backend == "zfs" or d.root]
    if mounting:
        from composeguard.storage.mountns import namespace_problem

        problem = namespace_problem(f"a trial (it mounts a clone of {mounting[0]})")
        if problem:
            check.refusals.append(f"no trial: {problem}")
    networks = project.networks
    for s in plan.unit:
        for key in project.services[s].raw.get("networks") or {}:
            spec = networks.get(key) or {}
            if spec.get("external"):
                name = str(spec.get("name") or key)
                line = f"{name} (of {s})"
                if line not in check.left_out:
                    check.left_out.append(line)
    return check


def build_model(plan: Plan, clone_of: dict[str, str], name_suffix: str = "") -> TrialModel:
    """The trial's compose document for ``plan``, its data bound from ``clone_of`` (dataset
    name -> where the dataset's clone has its files)."""
    project = plan.project
    roots: dict[str, str] = {}
    for d in plan.datasets():
        roots[d.files_at] = clone_of[d.name]
    binds = dict(roots)
    volume_paths: dict[str, str] = {}
    anonymous: dict[str, dict[str, str]] = {}
    for s in plan.unit:
        svc = project.services[s]
        declared = {v.target: v for v in svc.volumes if v.source}
        for p in plan.storage[s].protected:
            real = os.path.realpath(p.path)
            inside = os.path.relpath(real, p.dataset.files_at)
            clone = clone_of.get(p.dataset.name)
            if clone is None:
                continue
            at = clone if inside == "." else os.path.join(clone, inside)
            binds.setdefault(real, at)
            binds.setdefault(p.path, at)  # as compose printed it (a symlinked folder)
            v = declared.get(p.target)
            if v is None:
                anonymous.setdefault(s, {})[p.target] = p.path
            elif v.type == "volume" and v.source:
                volume_paths[v.source] = p.path
    images = {s: c.new_digest or c.new_ref for s, c in plan.changes.items()}
    model = dict(project.model) or {"name": project.name}
    # a service named on the command line whose profile is off is in the unit (compose
    # starts it) but not in `docker compose config`'s model
    services = dict(model.get("services") or {})
    for s in plan.unit:
        services.setdefault(s, project.services[s].raw)
    model["services"] = services
    return trial_model(
        model, plan.unit, project.name, binds, images, volume_paths=volume_paths, anonymous=anonymous
    )


class Trial:
    """One trial run within a transaction (``Transaction`` calls :meth:`run`)."""

    def __init__(
        self,
        project: Project,
        plan: Plan,
        j: Journal,
        pin_files: list[str],
        rep: Reporter,
        backends: Any,
        explicit: bool,
    ) -> None:
        self.project, self.plan, self.j, self.pin_files = project, plan, j, pin_files
        self.rep, self.backends, self.explicit = rep, backends, explicit

    def run(self) -> None:
        """Returns when the upgrade is to go on (passed, or no verdict and not explicit);
        raises RolledBack (it failed) or GuardError (it could not run and was asked for, or
        it was interrupted: nothing changed)."""
        j = self.j
        j.trial = {
            "name": f"{self.project.name}-trial",
            "txn": f"{j.id}-trial",
            "file": str(j.files_dir / "trial.yml"),
            "snapshots": [],
            "clones": [],
            "state": "made",
            "verdict": "",
        }
        try:
            self.snapshot()
            self.clone()
            failures, judged = self.start_and_probe()
        except BaseException as e:  # noqa: BLE001 - Ctrl-C included: the trial is undone
            abort(self.project, j, self.pin_files, e, self.rep, self.backends)
        if failures and judged:
            j.trial["verdict"] = "failed"
            j.judged_bad = True
            j.reason = "the trial failed: " + "; ".join(failures)
            j.save()
            pause_point("trial-failed")
            finish_failed_trial(self.project, j, self.rep, self.backends)
        j.step("trial-removing")
        remove_trial(j, self.rep, self.backends)
        if failures:
            why = "; ".join(failures)
            if self.explicit:
                raise GuardError(
                    f"the trial could not run ({why}); the live version was not stopped, nothing was changed"
                )
            self.rep.warn(f"the trial could not run ({why}); upgrading without one")
            j.trial["verdict"] = "none"
        else:
            j.trial["verdict"] = "passed"
        j.step("trial-passed" if not failures else "trial-removed")

    # -- the steps -------------------------------------------------------------------------
    def snapshot(self) -> None:
        """Snapshot the unit's data while the old version runs. Datasets in more than one
        atomic group (several Btrfs subvolumes, several pools) are one moment only if the
        unit's running services are paused for the instant of the snapshots."""
        j, plan, t = self.j, self.plan, self.j.trial
        datasets = plan.datasets()
        j.step("trial-snapshotting")
        j.frozen = frozen_for_trial(plan)
        tags = tags_for(self.project, j, t["txn"], plan.unit)

        def made(snap: Snapshot) -> None:
            t["snapshots"].append(snap.to_json())

        what = "the trial's snapshots"
        snapshot_as_one_moment(
            self.project, j, datasets, tags, made, self.pin_files, self.rep, self.backends, what
        )
        j.frozen = []
        j.save()
        pause_point("trial-snapshotted")

    def clone(self) -> None:
        j, t = self.j, self.j.trial
        j.step("trial-cloning")
        snaps = [Snapshot.from_json(s) for s in t["snapshots"]]
        by_kind: dict[str, list[Snapshot]] = {}
        for s in snaps:
            by_kind.setdefault(s.dataset.backend, []).append(s)
        for kind, group in sorted(by_kind.items()):
            for c in self.backends(kind).clone(group, t["txn"]):
                if c.name not in [x["name"] for x in t["clones"]]:
                    t["clones"].append(c.to_json())
            j.save()
        clones = [Clone.from_json(c) for c in t["clones"]]
        model = build_model(self.plan, {c.dataset.name: c.files_at for c in clones})
        if model.refusals:  # the plan's check passed: the real clones must not change that
            raise ConfigError(model.refusals[0])
        text = yaml.safe_dump(model.doc, sort_keys=False, default_flow_style=False)
        fd = os.open(t["file"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        sizes = ", ".join(c.dataset.name for c in clones) or "no data"
        self.rep.step(f"trial: {t['name']} on clones of {sizes}")
        pause_point("trial-cloned")

    def start_and_probe(self) -> tuple[list[str], bool]:
        """Start the trial and probe the changed services as the upgrade would: (what failed,
        whether that is a verdict on the new images: one of them ran)."""
        j, t = self.j, self.j.trial
        j.step("trial-starting")
        t["state"] = "started"
        changed = sorted(j.changes)
        self.rep.step(f"trial: starting {', '.join(plan_images(j))} beside the live version")
        since = time.monotonic()
        proc = trial_compose(t, ["up", "--detach", "--no-build", "--pull", "missing", "--quiet-pull"])
        failures: list[str] = []
        if proc.returncode != 0:
            failures.append(
                f"docker compose up of the trial exited with {proc.returncode}: {last_line(proc.stderr, '?')}"
            )
        j.step("trial-probing")
        pause_point("trial-probing")
        results = probe_services(self.project, changed, self.rep, since=since, containers_of=t["name"])
        bad = [r for r in results if not r.ok]
        failures += [f"{r.service}: {r.detail}" for r in bad]
        ran = self._ran(changed)
        judged = bool(failures) and ran and not any(r.detail == DOCKERD_GONE for r in bad)
        for c in docker.project_containers(t["name"]):
            docker.save_logs(c.id, str(j.files_dir / f"trial.{c.service}.{c.name}.log"))
        return failures, judged

    def _ran(self, services: list[str]) -> bool:
        ids = [c.id for c in docker.project_containers(self.j.trial["name"]) if c.service in services]
        states = [
            (d.get("State") or {}).get("StartedAt") or NEVER_STARTED for d in docker.inspect_containers(ids)
        ]
        return any(s != NEVER_STARTED for s in states)


def atomic_group(d: Dataset) -> str:
    """One snapshot call is one moment for the datasets of one ZFS pool, not for two Btrfs
    subvolumes."""
    return f"zfs:{d.pool}" if d.backend == "zfs" else d.name


def frozen_for_trial(plan: Plan) -> list[str]:
    """The running unit members to pause for the instant of the trial's snapshots: those of
    a group of services that belong together (one depends on the other, within the unit, or
    they use the same dataset) whose data lies in more than one atomic group. An app and its
    database on two subvolumes are one moment; twenty independent services, each on its own
    subvolume, are each one moment already and are not paused."""
    member_groups = {s: {atomic_group(d) for d in plan.storage[s].datasets} for s in plan.unit}
    links = {s: set() for s in plan.unit}
    for s in plan.unit:
        for d in plan.project.services[s].depends_on:
            if d in links:
                links[s].add(d)
                links[d].add(s)
        for o in plan.unit:
            if o != s and member_groups[s] & member_groups[o]:
                links[s].add(o)
    frozen: list[str] = []
    seen: set[str] = set()
    for s in plan.unit:
        if s in seen:
            continue
        component, todo = set(), [s]
        while todo:
            x = todo.pop()
            if x not in component:
                component.add(x)
                todo += links[x] - component
        seen |= component
        if len(set().union(*(member_groups[x] for x in component))) > 1:
            frozen += [
                x for x in plan.unit if x in component and x in plan.running_now and plan.storage[x].protected
            ]
    return frozen


def plan_images(j: Journal) -> list[str]:
    return [f"{s} {short(c.new_digest or c.new_image_id or c.new_ref)}" for s, c in sorted(j.changes.items())]
