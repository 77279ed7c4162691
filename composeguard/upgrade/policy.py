"""What people expect of an auto-updater: a cooldown, notify-only, a veto, and what changed.

- ``min_age`` (``x-composeguard``, per service or for the project; ``COMPOSEGUARD_MIN_AGE``):
  ``update`` installs a new digest only once the registry has offered it that long. The age
  counts from when composeguard first saw that digest for that image (``seen.json`` in the
  project's state folder, written atomically), and not from before the image was built
  (its config's ``Created``). A digest that waits is no change. ``up`` by hand, and
  ``update SERVICE --now``, do not wait: a person asked.
- ``update: notify``: ``update`` says a new digest is there (hook, Apprise, metrics, JSON)
  and installs nothing.
- ``before`` (run in the service with ``docker compose exec``) and ``before_host`` (on the
  host): right before anything is stopped, a command exiting non-zero vetoes this upgrade.
- What changed: the OCI labels of both images (version, revision, source, url) and, when the
  source is on a known forge, its releases page.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from composeguard import execute
from composeguard.compose import docker, images
from composeguard.compose.project import Project
from composeguard.errors import CommandError, ExitCode, GuardError, last_line
from composeguard.report import Reporter, short
from composeguard.state import project_dir, read_json, write_json

log = logging.getLogger("composeguard.policy")

OCI = "org.opencontainers.image."
LABELS = ("version", "revision", "source", "url")
FORGES = ("https://github.com/", "https://gitlab.com/", "https://codeberg.org/")
VETO_TIMEOUT = 60.0  # seconds a before/before_host command may take; longer is a veto
SEEN_PER_IMAGE = 8  # digests remembered per image


# -- what changed ------------------------------------------------------------------------------
def oci_labels(info: images.ImageInfo | None) -> dict[str, str]:
    """The image's org.opencontainers.image.{version,revision,source,url} that it has."""
    if info is None:
        return {}
    found = dict(info.labels)
    return {k: found[OCI + k] for k in LABELS if found.get(OCI + k)}


def releases_page(labels: dict[str, str]) -> str:
    """``<source>/releases`` when the source is a repository on GitHub, GitLab or Codeberg."""
    source = labels.get("source", "").strip()
    source = source.removesuffix(".git").rstrip("/")
    if source.startswith("git@github.com:"):
        source = "https://github.com/" + source.split(":", 1)[1]
    if not source.startswith(FORGES) or source.count("/") < 4:
        return ""
    return source + ("/-/releases" if source.startswith("https://gitlab.com/") else "/releases")


def what_changed(old: images.ImageInfo | None, new: images.ImageInfo | None) -> dict[str, Any]:
    """``{"old": labels, "new": labels, "releases": url}``, keys only where there is something."""
    out: dict[str, Any] = {}
    before, after = oci_labels(old), oci_labels(new)
    if before:
        out["old"] = before
    if after:
        out["new"] = after
    page = releases_page(after) or releases_page(before)
    if page:
        out["releases"] = page
    return out


def describe(labels: dict[str, Any]) -> str:
    """``1.2.3 -> 1.2.4, https://github.com/o/r/releases`` (empty without labels)."""
    old = (labels.get("old") or {}).get("version", "")
    new = (labels.get("new") or {}).get("version", "")
    parts = [f"{old or '?'} -> {new or '?'}"] if old or new else []
    if labels.get("releases"):
        parts.append(str(labels["releases"]))
    return ", ".join(parts)


# -- the cooldown --------------------------------------------------------------------------------
def now_iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).replace(microsecond=0).isoformat()


def parse_iso(text: str) -> float | None:
    """Seconds since the epoch of an RFC 3339 time (Docker's nanoseconds cut); None if unparsable."""
    if not text or text.startswith("0001-"):
        return None
    t = text.strip().replace("Z", "+00:00")
    if "." in t:  # fromisoformat takes at most microseconds
        head, _, rest = t.partition(".")
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        t = f"{head}.{digits[:6]}{zone}"
    try:
        parsed = dt.datetime.fromisoformat(t)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


class SeenDigests:
    """When composeguard first saw each digest of each image: ``seen.json`` of the project,
    ``{image: {digest: first seen (epoch seconds)}}``, the newest few kept per image."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.path = project_dir(project, create=False) / "seen.json"
        self.data: dict[str, dict[str, float]] = {}
        self.changed = False
        try:
            exists = self.path.exists()
        except OSError:  # the state folder is root's (0700): plan by a docker-group user
            exists = False
        if exists:
            try:
                raw = read_json(self.path)
                self.data = {
                    str(img): {str(d): float(t) for d, t in digests.items()}
                    for img, digests in raw.items()
                    if isinstance(digests, dict)
                }
            except (GuardError, OSError, ValueError, AttributeError, TypeError) as e:
                log.warning("%s is unreadable (%s): every digest counts as first seen now", self.path, e)

    def knows(self, image: str, digest: str) -> bool:
        return digest in self.data.get(image, {})

    def first_seen(self, image: str, digest: str, now: float) -> float:
        digests = self.data.setdefault(image, {})
        if digest not in digests:
            digests[digest] = now
            self.changed = True
            for old in sorted(digests, key=digests.__getitem__)[:-SEEN_PER_IMAGE]:
                del digests[old]
        return digests[digest]

    def save(self) -> None:
        if self.changed:
            project_dir(self.project)  # creates the project's folder, private
            write_json(self.path, self.data)
            self.changed = False


@dataclass
class Waiting:
    """A new digest ``update`` does not install yet."""

    service: str
    digest: str
    first_seen: str
    installable_from: str
    min_age: float

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["min_age_seconds"] = out.pop("min_age")  # last, as before
        return out


@dataclass
class Held:
    """The changes ``update`` installs now, and those it does not (waiting, notify-only)."""

    install: dict[str, Any] = field(default_factory=dict)
    waiting: list[Waiting] = field(default_factory=list)
    available: dict[str, Any] = field(default_factory=dict)  # update: notify
    fresh: list[str] = field(default_factory=list)  # of those, seen for the first time: tell once


def hold_back(
    project: Project, changes: dict[str, Any], now_for: set[str] | None = None, record: bool = True
) -> Held:
    """Sort ``changes`` (service -> planner.Change) into what ``update`` installs now, what waits
    for its ``min_age`` and what is only to be told (``update: notify``). ``now_for``: the
    services ``update --now`` names. ``record``: write down digests seen for the first time
    (``plan`` reads without writing)."""
    held = Held()
    now = time.time()
    seen = SeenDigests(project.name)
    for svc, c in changes.items():
        eff = project.settings.for_service(project.services[svc].settings)
        digest = c.new_digest or c.new_image_id or ""
        if now_for is not None and svc in now_for:
            held.install[svc] = c
            continue
        if eff.update == "notify":
            held.available[svc] = c
            image = project.services[svc].image or c.new_ref
            if digest and not seen.knows(image, digest):
                held.fresh.append(svc)
                seen.first_seen(image, digest, now)
            continue
        if eff.min_age <= 0 or not digest:
            held.install[svc] = c
            continue
        first = seen.first_seen(project.services[svc].image or c.new_ref, digest, now)
        built = parse_iso(c.new_created) if c.new_created else None
        ready = max(first, built or 0.0) + eff.min_age
        if now >= ready:
            held.install[svc] = c
        else:
            held.waiting.append(Waiting(svc, digest, now_iso(first), now_iso(ready), eff.min_age))
    if record:
        try:
            seen.save()
        except (OSError, GuardError) as e:  # the cooldown then restarts; never a reason to fail
            log.warning("could not write %s: %s", seen.path, e)
    return held


def tell_waiting(held: Held, rep: Reporter) -> None:
    for w in held.waiting:
        rep.verbose(f"{w.service}: {short(w.digest)} waits (min_age) until {w.installable_from}")
    for svc, c in sorted(held.available.items()):  # said once per digest (cron mails what is printed)
        say = rep.step if svc in held.fresh else rep.verbose
        say(f"{svc}: {short(c.new_digest or c.new_image_id)} is available (update: notify; not installed)")


# -- the veto ------------------------------------------------------------------------------------
class Vetoed(GuardError):
    """A ``before``/``before_host`` command said no: nothing was changed. Exit 2 for ``up``
    (it did not do what was asked); ``update`` skips the project tonight with exit 0."""

    exit_code = ExitCode.USAGE


def run_vetoes(project: Project, services: list[str], pin_files: list[str], rep: Reporter) -> None:
    """Run each changing service's ``before`` (in its container) and ``before_host`` (on the
    host; the project's once), time-limited. Raises Vetoed at the first that exits non-zero."""
    host_done: set[tuple[str, ...]] = set()
    for svc in services:
        eff = project.settings.for_service(project.services[svc].settings)
        if eff.before:
            args = ["exec", "-T", svc, *eff.before]
            _veto(
                lambda a=args: docker.compose(
                    project, a, extra_files=pin_files, capture=True, check=False, timeout=VETO_TIMEOUT
                ),
                f"{svc}'s before command",
                rep,
            )
        if eff.before_host and eff.before_host not in host_done:
            host_done.add(eff.before_host)
            cmd = list(eff.before_host)
            _veto(
                lambda c=cmd: execute.run(c, capture=True, check=False, timeout=VETO_TIMEOUT),
                f"the before_host command {cmd[0]} (for {svc})",
                rep,
            )


def _veto(run: Callable[[], subprocess.CompletedProcess[str]], who: str, rep: Reporter) -> None:
    rep.verbose(f"asking {who}")
    try:
        proc = run()
    except CommandError as e:
        why = f"did not answer within {VETO_TIMEOUT:.0f} s" if e.returncode == 124 else f"could not run ({e})"
        raise Vetoed(f"the upgrade was vetoed: {who} {why}; nothing was changed") from e
    if proc.returncode != 0:
        said = last_line(proc.stdout, "") or last_line(proc.stderr, "") or "no output"
        raise Vetoed(f"the upgrade was vetoed by {who} (exit {proc.returncode}: {said}); nothing was changed")
