#!/usr/bin/env bash
# Install the Debian packages the lab needs. Idempotent: skips what is already there.
#   lab/install-packages.sh          Docker Engine, registry, Btrfs tools, busybox
#   lab/install-packages.sh --zfs    also the kernel, zfs-dkms and qemu for the OpenZFS guest
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

want_zfs=0
[ "${1:-}" = "--zfs" ] && want_zfs=1

log() { printf 'lab: %s\n' "$*" >&2; }

missing() {
    local out=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
    done
    printf '%s\n' "${out[@]}"
}

apt_updated=0
apt_install() {
    mapfile -t need < <(missing "$@" | sed '/^$/d')
    [ "${#need[@]}" -eq 0 ] && return 0
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "apt-get install ${need[*]}"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
}

# zsh, fish: contrib/shell's functions; pipx: lab/package-check.sh installs as README says;
# mmdebstrap: the lab's PostgreSQL and SQLite images, from Debian's packages (lab/lab.sh)
apt_install docker.io docker-registry btrfs-progs busybox-static iproute2 util-linux acl \
    python3-venv ca-certificates systemd zsh fish pipx mmdebstrap

if [ "$want_zfs" -eq 1 ]; then
    # zfs-dkms lives in Debian's contrib component: add it next to the existing sources
    # (same mirrors, no host name of our own).
    contrib=/etc/apt/sources.list.d/composeguard-lab-contrib.sources
    if [ ! -f "$contrib" ] && [ -f /etc/apt/sources.list.d/debian.sources ]; then
        sed 's/^Components:.*/Components: contrib/' /etc/apt/sources.list.d/debian.sources > "$contrib"
        apt_updated=0
    fi
    apt_install linux-image-amd64 linux-headers-amd64 qemu-system-x86 kmod
    kver=$(ls /lib/modules | sort -V | tail -n 1)
    if [ ! -f "/lib/modules/$kver/updates/dkms/zfs.ko" ] || [ -n "$(missing zfsutils-linux)" ]; then
        log "installing zfs-dkms (builds the module for $kver; takes several minutes)"
        apt_install zfs-dkms zfsutils-linux
    fi
    [ -f "/lib/modules/$kver/updates/dkms/zfs.ko" ] || { log "zfs.ko was not built for $kver"; exit 1; }
fi
log "packages ready"
