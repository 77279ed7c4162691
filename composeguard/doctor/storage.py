"""doctor's storage checks: where each data volume lives, whether an upgrade can snapshot and
restore it (whole, or by directory when the dataset is shared), the record size and
compression its workload wants, and the free space the next upgrade needs."""

from __future__ import annotations

import os

from composeguard import execute
from composeguard.compose import docker
from composeguard.compose.project import Project
from composeguard.doctor.findings import Finding
from composeguard.doctor.workload import Recommendation, recommend
from composeguard.errors import StorageError
from composeguard.report import mib, size_text
from composeguard.storage.base import Dataset
from composeguard.storage.btrfs_subvolume import SUBVOLUME_ROOT_INO
from composeguard.storage.resolve import Protected, ServiceStorage, StorageMapper
from composeguard.upgrade.plan_storage import classify_datasets, outside_writers
from composeguard.upgrade.planner import Plan

AREA = "storage"


def zfs_properties(names: list[str]) -> dict[str, dict[str, str]]:
    """dataset -> {recordsize, compression}, one ``zfs get`` for all of them."""
    if not names:
        return {}
    proc = execute.run(
        ["zfs", "get", "-H", "-p", "-o", "name,property,value", "recordsize,compression", *names], check=False
    )
    out: dict[str, dict[str, str]] = {}
    for line in proc.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3:
            out.setdefault(parts[0], {})[parts[1]] = parts[2]
    return out


def check_storage(project: Project, services: list[str], mapper: StorageMapper) -> list[Finding]:
    running: dict[str, list[tuple[str, str, str, str]]] = {}
    for c in docker.project_containers(project.name):
        running.setdefault(c.service, []).extend(c.mounts)
    storage = {s: mapper.for_service(project.services[s], running.get(s, ())) for s in services}
    datasets = {p.dataset.name: p.dataset for st in storage.values() for p in st.protected}
    uses = docker.all_container_uses() if datasets else []
    root_dir = docker.data_root() if datasets else ""
    props = zfs_properties([d.name for d in datasets.values() if d.backend == "zfs"])
    findings: list[Finding] = []
    for s in services:
        findings += _service(project, s, storage[s], mapper, uses, root_dir, props)
        if storage[s].protected:  # its data goes back on a rollback: who could write to it then
            alone = Plan(project, [s], {}, {}, unit=[s], storage=storage)
            fix = "stop it around upgrades of this project, or keep it off this service's networks"
            findings += [Finding(s, AREA, "warning", w, fix) for w in outside_writers(alone, uses)]
    findings += _free_space(project, list(datasets.values()), mapper)
    return findings


def _service(
    project: Project,
    s: str,
    st: ServiceStorage,
    mapper: StorageMapper,
    uses: list[docker.ContainerUse],
    root_dir: str,
    props: dict[str, dict[str, str]],
) -> list[Finding]:
    svc = project.services[s]
    eff = project.settings.for_service(svc.settings)
    out: list[Finding] = []
    for u in st.unprotected:
        allowed = eff.unprotected == "allow"
        out.append(
            Finding(
                s,
                AREA,
                "warning" if allowed else "error",
                f"{u.target}: not protected: {u.reason}"
                + (" (allowed by unprotected: allow)" if allowed else "; an upgrade of it is refused"),
                "keep the data in a folder on a ZFS dataset or Btrfs subvolume and bind-mount that",
            )
        )
    if not st.protected and not st.unprotected:
        out.append(Finding(s, AREA, "ok", "no data volumes: nothing to snapshot"))
    for p in st.protected:
        path = os.path.realpath(p.path)
        own = path == os.path.realpath(p.dataset.files_at)
        if own:
            what = f"{p.target}: {p.dataset.backend} {p.dataset.name}, its own: restored whole"
            out.append(Finding(s, AREA, "ok", what))
        else:
            out += _shared(project, s, p, st, mapper, uses, root_dir)
        rec = recommend(svc.image, p.target)
        out += _tuning(s, p, rec, own, props.get(p.dataset.name, {}))
    return out


def _shared(
    project: Project,
    s: str,
    p: Protected,
    st: ServiceStorage,
    mapper: StorageMapper,
    uses: list[docker.ContainerUse],
    root_dir: str,
) -> list[Finding]:
    """A folder in a bigger dataset: who else is in it, and how a rollback would put it back."""
    plan = Plan(project, [s], {}, {}, unit=[s], storage={s: ServiceStorage(s, [p])})
    use = classify_datasets(plan, mapper, uses=uses, root_dir=root_dir)[p.dataset.name]
    d = p.dataset
    if use.conflicts:
        return [Finding(s, AREA, "error", f"{p.target}: cannot be guarded: {use.conflicts[0]}", "")]
    fix = f"composeguard provision {s} --apply (a dataset of its own at {p.path})"
    if use.exclusive and not use.whole_refused:
        what = f"{p.target}: in {d.name}, which holds nothing else: restored whole"
        return [Finding(s, AREA, "hint", what, fix)]
    others = "; ".join(use.others[:3]) + (f" and {len(use.others) - 3} more" if len(use.others) > 3 else "")
    how = use.method + (f", {mib(use.size)}" if use.method == "copy" else "")
    return [
        Finding(
            s,
            AREA,
            "warning",
            f"{p.target}: shares {d.backend} {d.name} ({others or use.whole_refused}): a rollback restores "
            f"only {p.path}, by {how}",
            fix,
        )
    ]


def _tuning(
    s: str, p: Protected, rec: Recommendation, own: bool, zprops: dict[str, str]
) -> list[Finding]:
    d = p.dataset
    out: list[Finding] = []
    if d.backend == "zfs":
        have = int(zprops.get("recordsize") or 0)
        want = size_text(rec.recordsize)
        if have and have != rec.recordsize:
            fix = (
                f"zfs set recordsize={size_text(rec.recordsize)} {d.name} (new writes only: the files "
                f"written so far keep {size_text(have)} until rewritten)"
                if own
                else f"composeguard provision {s} --apply (makes it with recordsize={want})"
            )
            out.append(
                Finding(
                    s,
                    AREA,
                    "warning",
                    f"{p.target}: recordsize {size_text(have)} on {d.name}; {rec.workload} wants "
                    f"{size_text(rec.recordsize)} ({rec.reason})",
                    fix,
                )
            )
        elif have:
            out.append(Finding(s, AREA, "ok", f"{p.target}: recordsize {want} suits {rec.workload}"))
        if zprops.get("compression") == "off":
            what = f"{p.target}: compression is off on {d.name}"
            out.append(Finding(s, AREA, "hint", what, f"zfs set compression=lz4 {d.name}"))
        return out
    # Btrfs: no record size. A database subvolume can do without copy-on-write for its files
    # (snapshots still work), but the flag only takes on files created after it is set.
    if rec.database and own and _empty_subvolume(p.path):
        out.append(
            Finding(
                s,
                AREA,
                "hint",
                f"{p.target}: {d.name} is an empty subvolume for {rec.workload}",
                f"chattr +C {p.path} before the database writes (no copy-on-write; snapshots still work)",
            )
        )
    if not rec.database and rec.recordsize < (1 << 20) and not _btrfs_compressed(d, p.path):
        out.append(
            Finding(
                s,
                AREA,
                "hint",
                f"{p.target}: {d.name} is not compressed",
                f"btrfs property set {p.path} compression zstd (applies to new writes)",
            )
        )
    return out


def _empty_subvolume(path: str) -> bool:
    try:
        return os.lstat(path).st_ino == SUBVOLUME_ROOT_INO and not os.listdir(path)
    except OSError:
        return False


def _btrfs_compressed(d: Dataset, path: str) -> bool:
    proc = execute.run(["btrfs", "property", "get", path, "compression"], check=False)
    if proc.returncode == 0 and proc.stdout.strip():
        return True
    opts = ",".join(m.options + "," + m.super_options for m in _mounts_of(d))
    return "compress" in opts


def _mounts_of(d: Dataset) -> list:
    from composeguard.storage.mounts import read_mounts

    return [m for m in read_mounts() if m.source == d.pool and m.fstype == "btrfs"]


def _free_space(project: Project, datasets: list[Dataset], mapper: StorageMapper) -> list[Finding]:
    """The pre-flight's own free-space check: it refuses an upgrade below ``min_free``."""
    out: list[Finding] = []
    for d in datasets:
        try:
            mapper.backend(d.backend).check_free_space([d], project.settings.min_free)
        except StorageError as e:
            out.append(
                Finding(
                    "",
                    AREA,
                    "error",
                    f"{e}: the next upgrade is refused",
                    "free space, or release old snapshots (composeguard history shows the kept ones)",
                )
            )
    return out
