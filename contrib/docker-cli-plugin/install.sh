#!/bin/sh
# Install (or with --remove, remove) composeguard's docker compose plugin shim for this user:
# into $DOCKER_CONFIG/cli-plugins (~/.docker/cli-plugins), the folder docker searches before the
# system's compose plugin. Refuses to replace a real compose plugin that lives there.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
dir="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
target="$dir/docker-compose"
is_shim() { grep -q composeguard-docker-cli-plugin-shim "$1" 2>/dev/null; }

if [ "${1-}" = --remove ]; then
    if [ -e "$target" ] && ! is_shim "$target"; then
        echo "install.sh: $target is not composeguard's shim; left alone" >&2
        exit 1
    fi
    rm -f "$target"
    echo "removed $target: docker compose is plain compose again"
    exit 0
fi
if [ -e "$target" ] && ! is_shim "$target"; then
    echo "install.sh: $target is a compose plugin of its own; move it to /usr/local/lib/docker/cli-plugins first (nothing was changed)" >&2
    exit 1
fi
command -v "${COMPOSEGUARD_BIN:-composeguard}" >/dev/null \
    || { echo "install.sh: composeguard is not on PATH (set COMPOSEGUARD_BIN)" >&2; exit 1; }
mkdir -p "$dir"
cp "$here/docker-compose" "$target.tmp.$$"
chmod 0755 "$target.tmp.$$"
mv -f "$target.tmp.$$" "$target"
echo "installed $target: \`docker compose …\` now runs through composeguard"
