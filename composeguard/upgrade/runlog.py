"""A log file per guarded run, in the transaction's folder of the state directory."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RunLogHandler(logging.FileHandler):
    """A run log that goes quiet when it cannot be written (a full disk): the transaction and
    its rollback go on; the terminal and the journal still say what happened."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.close()
        logging.getLogger("composeguard").removeHandler(self)


@contextmanager
def run_log(path: Path) -> Iterator[None]:
    """Log every line of the run (debug included) to ``path`` for as long as it lasts: under
    ``update --all`` each project's run.log holds its own lines only."""
    handler = RunLogHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger("composeguard")
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    path.chmod(0o600)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()
