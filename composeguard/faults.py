"""Named pause points for the fault-injection tests.

With ``COMPOSEGUARD_TEST_PAUSE_AT=<point>`` a guarded run stops at that point of the
transaction, writes its pid to ``COMPOSEGUARD_TEST_PAUSE_FILE`` and waits, so that a test can
SIGKILL the real process exactly there. Without the variable this is a no-op.
"""

from __future__ import annotations

import os
import time

POINTS = (
    "locked",  # the project lock is held, nothing else happened
    "stopped",  # the changing services are stopped, no snapshot yet
    "between-snapshots",  # the first dataset is snapshotted, the others not yet
    "snapshotted",  # every dataset is snapshotted
    "starting",  # `docker compose up` of the new version is about to run
    "probing",  # the new version runs and is being probed
    "restoring",  # rollback: the unit is stopped, the data not yet restored
    "restored-one",  # rollback: the first dataset is restored, the others not yet
    "pinned",  # rollback: the pins are written, the old version not yet started
)
# Steps of a directory-level restore of a shared dataset (storage/pathrestore.py); reached
# only when the unit's data lives in a dataset that other data shares.
DIR_POINTS = (
    "failed-snapshotted",  # the failed state is kept as a snapshot; no path touched yet
    "dir-copied",  # the first path's copy is complete in its staging directory, not swapped in
    "dir-swapped",  # the first path (or entry) is swapped in; the others not yet
)

# Steps of a trial run (upgrade/trial.py): the live version has not been stopped at any of them.
TRIAL_POINTS = (
    "trial-snapshotted",  # the trial's snapshots exist, no clone yet
    "trial-cloned",  # the clones exist and the trial's compose file is written, nothing started
    "trial-probing",  # the trial's containers run on the clones and are being probed
    "trial-failed",  # the verdict (failed) is journaled; the trial not torn down, nothing pinned
)

# Steps of `provision --apply` (provision.py).
PROVISION_POINTS = (
    "provision-stopped",  # the containers using the folders are stopped, nothing moved yet
    "provision-aside",  # the first folder is renamed aside, no dataset made yet
    "provision-created",  # its new dataset exists (empty) at the folder's path
    "provision-copied",  # the data is copied in, not verified
    "provision-verified",  # every copy is verified, the containers not started yet
    "provision-started",  # the containers run again, the old copies not deleted yet
)


def pause_point(name: str) -> None:
    if os.environ.get("COMPOSEGUARD_TEST_PAUSE_AT") != name:
        return
    marker = os.environ.get("COMPOSEGUARD_TEST_PAUSE_FILE")
    if marker:
        # whole or not at all: the test reads the pid as soon as the file exists
        with open(f"{marker}.tmp", "w", encoding="utf-8") as f:
            f.write(f"{os.getpid()}\n")
        os.replace(f"{marker}.tmp", marker)
    time.sleep(float(os.environ.get("COMPOSEGUARD_TEST_PAUSE_SECONDS", "600")))
