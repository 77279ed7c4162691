"""A log file per guarded run, in the transaction's folder of the state directory."""

from __future__ import annotations

import logging
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def attach_run_log(path: Path) -> None:
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger("composeguard")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    path.chmod(0o600)
