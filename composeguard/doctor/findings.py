"""What a check reports: findings with a severity, grouped by service, and the exit code."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# Worst first. ``error``: an upgrade is not (or cannot be) guarded as the user expects, or
# something will fail; ``warning``: guarded, but slower, bigger or riskier than it need be;
# ``hint``: worth knowing, nothing wrong; ``ok``: a check that passed (shown with -v / --json).
SEVERITIES = ("error", "warning", "hint", "ok")

# doctor's own codes, beside the README's table (2 stays "usage or configuration error").
EXIT_CLEAN = 0  # nothing wrong (hints may be printed)
EXIT_WARNINGS = 6  # warnings, no error
EXIT_ERRORS = 7  # at least one error


@dataclass(frozen=True)
class Finding:
    service: str  # "" for what concerns the project or the host as a whole
    area: str  # storage | network | gpu | cpu | state
    severity: str  # one of SEVERITIES
    message: str  # what is the case, one line
    fix: str = ""  # what to do about it, one line ("" when nothing is to be done)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def exit_code(findings: list[Finding]) -> int:
    severities = {f.severity for f in findings}
    if "error" in severities:
        return EXIT_ERRORS
    return EXIT_WARNINGS if "warning" in severities else EXIT_CLEAN
