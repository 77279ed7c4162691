#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine (as root): installs and starts the lab,
# then runs lint, the unit tests, the end-to-end tests on the lab, and the ZFS tests inside
# the OpenZFS guest. Safe to run again. Exits non-zero when any test fails.
#   COMPOSEGUARD_SKIP_ZFS=1 lab/test.sh   skips the ZFS guest (for a quick local run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONDONTWRITEBYTECODE=1

step() { printf '\n== %s\n' "$*"; }

step "lab: packages, dockerd, registry, Btrfs pool, images"
if [ "${COMPOSEGUARD_SKIP_ZFS:-0}" != 1 ]; then
    bash lab/install-packages.sh --zfs
fi
bash lab/lab.sh up

step "lint (ruff)"
.venv/bin/ruff check composeguard tests bench

step "unit tests (no root, no Docker needed)"
.venv/bin/python -m pytest -q -m "not lab and not zfs" tests

step "end-to-end tests on the lab (real dockerd, registry, Btrfs)"
COMPOSEGUARD_REQUIRE_LAB=1 .venv/bin/python -m pytest -q -m lab tests

if [ "${COMPOSEGUARD_SKIP_ZFS:-0}" != 1 ]; then
    step "ZFS inside the OpenZFS guest: the binding, the backend, and the upgrade scenarios on datasets"
    # dockerd and a registry run inside the guest (--docker); tests/lab/test_upgrade.py runs
    # there with COMPOSEGUARD_LAB_STORAGE=zfs, so its volumes are ZFS datasets.
    # The SIGKILL-at-every-step runs make this part about 45 min under TCG: give the guest an hour.
    COMPOSEGUARD_REQUIRE_LAB=1 COMPOSEGUARD_ZFS_TIMEOUT=${COMPOSEGUARD_ZFS_TIMEOUT:-3600} \
        bash lab/zfs-guest.sh --docker .venv/bin/python -m pytest -q -p no:cacheprovider \
        -m "zfs or lab" tests/zfs tests/lab/test_upgrade.py tests/lab/test_shared_dataset.py \
        tests/lab/test_kill_recovery.py
fi
step "all tests passed"
