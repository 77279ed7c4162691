"""Progress lines a person can follow: one line per step with the time since the start.

Lines go to stderr (compose's own output is passed through unchanged); every line is also
logged, so it lands in the run's log file in the state directory.
"""

from __future__ import annotations

import logging
import sys
import time

log = logging.getLogger("composeguard")


class Reporter:
    def __init__(self, quiet: bool = False, verbose: bool = False) -> None:
        self.t0 = time.monotonic()
        self.quiet = quiet
        self.verbose_on = verbose

    def verbose(self, message: str) -> None:
        """A line shown only with -v (the nightly job is silent when nothing changes)."""
        log.info(message)
        if self.verbose_on:
            print(f"composeguard: {message}", file=sys.stderr, flush=True)

    def step(self, message: str) -> None:
        line = f"composeguard [{time.monotonic() - self.t0:6.1f}s] {message}"
        log.info(message)
        if not self.quiet:
            print(line, file=sys.stderr, flush=True)

    def warn(self, message: str) -> None:
        log.info("warning: %s", message)  # printed below; the run log keeps it too
        print(f"composeguard: warning: {message}", file=sys.stderr, flush=True)


def short(ref: str | None) -> str:
    """'repo@sha256:0123456789ab…' -> 'sha256:0123456789ab' for one-line reports."""
    if not ref:
        return "(none)"
    digest = ref.split("@", 1)[1] if "@" in ref else ref
    return digest[:19] if digest.startswith("sha256:") else digest


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def size_text(n: int) -> str:
    """A record size the way ZFS writes it: 8K, 128K, 1M."""
    return f"{n >> 20}M" if n >= 1 << 20 and n % (1 << 20) == 0 else f"{n >> 10}K"
