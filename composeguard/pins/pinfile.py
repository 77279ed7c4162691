"""Pins: the old digest a service must run, and the digests that failed.

The pin file is a plain compose override (``services.<name>.image: repo@sha256:…``) with the
reasons under ``x-composeguard-pins``, so a user can read it and even pass it to compose by
hand. composeguard passes an *applied* copy holding only the services the project still has:
an override for a service that was removed would otherwise make compose create it.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from composeguard.errors import GuardError
from composeguard.state import make_private_dir, project_dir, write_atomic, write_with_spare

HEADER = """\
# composeguard pins for project {project}.
# A pinned service runs the image below instead of its compose file's tag, because the
# newer digest failed its probe. `composeguard pins` lists them; `composeguard unpin SERVICE`
# releases one. This file is a plain compose override.
"""


@dataclass
class BadDigest:
    digest: str
    reason: str
    date: str
    txn: str


@dataclass
class Pin:
    service: str
    image: str  # what to run: repo@sha256:… (or a composeguard tag for a local build)
    since: str
    txn: str
    bad: list[BadDigest] = field(default_factory=list)


@dataclass
class ReleasedPin:
    """A pin that no longer holds, kept for ``pins --history``: what ran, why it was pinned
    (its bad digests) and how it ended."""

    service: str
    image: str
    since: str
    txn: str
    bad: list[BadDigest]
    released: str
    why: str


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class PinFile:
    def __init__(self, project: str) -> None:
        self.project = project
        self.dir = project_dir(project, create=False)
        self.path = self.dir / "pins.yaml"
        self.applied_path = self.dir / "pins.applied.yaml"
        self.history_path = self.dir / "pins.history.json"
        self.pins: dict[str, Pin] = {}
        self._released: list[ReleasedPin] = []
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            doc = yaml.safe_load(self.path.read_text()) or {}
            meta = doc.get("x-composeguard-pins") or {}
            for svc, m in meta.items():
                self.pins[svc] = Pin(
                    service=svc,
                    image=str(m["image"]),
                    since=str(m.get("since", "")),
                    txn=str(m.get("txn", "")),
                    bad=[BadDigest(**b) for b in m.get("bad") or []],
                )
        except (yaml.YAMLError, AttributeError, KeyError, TypeError, UnicodeDecodeError) as e:
            mark = getattr(e, "problem_mark", None)
            detail = (
                f"{getattr(e, 'problem', None) or 'YAML error'} at line {mark.line + 1}"
                if mark is not None
                else str(e).splitlines()[0]
                if str(e)
                else type(e).__name__
            )
            raise GuardError(
                f"the pin file {self.path} is corrupt ({detail}); fix or remove it (nothing was changed)"
            ) from e

    def render(self, services: set[str] | None = None) -> str:
        chosen = {s: p for s, p in sorted(self.pins.items()) if services is None or s in services}
        doc: dict[str, Any] = {"services": {s: {"image": p.image} for s, p in chosen.items()}}
        doc["x-composeguard-pins"] = {
            s: {k: v for k, v in asdict(p).items() if k != "service"} for s, p in chosen.items()
        }
        return HEADER.format(project=self.project) + yaml.safe_dump(doc, sort_keys=False)

    def save(self) -> None:
        if self._released:  # first: a pin is never gone from both files
            make_private_dir(self.dir)
            doc = [asdict(r) for r in self.history() + self._released]
            write_atomic(self.history_path, json.dumps(doc, indent=2) + "\n")
            self._released = []
        if self.pins:
            make_private_dir(self.dir)
            write_atomic(self.path, self.render())
        else:
            self.path.unlink(missing_ok=True)
            self.applied_path.unlink(missing_ok=True)  # no stale overlay once the last pin is gone

    def history(self) -> list[ReleasedPin]:
        """The pins released so far (by ``unpin`` or a new digest that passed), oldest first."""
        if not self.history_path.exists():
            return []
        try:
            doc = json.loads(self.history_path.read_text())
            return [
                ReleasedPin(**{**r, "bad": [BadDigest(**b) for b in r.get("bad") or []]}) for r in doc
            ]
        except (ValueError, TypeError, AttributeError) as e:
            raise GuardError(
                f"the pin history {self.history_path} is corrupt ({e}); fix or remove it"
            ) from e

    def pin(self, service: str, image: str, txn: str, bad_digest: str | None, reason: str) -> None:
        old = self.pins.get(service)
        bad = list(old.bad) if old else []
        if bad_digest and all(b.digest != bad_digest for b in bad):
            bad.append(BadDigest(digest=bad_digest, reason=reason, date=now_iso(), txn=txn))
        self.pins[service] = Pin(service=service, image=image, since=now_iso(), txn=txn, bad=bad)

    @classmethod
    def unreadable(cls, project: str) -> PinFile:
        """No pins known: for a user who cannot read root's state dir (nothing is written)."""
        pf = cls.__new__(cls)
        pf.project, pf.pins = project, {}
        pf.dir = Path("/nonexistent")
        pf.path, pf.applied_path = pf.dir / "pins.yaml", pf.dir / "pins.applied.yaml"
        pf.history_path, pf._released = pf.dir / "pins.history.json", []
        return pf

    def without(self, services: set[str]) -> PinFile:
        """A copy (for this run only) with the pins of ``services`` lifted."""
        copy = PinFile.__new__(PinFile)
        copy.project, copy.dir, copy.path, copy.applied_path = (
            self.project,
            self.dir,
            self.path,
            self.applied_path,
        )
        copy.history_path, copy._released = self.history_path, []
        copy.pins = {s: p for s, p in self.pins.items() if s not in services}
        return copy

    def unpin(self, service: str, why: str) -> bool:
        """Release SERVICE's pin (``why``: by hand, or the digest that passed); its quarantine
        record moves to the history on ``save()``."""
        pin = self.pins.pop(service, None)
        if pin is None:
            return False
        self._released.append(
            ReleasedPin(pin.service, pin.image, pin.since, pin.txn, pin.bad, now_iso(), why)
        )
        return True

    def image_for(self, service: str) -> str | None:
        p = self.pins.get(service)
        return p.image if p else None

    def applied_file(self, services: set[str], spare_dir: Path | None = None) -> list[str]:
        """The ``-f`` file to add to compose commands ([] when no pin applies). ``spare_dir``:
        where to write it instead when the state dir cannot take it (a full disk during a
        rollback, which must still start the old version)."""
        if not any(s in services for s in self.pins):
            if self.dir.is_dir():  # not readable for a user without root: nothing to remove
                self.applied_path.unlink(missing_ok=True)
            return []
        spare = spare_dir / "projects" / self.project / self.applied_path.name if spare_dir else None
        return [str(write_with_spare(self.applied_path, self.render(services), spare))]


def pinned_projects(state_root: Path) -> list[str]:
    return sorted(p.parent.name for p in (state_root / "projects").glob("*/pins.yaml"))
