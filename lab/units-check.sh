#!/usr/bin/env bash
# `systemd-analyze verify` on the shipped units (contrib/systemd/*.service, *.timer), offline:
# no systemd as PID 1 is needed. Run it after lab/package-check.sh, which installs composeguard
# where the units run it: verify fails when an ExecStart= program does not exist.
#
# --recursive-errors=one: plain verify only prints a syntax warning (a misspelled option, a
# value systemd cannot parse) and exits 0; with "one" a warning in one of OUR units fails, and
# their direct dependencies are loaded (a Requires= unit that does not exist fails) without
# their own warnings counting (docker.service is the distribution's). A unit named only in
# After=/Wants= may be absent (zfs-mount.service on a host without ZFS): verify accepts that.
# docker.service (Requires= of the recover unit) is stubbed when this host has none, and said
# so; any other missing Requires= unit fails (a misspelled name, say).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v systemd-analyze >/dev/null \
    || { echo "units: systemd-analyze not found (apt-get install systemd)" >&2; exit 1; }
work=$(mktemp -d /tmp/composeguard-units.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir "$work/units" "$work/stub"
cp contrib/systemd/*.service contrib/systemd/*.timer "$work/units/"
mapfile -t ours < <(cd "$work/units" && ls)

have_docker=0
while IFS= read -r d; do
    if [ -e "$d/docker.service" ]; then have_docker=1; fi
done < <(systemd-analyze unit-paths)
if [ "$have_docker" -eq 0 ]; then
    printf '[Unit]\nDescription=stub for lab/units-check.sh\n[Service]\nExecStart=/bin/true\n' \
        >"$work/stub/docker.service"
    echo "units: docker.service is not installed on this host: verifying against a stub of it"
    export SYSTEMD_UNIT_PATH="$work/stub:"  # the trailing ':' keeps the usual unit path after it
fi

rc=0
out=$(cd "$work/units" && systemd-analyze verify --recursive-errors=one "${ours[@]/#/./}" 2>&1) || rc=$?
[ -z "$out" ] || printf '%s\n' "$out"
# Anything said about one of our units is a problem, whatever verify's exit code.
about_ours=0
for u in "${ours[@]}"; do
    if grep -qF "$u" <<<"$out"; then about_ours=1; fi
done
if [ "$rc" -ne 0 ] || [ "$about_ours" -ne 0 ]; then
    echo "units: systemd-analyze verify found problems in contrib/systemd (exit $rc)" >&2
    exit 1
fi
echo "units: systemd-analyze verify passed on ${ours[*]}"
