#!/usr/bin/env bash
# Run a command inside the OpenZFS guest VM with a fresh ZFS pool ready.
#
#   lab/zfs-guest.sh [--docker] [--] CMD [ARGS...]
#
# The host kernel has no module support, so ZFS lives in a guest: virtme-ng boots the Debian
# kernel (from linux-image-amd64, with zfs.ko built by DKMS) and shares the host's root
# filesystem read-only, so the guest sees the same Python, .venv and project code. CMD runs
# as root from the repo root, after `modprobe zfs` and `zpool create`, with:
#
#   COMPOSEGUARD_IN_ZFS_GUEST=1
#   COMPOSEGUARD_ZFS_POOL   the pool name (default cgtest)
#   COMPOSEGUARD_ZFS_MNT    where the pool's root dataset is mounted (LABDIR/mnt)
#
# plus every COMPOSEGUARD_* variable set on the host (the guest does not inherit the host's
# environment). The script exits with CMD's exit code; 124 if the guest timed out and 125 if
# the guest never reported one (boot, ZFS or Docker setup failed: see the output above it).
#
# --docker also starts a Docker lab in the guest (lab/guest-docker.sh): dockerd (vfs storage
# driver) with its data root on the dataset POOL/docker, and a registry on 127.0.0.1:5000 that
# holds the host lab's images (lab/busybox:1, lab/app:v1..v3, lab/plain:v1..v3, as
# 127.0.0.1:5000/lab/NAME:TAG), so `docker compose pull` works. The host must run the lab
# (`lab/lab.sh up`): its images are `docker save`d into LABDIR/images.tar, again only when their
# IDs changed. CMD then also gets:
#
#   DOCKER_HOST=unix:///run/cgx/docker.sock   the guest's dockerd
#   DOCKER_CONFIG=/run/cgx/cli                a writable CLI config folder (~ is read-only)
#   COMPOSEGUARD_LAB_STORAGE=zfs
#
# Containers still running when CMD ends are removed, then dockerd and the registry stop before
# the pool is destroyed.
#
# Environment (host side):
#   COMPOSEGUARD_LAB            lab folder (default /var/lib/composeguard-lab); uses LAB/zfs
#   COMPOSEGUARD_ZFS_POOL       pool name (default cgtest)
#   COMPOSEGUARD_ZFS_POOL_SIZE  size of the sparse pool image (default 1G; 2G with --docker)
#   COMPOSEGUARD_ZFS_TIMEOUT    seconds before the whole guest run is killed (default 1500)
#
# Needs: root, `lab/install-packages.sh --zfs` (kernel, qemu, zfs-dkms, zfsutils-linux) and
# the project venv with virtme-ng (`lab/lab.sh up` creates it).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
LABDIR=${COMPOSEGUARD_LAB:-/var/lib/composeguard-lab}/zfs
POOL=${COMPOSEGUARD_ZFS_POOL:-cgtest}
TIMEOUT=${COMPOSEGUARD_ZFS_TIMEOUT:-1500}

log() { printf 'zfs-guest: %s\n' "$*" >&2; }
die() { printf 'zfs-guest: error: %s\n' "$*" >&2; exit 125; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# The host lab's images that --docker copies into the guest (see images_up in lab/lab.sh).
LAB_IMAGES=(lab/busybox:1 lab/app:v1 lab/app:v2 lab/app:v3 lab/plain:v1 lab/plain:v2 lab/plain:v3)

# --- arguments -----------------------------------------------------------------------------
DOCKER=0
while [ "$#" -gt 0 ]; do
    case "$1" in
        -h|--help) usage ;;
        --docker) DOCKER=1; shift ;;
        --) shift; break ;;
        *) break ;;
    esac
done
[ "$#" -gt 0 ] || usage

# The image is sparse, so a bigger pool costs nothing until written. With --docker the vfs
# driver stores every layer and every container as a full copy on the pool: leave it room.
if [ "$DOCKER" = 1 ]; then
    POOL_SIZE=${COMPOSEGUARD_ZFS_POOL_SIZE:-2G}
else
    POOL_SIZE=${COMPOSEGUARD_ZFS_POOL_SIZE:-1G}
fi

# --- preconditions ---------------------------------------------------------------------------
# The guest runs as the host user; modprobe and zpool need root there.
[ "$(id -u)" -eq 0 ] || die "must run as root (the guest needs root for modprobe/zpool)"

# A pool name that `zpool create` accepts: letters first, then letters, digits, _ - . :
[[ "$POOL" =~ ^[A-Za-z][A-Za-z0-9_.:-]*$ ]] || die "bad COMPOSEGUARD_ZFS_POOL: '$POOL'"
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "bad COMPOSEGUARD_ZFS_TIMEOUT: '$TIMEOUT'"

# The guest kernel: the newest Debian kernel for which DKMS built zfs.ko. The host's running
# kernel is useless here (no modules), so never let vng fall back to it.
KVER=
for ko in /lib/modules/*/updates/dkms/zfs.ko; do     # glob order is not version order
    [ -f "$ko" ] || continue
    ver=${ko#/lib/modules/}; ver=${ver%%/*}
    if [ -z "$KVER" ] || [ "$(printf '%s\n%s\n' "$KVER" "$ver" | sort -V | tail -n 1)" = "$ver" ]; then
        KVER=$ver
    fi
done
[ -n "$KVER" ] || die "no /lib/modules/*/updates/dkms/zfs.ko: run lab/install-packages.sh --zfs"
KERNEL=/boot/vmlinuz-$KVER
[ -r "$KERNEL" ] || die "kernel $KERNEL missing: run lab/install-packages.sh --zfs"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run lab/install-packages.sh --zfs"
command -v zpool >/dev/null || [ -x /usr/sbin/zpool ] || die "zpool missing: run lab/install-packages.sh --zfs"

# vng execs `virtme-run` by name, so the venv's bin must come first on PATH.
VENV_BIN=$ROOT/.venv/bin
[ -x "$VENV_BIN/vng" ] || die "$VENV_BIN/vng missing: run lab/lab.sh up (installs virtme-ng)"
export PATH="$VENV_BIN:$PATH"

if [ "$DOCKER" = 1 ]; then
    # The guest cannot reach the host's dockerd or registry (no network): the images travel
    # as a `docker save` archive, so the host's lab must be up.
    [ -r "$ROOT/lab/guest-docker.sh" ] || die "$ROOT/lab/guest-docker.sh missing"
    docker info >/dev/null 2>&1 || die "--docker: the host's dockerd does not answer: run lab/lab.sh up"
    for img in "${LAB_IMAGES[@]}"; do
        docker image inspect "$img" >/dev/null 2>&1 || die "--docker: host image $img missing: run lab/lab.sh up"
    done
    for tool in dockerd docker-registry wget; do
        command -v "$tool" >/dev/null || die "--docker: $tool missing on the host (the guest uses the host's binaries)"
    done
    docker compose version >/dev/null 2>&1 || die "--docker: the Compose v2 plugin is missing: run lab/lab.sh up"
fi

# --- lab folder --------------------------------------------------------------------------------
# Only --rwdir folders are writable from the guest, so everything the guest writes (the pool
# image, its mountpoint, the exit code) lives in LABDIR.
mkdir -p "$LABDIR"
LABDIR=$(cd "$LABDIR" && pwd -P)   # 9p shares need the real path

# One guest per lab folder at a time: two guests would fight over pool.img and the mountpoint.
exec 9>"$LABDIR/.lock"
flock -n 9 || die "another lab/zfs-guest.sh run holds $LABDIR/.lock"

RC_FILE=$LABDIR/exit-code
rm -f "$RC_FILE"

# --docker: the lab images for the guest, saved again only when one of their IDs changed
# (`docker save` of the 7 images takes a few seconds; the ID check well under one). The stamp
# lists "NAME:TAG ID" per image; the guest reads it back to tag and push what it loaded.
if [ "$DOCKER" = 1 ]; then
    ids=$(for img in "${LAB_IMAGES[@]}"; do
              printf '%s %s\n' "$img" "$(docker image inspect -f '{{.Id}}' "$img")"
          done)
    if [ -s "$LABDIR/images.tar" ] && [ -f "$LABDIR/images.ids" ] \
        && [ "$ids" = "$(cat "$LABDIR/images.ids")" ]; then
        log "lab images unchanged: reusing $LABDIR/images.tar"
    else
        log "saving the lab images into $LABDIR/images.tar"
        rm -f "$LABDIR/images.ids"              # no stamp while the archive is being replaced
        docker save -o "$LABDIR/images.tar.tmp" "${LAB_IMAGES[@]}"
        mv -f "$LABDIR/images.tar.tmp" "$LABDIR/images.tar"
        printf '%s\n' "$ids" > "$LABDIR/images.ids"
    fi
fi

# The caller's command and environment, quoted with printf %q so that the guest's bash reads
# back exactly the same words (spaces, quotes, globs and empty arguments survive).
{
    printf 'CMD=('
    printf '%q ' "$@"
    printf ')\n'
    # Host COMPOSEGUARD_* variables: the guest starts with an empty environment.
    while IFS= read -r name; do
        printf 'export %s=%q\n' "$name" "${!name}"
    done < <(compgen -e | grep '^COMPOSEGUARD_' || true)
    printf 'export COMPOSEGUARD_ZFS_POOL=%q\n' "$POOL"
    printf 'POOL_SIZE=%q\n' "$POOL_SIZE"
    printf 'DOCKER=%q\n' "$DOCKER"
    printf 'ROOT=%q\n' "$ROOT"
} > "$LABDIR/cmd.sh"

# The script the guest runs. LABDIR is baked in (quoted) so the guest needs no arguments.
{
    printf '#!/bin/bash\n# Generated by lab/zfs-guest.sh on every run; do not edit.\n'
    printf 'LABDIR=%q\n' "$LABDIR"
    cat <<'GUEST'
set -euo pipefail
log() { printf 'zfs-guest(guest): %s\n' "$*" >&2; }
source "$LABDIR/cmd.sh"
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export COMPOSEGUARD_ZFS_MNT=$LABDIR/mnt COMPOSEGUARD_IN_ZFS_GUEST=1
IMG=$LABDIR/pool.img

cleanup() {
    set +e   # an EXIT trap: a failing step must not skip the ones after it
    # --docker: dockerd, its containers and the registry hold files on the pool; stop them first.
    if [ "$DOCKER" = 1 ] && declare -F guest_docker_down >/dev/null; then
        guest_docker_down
    fi
    # Leave nothing behind: the pool only exists in this guest's kernel, but its image and
    # mountpoint are on the host. -f because a test may leave a process or mount on it.
    if zpool list -H -o name "$COMPOSEGUARD_ZFS_POOL" >/dev/null 2>&1; then
        zpool destroy -f "$COMPOSEGUARD_ZFS_POOL" || zpool export -f "$COMPOSEGUARD_ZFS_POOL" \
            || log "could not destroy or export pool $COMPOSEGUARD_ZFS_POOL"
    fi
    rm -f "$IMG"
}
trap cleanup EXIT

modprobe zfs
[ -c /dev/zfs ] || { log "/dev/zfs missing after modprobe zfs"; exit 1; }

# Start clean every boot: a run killed half-way may have left the image or files in the
# (then unmounted) mountpoint, and ZFS 2.1 refuses to mount over a non-empty folder.
if mountpoint -q "$COMPOSEGUARD_ZFS_MNT"; then
    log "$COMPOSEGUARD_ZFS_MNT is already a mountpoint"; exit 1
fi
rm -rf "$IMG" "$COMPOSEGUARD_ZFS_MNT"
truncate -s "$POOL_SIZE" "$IMG"   # sparse: costs only what the pool writes
# cachefile=none: the guest's /etc is a throw-away overlay and the pool never outlives the boot.
zpool create -f -o cachefile=none -m "$COMPOSEGUARD_ZFS_MNT" "$COMPOSEGUARD_ZFS_POOL" "$IMG"
log "pool $COMPOSEGUARD_ZFS_POOL ready at $COMPOSEGUARD_ZFS_MNT (kernel $(uname -r), zfs $(cat /sys/module/zfs/version))"

if [ "$DOCKER" = 1 ]; then
    # Sourced (not run) so that it can export DOCKER_HOST & co. for CMD. Called plainly, not
    # in an `if`/`||`, so that set -e stays in force inside it: any failed step aborts the boot.
    source "$ROOT/lab/guest-docker.sh"
    guest_docker_up
fi

cd "$ROOT"
rc=0
"${CMD[@]}" || rc=$?
# The host reads this file: vng's own exit status is not a reliable carrier of CMD's.
echo "$rc" > "$LABDIR/exit-code"
exit 0
GUEST
} > "$LABDIR/guest-init.sh"

# --- boot ----------------------------------------------------------------------------------------
# --disable-kvm: with KVM the guest hangs at boot on the build machines; TCG takes ~30 s.
# --force-9p / --disable-microvm: the combination LAB.md verified (9p shares of the host root
#   and the --rwdir folders, standard q35 machine); other combinations were not tested.
# The repo root is shared read-write so pytest and Python can write caches/bytecode there.
# `timeout` kills the whole process group (vng and its qemu) so a hung boot fails loudly.
RWDIRS=(--rwdir "$ROOT")
case "$LABDIR/" in
    "$ROOT"/*) ;;                       # already writable through the repo root share
    *) RWDIRS+=(--rwdir "$LABDIR") ;;
esac

# --docker boots with apparmor=0: the Debian kernel enables AppArmor, so dockerd would try to load
#   its docker-default profile for every container, and the host has no apparmor_parser (no
#   apparmor package), so every `docker run`/`compose up` failed with "AppArmor enabled on system
#   but the docker-default profile could not be loaded". The host's own kernel has no AppArmor.
APPEND=()
[ "$DOCKER" = 1 ] && APPEND=(--append apparmor=0)
VNG=(vng --run "$KERNEL" --disable-kvm --force-9p --disable-microvm
     --memory 3G --cpus 2 "${RWDIRS[@]}" --cwd "$ROOT" "${APPEND[@]}"
     --exec "bash $(printf '%q' "$LABDIR/guest-init.sh")")

log "booting $KERNEL (TCG, timeout ${TIMEOUT}s) to run: $(printf '%q ' "$@")"
start=$SECONDS
# qemu writes the guest's stdout/stderr by re-opening /proc/self/fd/1 and /proc/self/fd/2 with
# O_TRUNC: when our stdout/stderr is a regular file (`zfs-guest.sh ... > log`), that truncates
# the file and overwrites what was written before. So vng only ever gets pipes: its stderr goes
# through `cat >&2`, its stdout (fd 3) through the outer `cat`, and both are waited for.
# stdin is /dev/null so qemu never competes with the caller for the terminal.
set +e
{
    timeout --kill-after=30 "$TIMEOUT" "${VNG[@]}" < /dev/null 2>&1 1>&3 3>&- | cat >&2
    exit "${PIPESTATUS[0]}"
} 3>&1 | cat
vng_rc=${PIPESTATUS[0]}
set -e
elapsed=$((SECONDS - start))

if [ "$vng_rc" -eq 124 ] || [ "$vng_rc" -eq 137 ]; then
    log "guest timed out after ${elapsed}s (COMPOSEGUARD_ZFS_TIMEOUT=$TIMEOUT)"
    exit 124
fi
if [ ! -s "$RC_FILE" ]; then
    log "guest reported no exit code (vng exit $vng_rc after ${elapsed}s): boot, ZFS or Docker setup failed, see above"
    exit 125
fi
rc=$(cat "$RC_FILE")
[[ "$rc" =~ ^[0-9]+$ ]] || die "garbled exit code in $RC_FILE: '$rc'"
log "guest finished in ${elapsed}s; command exited with $rc"
exit "$rc"
