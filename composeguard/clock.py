"""The clocks composeguard measures time with, injectable so that tests can step them.

Every duration (a probe's deadline, a settle window, a retry's timeout) is measured on the
monotonic clock. The wall clock is read only to compare with Docker's own wall-clock
timestamps (``State.StartedAt``), once per container. The nightly timer has ``Persistent=``,
so it fires right after boot, which is also when NTP may step the wall clock by hours: a
deadline in wall time would then fail a good image at once or wait for ever, and an age in
wall time would call a container that has run for 1 s "stable".
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple


def _sleep(seconds: float) -> None:
    """``time.sleep`` looked up at each call (as tenacity's default ``nap.sleep`` does)."""
    time.sleep(seconds)


class Instant(NamedTuple):
    """One moment on both clocks, read together."""

    mono: float
    wall: float


@dataclass(frozen=True)
class Clock:
    wall: Callable[[], float] = time.time
    mono: Callable[[], float] = time.monotonic
    # what the pollers sleep on (tenacity's ``sleep=``): a fake clock advances itself there
    sleep: Callable[[float], None] = field(default=_sleep)

    def now(self) -> Instant:
        return Instant(mono=self.mono(), wall=self.wall())


SYSTEM = Clock()
