# shellcheck shell=bash
# The Docker lab INSIDE the OpenZFS guest: a real dockerd whose data root is a ZFS dataset and a
# real registry on 127.0.0.1:5000 holding the lab images, so end-to-end tests can run
# `docker compose` against data on ZFS.
#
# Not run by hand: the guest-init that `lab/zfs-guest.sh --docker` generates sources this file
# after the pool exists, calls guest_docker_up before the command and guest_docker_down (from its
# EXIT trap) before it destroys the pool. It reads what guest-init sets:
#
#   LABDIR                  the lab folder shared with the host (images.tar, images.ids, logs)
#   COMPOSEGUARD_ZFS_POOL   the pool; the data root becomes the dataset POOL/docker
#   COMPOSEGUARD_IN_ZFS_GUEST=1
#
# and exports for the command:
#
#   DOCKER_HOST=unix:///run/cgx/docker.sock   the guest's dockerd (the host's is not reachable)
#   DOCKER_CONFIG=/run/cgx/cli                the host's root filesystem (so ~/.docker) is read-only
#   COMPOSEGUARD_LAB_STORAGE=zfs
#
# Optional: COMPOSEGUARD_GUEST_IPTABLES=0 starts dockerd with --iptables=false straight away
# (it is also the automatic fallback when dockerd fails to start because of iptables).

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "lab/guest-docker.sh is sourced by lab/zfs-guest.sh --docker inside the guest; do not run it" >&2
    exit 2
fi

# Everything runtime-only lives on the guest's /run tmpfs: sockets, pid files, containerd state,
# the registry's blobs (a few MB) and the CLI config. Only the data root is on ZFS.
CGX=/run/cgx
CGX_SOCK=$CGX/docker.sock
CGX_REGISTRY=127.0.0.1:5000
CGX_CONTAINERD_SOCK=$CGX/containerd/containerd.sock
CGX_CONTAINERD_PID=
CGX_DOCKERD_PID=
CGX_REGISTRY_PID=

gd_log() { printf 'zfs-guest(docker): %s\n' "$*" >&2; }

# True while PID runs. kill -0 alone is not enough: dockerd and the registry are children of
# this shell, and a child that exited stays a zombie (kill -0 succeeds) until it is waited for.
gd_alive() {
    local state
    state=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ -n "$state" ] && [ "$state" != Z ]
}

# Stop PID with SIGTERM, SIGKILL after SECS seconds, and reap it.
gd_stop() {
    local pid=$1 secs=$2 what=$3 i
    [ -n "$pid" ] || return 0
    if gd_alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < secs * 4; i++)); do gd_alive "$pid" || break; sleep 0.25; done
        if gd_alive "$pid"; then
            gd_log "$what did not stop within ${secs}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            sleep 0.5
        fi
    fi
    wait "$pid" 2>/dev/null || true
}

gd_docker() { docker -H "unix://$CGX_SOCK" "$@"; }

# containerd runs on its own, not as dockerd's child: dockerd 20.10 gives the containerd it
# spawns a hard-coded 15 s to come up and then exits with "failed to start containerd: timeout
# waiting for containerd to start". Under TCG on a busy host that happened (load average ~50),
# so this starts containerd itself with a generous wait and hands dockerd its socket.
gd_start_containerd() {
    local data_root=$1 i
    mkdir -p "$CGX/containerd"
    # Like the config dockerd writes for the containerd it manages: state on /run, root next
    # to docker's. No CRI; no snapshotters that probe modules or filesystems (docker 20.10 keeps
    # images in its own graph driver, so containerd's snapshotters are unused anyway).
    cat >"$CGX/containerd.toml" <<EOF
version = 2
root = "$data_root/containerd"
state = "$CGX/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$CGX_CONTAINERD_SOCK"
EOF
    gd_log "starting containerd (log $LABDIR/containerd.log)"
    containerd --config "$CGX/containerd.toml" >"$LABDIR/containerd.log" 2>&1 </dev/null &
    CGX_CONTAINERD_PID=$!
    for ((i = 0; i < 360; i++)); do
        gd_alive "$CGX_CONTAINERD_PID" || break
        if [ -S "$CGX_CONTAINERD_SOCK" ] \
            && timeout 30 ctr --address "$CGX_CONTAINERD_SOCK" version >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    tail -n 30 "$LABDIR/containerd.log" >&2 || true
    gd_log "containerd did not start"
    return 1
}

# Start dockerd with the extra arguments given; 0 once `docker info` answers, 1 if dockerd died
# or did not answer in time (then it is stopped).
gd_start_dockerd() {
    local data_root=$1 i
    shift
    rm -f "$CGX/dockerd.pid" "$CGX_SOCK"
    # --config-file: an empty one, so that nothing in the host's /etc/docker leaks in.
    # --storage-driver vfs: plain directories, no overlayfs on ZFS 2.1 (unsupported) and no zfs
    #   driver (it would create a dataset per layer in the pool the tests snapshot and list).
    #   Every layer and container is a full copy, fine with the ~2 MB lab images.
    # Bridge networking and iptables stay on, as on a real host: iptables (nft backend) and the
    # bridge/netfilter modules work in the guest. Compose puts services on a user-defined bridge
    # whose embedded DNS answers service names; that was also checked to keep working with
    # --iptables=false (the fallback below), which only drops docker's NAT/filter rules.
    gd_log "starting dockerd${*:+ $*} (data root $data_root, log $LABDIR/dockerd.log)"
    dockerd --config-file "$CGX/daemon.json" \
        --data-root "$data_root" --exec-root "$CGX" --pidfile "$CGX/dockerd.pid" \
        -H "unix://$CGX_SOCK" --containerd "$CGX_CONTAINERD_SOCK" --storage-driver vfs "$@" \
        >"$LABDIR/dockerd.log" 2>&1 </dev/null &
    CGX_DOCKERD_PID=$!
    # TCG is slow (and slower still on a busy host): allow three minutes.
    for ((i = 0; i < 360; i++)); do
        if ! gd_alive "$CGX_DOCKERD_PID"; then
            wait "$CGX_DOCKERD_PID" 2>/dev/null || true
            CGX_DOCKERD_PID=
            return 1
        fi
        gd_docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    # Stop it, so that a retry does not race a second dockerd against this one.
    gd_log "dockerd did not answer within 180s; stopping it"
    gd_stop "$CGX_DOCKERD_PID" 30 dockerd
    CGX_DOCKERD_PID=
    return 1
}

gd_start_registry() {
    local i
    mkdir -p "$CGX/registry"
    # Like lab/lab.sh's registry_up: no auth section (the packaged default config asks for
    # htpasswd), delete enabled, 127.0.0.1 (which dockerd trusts as insecure by default).
    cat >"$CGX/registry.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true   # one line per blob request, written through 9p: slow and useless here
storage:
  filesystem:
    rootdirectory: $CGX/registry
  delete:
    enabled: true
http:
  addr: $CGX_REGISTRY
EOF
    docker-registry serve "$CGX/registry.yml" >"$LABDIR/registry.log" 2>&1 </dev/null &
    CGX_REGISTRY_PID=$!
    for ((i = 0; i < 240; i++)); do
        wget -q -O /dev/null "http://$CGX_REGISTRY/v2/" 2>/dev/null && return 0
        gd_alive "$CGX_REGISTRY_PID" || break
        sleep 0.25
    done
    tail -n 20 "$LABDIR/registry.log" >&2 || true
    gd_log "the registry did not start on $CGX_REGISTRY"
    return 1
}

guest_docker_up() {
    local start=$SECONDS ds=$COMPOSEGUARD_ZFS_POOL/docker data_root name id
    mkdir -p "$CGX" "$CGX/cli"
    echo '{}' >"$CGX/daemon.json"

    # The data root is its own dataset (mounted under the pool's mountpoint by inheritance), so
    # a test can tell docker's files from its own datasets and the pool stays destroyable.
    zfs create "$ds"
    data_root=$(zfs get -H -o value mountpoint "$ds")

    # The modules dockerd needs come from the host's /lib/modules through the 9p root; the
    # kernel would autoload most of them, loading them up front just makes failures obvious.
    modprobe -a bridge br_netfilter veth nf_tables nft_compat nft_chain_nat xt_MASQUERADE \
        xt_addrtype xt_conntrack 2>/dev/null || gd_log "some netfilter/bridge modules did not load"

    gd_start_containerd "$data_root" || return 1
    if [ "${COMPOSEGUARD_GUEST_IPTABLES:-1}" = 0 ]; then
        gd_start_dockerd "$data_root" --iptables=false \
            || { tail -n 30 "$LABDIR/dockerd.log" >&2; gd_log "dockerd did not start"; return 1; }
    elif ! gd_start_dockerd "$data_root"; then
        if grep -qi iptables "$LABDIR/dockerd.log"; then
            gd_log "dockerd failed because of iptables; retrying with --iptables=false"
            cp "$LABDIR/dockerd.log" "$LABDIR/dockerd-iptables-failure.log"
            gd_start_dockerd "$data_root" --iptables=false \
                || { tail -n 30 "$LABDIR/dockerd.log" >&2; gd_log "dockerd did not start"; return 1; }
        else
            tail -n 30 "$LABDIR/dockerd.log" >&2 || true
            gd_log "dockerd did not start"
            return 1
        fi
    fi
    export DOCKER_HOST=unix://$CGX_SOCK DOCKER_CONFIG=$CGX/cli COMPOSEGUARD_LAB_STORAGE=zfs
    gd_log "dockerd $(docker version -f '{{.Server.Version}}') up after $((SECONDS - start))s"

    gd_start_registry || return 1

    # The images lab/zfs-guest.sh saved on the host; images.ids lists "NAME:TAG ID" per image.
    [ -s "$LABDIR/images.tar" ] && [ -s "$LABDIR/images.ids" ] \
        || { gd_log "$LABDIR/images.tar or images.ids missing"; return 1; }
    docker load -q -i "$LABDIR/images.tar" >/dev/null
    while read -r name id; do
        [ -n "$name" ] || continue
        [ "$(docker image inspect -f '{{.Id}}' "$name")" = "$id" ] \
            || { gd_log "loaded $name does not have the ID the host saved ($id)"; return 1; }
        # Same names as on the host lab, so compose files written for it work here unchanged.
        docker tag "$name" "$CGX_REGISTRY/$name"
        docker push -q "$CGX_REGISTRY/$name" >/dev/null
    done <"$LABDIR/images.ids"
    gd_log "registry $CGX_REGISTRY has $(wc -l <"$LABDIR/images.ids") lab images; docker lab ready after $((SECONDS - start))s"
}

guest_docker_down() {
    # Runs from the EXIT trap before the pool is destroyed: nothing here may abort the trap.
    local ids mnt fstype leftovers start=$SECONDS
    if [ -n "$CGX_DOCKERD_PID" ] && gd_alive "$CGX_DOCKERD_PID"; then
        # Containers left by a failed test: remove them while dockerd can still tidy their
        # mounts and network namespaces.
        mapfile -t ids < <(timeout 60 docker -H "unix://$CGX_SOCK" ps -aq 2>/dev/null)
        if [ "${#ids[@]}" -gt 0 ]; then
            gd_log "removing ${#ids[@]} leftover container(s)"
            timeout 180 docker -H "unix://$CGX_SOCK" rm -f "${ids[@]}" >/dev/null 2>&1 || true
        fi
    fi
    gd_stop "$CGX_REGISTRY_PID" 20 registry
    CGX_REGISTRY_PID=
    # 60 s because TCG is slow; dockerd first, it still talks to containerd while stopping.
    gd_stop "$CGX_DOCKERD_PID" 60 dockerd
    CGX_DOCKERD_PID=
    gd_stop "$CGX_CONTAINERD_PID" 60 containerd
    CGX_CONTAINERD_PID=
    # A killed containerd can leave shims behind: they keep files open on the pool.
    # (Only this guest's processes can match: the guest has its own kernel and process table.)
    leftovers=$(pgrep -d ' ' '^containerd' 2>/dev/null || true)
    if [ -n "$leftovers" ]; then
        gd_log "killing leftover containerd processes: $leftovers"
        # shellcheck disable=SC2086
        kill -KILL $leftovers 2>/dev/null || true
        sleep 1
    fi
    # Whatever is still mounted under the pool and is not one of its datasets (container shm,
    # bind mounts) would make `zpool destroy` fail: unmount deepest first.
    while read -r mnt fstype; do
        mnt=$(printf '%b' "$mnt")   # mountinfo escapes spaces as \040
        gd_log "unmounting leftover $fstype mount $mnt"
        umount -l "$mnt" 2>/dev/null || true
    done < <(awk -v root="$COMPOSEGUARD_ZFS_MNT" '{
                 for (i = 7; $i != "-"; i++) ; fstype = $(i + 1)
                 if (fstype != "zfs" && index($5 "/", root "/") == 1) print length($5), $5, fstype
             }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2-)
    gd_log "docker lab stopped in $((SECONDS - start))s"
}
