"""doctor's state checks: what composeguard itself holds for the project (an unfinished
transaction, pins and the digests they quarantine, the snapshots retention keeps)."""

from __future__ import annotations

from composeguard.doctor.findings import Finding
from composeguard.pins.pinfile import PinFile
from composeguard.upgrade.journal import COMMITTED, Journal

AREA = "state"


def check_state(project: str, retention: int) -> list[Finding]:
    out: list[Finding] = []
    journals = Journal.all(project)
    j = next((x for x in reversed(journals) if x.is_unfinished), None)
    if j is not None:
        out.append(
            Finding("", AREA, "error", f"{j.left_undone()}: guarded runs are refused", "composeguard recover")
        )
    for service, pin in sorted(PinFile(project).pins.items()):
        bad = ", ".join(b.digest for b in pin.bad) or "none recorded"
        out.append(
            Finding(
                service,
                AREA,
                "warning",
                f"pinned to {pin.image} since {pin.since} after a failed upgrade (quarantined: {bad})",
                f"composeguard unpin {service} once a fixed image is out (update releases it by itself)",
            )
        )
    kept = [x for x in journals if x.outcome == COMMITTED and x.snapshots and not x.snapshots_released]
    if kept:
        snaps = sum(len(x.snapshots) for x in kept)
        out.append(
            Finding(
                "",
                AREA,
                "hint",
                f"{snaps} snapshot(s) of {len(kept)} committed upgrade(s) kept for `composeguard rollback` "
                f"(retention: the last {retention})",
                "",
            )
        )
    return out
