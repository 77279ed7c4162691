"""Carrying a provision plan out, step by step, journaled; and finishing or undoing one that
was interrupted (``recover``)."""


from __future__ import annotations

import os
import stat

from composeguard import execute
from composeguard.compose.project import Project
from composeguard.dockercli import docker_binary
from composeguard.errors import ConfigError, GuardError
from composeguard.faults import pause_point
from composeguard.provision.plan import ASIDE_INFIX, Move, ProvisionPlan
from composeguard.report import Reporter, mib
from composeguard.storage import newdataset, safedir
from composeguard.storage.pathrestore import copy_dir_metadata
from composeguard.storage.treecopy import copy_entries, remove_tree
from composeguard.storage.treediff import snapshot_tree, tree_differences
from composeguard.upgrade.journal import COMMITTED, ROLLED_BACK, Journal


def apply(project: Project, plan: ProvisionPlan, rep: Reporter, keep_old: bool) -> int:
    """Carry out ``plan`` under the project's lock (the caller holds it)."""
    if plan.refusals:
        raise ConfigError(f"cannot provision: {plan.refusals[0]}; nothing was changed")
    if not plan.moves:
        rep.step("nothing to provision: " + ("; ".join(plan.skipped) or "no data volumes"))
        return 0
    j = Journal.new(project.name, "provision")
    for m in plan.moves:
        m.aside = _aside_of(m.path, j.id)
    j.provision = {
        "moves": [m.to_json() for m in plan.moves],
        "containers": [c.id for c in plan.containers],
        "names": {c.id: c.describe() for c in plan.containers},
        "keep_old": keep_old,
    }
    j.step("provision-planned")
    try:
        _stop(j, rep)
        for i, m in enumerate(plan.moves):
            _move(j, i, m, rep)
        pause_point("provision-verified")
    except BaseException as e:
        reason = "interrupted" if isinstance(e, KeyboardInterrupt) else str(e)
        j.reason = reason
        _undo(j, rep)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise GuardError(f"provision failed ({reason}) and was undone: the data is where it was") from e
    _finish(j, rep)
    return 0


def _aside_of(path: str, txn: str) -> str:
    return f"{path.rstrip('/')}{ASIDE_INFIX}{txn}"


def _moves(j: Journal) -> list[Move]:
    return [Move.from_json(d) for d in j.provision.get("moves") or []]


def _save_move(j: Journal, i: int, m: Move, done: str) -> None:
    m.done.append(done)
    j.provision["moves"][i] = m.to_json()
    j.save()


def _stop(j: Journal, rep: Reporter) -> None:
    ids = j.provision["containers"]
    if ids:
        j.step("stopping", containers=ids)
        rep.step(f"stopping {len(ids)} container(s) that use the folders")
        execute.run([docker_binary(), "stop", *ids], timeout=600)
    pause_point("provision-stopped")


def _move(j: Journal, i: int, m: Move, rep: Reporter) -> None:
    parent_dir, base = os.path.split(m.path)
    j.step("moving-aside", path=m.path, aside=m.aside)
    pfd = safedir.open_dir(parent_dir)
    try:
        safedir.rename(pfd, base, pfd, os.path.basename(m.aside), f"{m.path} aside")
    finally:
        os.close(pfd)
    _save_move(j, i, m, "aside")
    pause_point("provision-aside")
    j.step("creating", dataset=m.name, properties=m.properties)
    rep.step(f"creating {m.parent.backend} {m.name} at {m.path}")
    newdataset.create(m.parent, m.path, m.name, m.properties, j.id)
    _save_move(j, i, m, "created")
    pause_point("provision-created")
    j.step("copying", path=m.path, method=m.method)
    rep.step(f"moving the data of {m.path} in ({m.method}{', ' + mib(m.size) if m.size else ''})")
    names = os.listdir(m.aside)
    if names:
        copy_entries(m.aside, names, m.path, method="reflink" if m.method == "reflink" else "copy")
    fd = safedir.open_dir(m.path)
    try:
        copy_dir_metadata(m.aside, fd, keep=(newdataset.BTRFS_TAG,))
    finally:
        os.close(fd)
    _save_move(j, i, m, "copied")
    pause_point("provision-copied")
    j.step("verifying", path=m.path)
    diffs = verify(m)
    if diffs:
        raise GuardError(f"the copy of {m.path} differs from the original: {diffs[0]}")
    _save_move(j, i, m, "verified")


def verify(m: Move) -> list[str]:
    """Where the new dataset's tree differs from the original's (every field a copy must keep:
    types, bytes, owners, modes, mtimes, xattrs and ACLs, links; not atimes, and not where the
    filesystem keeps holes, which ZFS compression decides for itself)."""
    old = snapshot_tree(m.aside, atime=False)
    new = snapshot_tree(m.path, atime=False)
    new[b""]["xattrs"].pop(newdataset.BTRFS_TAG, None)
    return tree_differences(old, new, ignore=("data",))


def _start(j: Journal, rep: Reporter) -> None:
    ids = j.provision.get("containers") or []
    if ids:
        j.step("starting", containers=ids)
        rep.step(f"starting {len(ids)} container(s) again")
        execute.run([docker_binary(), "start", *ids], timeout=600)


def _finish(j: Journal, rep: Reporter) -> None:
    """Every copy is verified: run the containers on the new datasets, then drop the originals."""
    _start(j, rep)
    pause_point("provision-started")
    moves = _moves(j)
    if not j.provision.get("keep_old"):
        for m in moves:
            j.step("removing-old", path=m.aside)
            remove_tree(m.aside)
    for m in moves:
        kept = f" (the original is kept at {m.aside})" if j.provision.get("keep_old") else ""
        rep.step(f"provisioned {m.path}: now {m.parent.backend} {m.name}{kept}")
    j.finish(COMMITTED)


def _undo(j: Journal, rep: Reporter) -> None:
    """Put every folder back where it was (new datasets destroyed, originals renamed back), then
    start the containers that were running. Each step checks the disk first: runs again."""
    for m in reversed(_moves(j)):
        j.step("undoing", path=m.path)
        if newdataset.created_by(m.parent, m.path, m.name, j.id):
            newdataset.destroy(m.parent, m.path, m.name, j.id)
        if os.path.lexists(m.aside):
            parent_dir, base = os.path.split(m.path)
            pfd = safedir.open_dir(parent_dir)
            try:
                left = safedir.entry(pfd, base)
                if left is not None and stat.S_ISDIR(left.st_mode) and not os.listdir(m.path):
                    os.rmdir(base, dir_fd=pfd)  # an empty folder a failed creation left
                elif left is not None:
                    raise GuardError(
                        f"cannot put {m.path} back: something new is in its place ({m.aside} holds the data)"
                    )
                safedir.rename(pfd, os.path.basename(m.aside), pfd, base, f"{m.aside} back")
            finally:
                os.close(pfd)
        rep.step(f"undone: {m.path} is the folder it was")
    _start(j, rep)
    j.finish(ROLLED_BACK, j.reason or "undone")


def recover_provision(j: Journal, rep: Reporter) -> int:
    """Finish an interrupted provision when every copy was verified, else undo it."""
    moves = _moves(j)
    if moves and all("verified" in m.done for m in moves):
        rep.step(f"recovering provision {j.id}: every copy was verified, finishing it")
        _finish(j, rep)
    else:
        rep.step(f"recovering provision {j.id}, interrupted at '{j.phase}': undoing it")
        j.reason = j.reason or f"interrupted at '{j.phase}'"
        _undo(j, rep)
    return 0
