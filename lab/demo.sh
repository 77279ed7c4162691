#!/usr/bin/env bash
# The demo: a throwaway lab project whose upgrade migrates its data, fails its healthcheck,
# and is rolled back by composeguard — visibly. Run as root on Debian 12; installs the lab.
#   lab/demo.sh          run the story (leaves the demo running so you can look around)
#   lab/demo.sh clean    remove the demo project, its data and snapshots
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB=${COMPOSEGUARD_LAB:-/var/lib/composeguard-lab}
DEMO=$LAB/demo
DATA=$LAB/btrfs/demo-appdata
REF=127.0.0.1:5000/demo/app:latest
export COMPOSEGUARD_STATE_DIR=${COMPOSEGUARD_STATE_DIR:-$LAB/demo-state}
CG="$ROOT/.venv/bin/composeguard"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
note() { printf '\n# %s\n' "$*"; }

clean() {
    if [ -f "$DEMO/compose.yaml" ]; then
        pins=$COMPOSEGUARD_STATE_DIR/projects/demo/pins.applied.yaml
        args=(-f "$DEMO/compose.yaml")
        [ -f "$pins" ] && args+=(-f "$pins")
        docker compose "${args[@]}" down -t 1 >/dev/null 2>&1 || true
    fi
    local snaps=$LAB/btrfs/.composeguard-snapshots/demo
    if [ -d "$snaps" ]; then
        find "$snaps" -mindepth 1 -depth -type d -inum 256 | while read -r sv; do
            btrfs property set -ts "$sv" ro false >/dev/null 2>&1 || true
            btrfs subvolume delete "$sv" >/dev/null
        done
        rm -rf "$snaps"
    fi
    [ -d "$DATA" ] && btrfs subvolume delete "$DATA" >/dev/null
    rm -rf "$DEMO" "$COMPOSEGUARD_STATE_DIR"
}

if [ "${1:-}" = clean ]; then bash "$ROOT/lab/lab.sh" up >/dev/null 2>&1; clean; echo "demo removed"; exit 0; fi

bash "$ROOT/lab/lab.sh" up
clean
mkdir -p "$DEMO"
btrfs subvolume create "$DATA" >/dev/null
cat > "$DEMO/compose.yaml" <<YAML
name: demo
x-composeguard:
  timeout: 60
services:
  app:
    image: $REF
    ports: ["127.0.0.1:18088:8080"]
    volumes:
      - $DATA:/data
YAML
cd "$DEMO"
docker tag lab/app:v1 "$REF" && docker push -q "$REF" >/dev/null

note "v1 of the app is published; deploy it through composeguard (a plain up: nothing to guard)"
say "composeguard up -d --wait"
"$CG" up -d --wait
printf 'order 1: 3 apples\norder 2: 5 pears\n' > "$DATA/orders.txt"
note "the app's data (a Btrfs subvolume):"
say "cat $DATA/orders.txt"; cat "$DATA/orders.txt"

note "upstream pushes v2 to the same tag: it migrates the data on start, then fails its healthcheck"
docker tag lab/app:v2 "$REF" && docker push -q "$REF" >/dev/null
say "composeguard plan"
"$CG" plan
say "composeguard up -d --pull always"
set +e
"$CG" up -d --pull always
rc=$?
set -e
note "composeguard exited with $rc (3 = the upgrade failed and was rolled back)"

say "cat $DATA/orders.txt"; cat "$DATA/orders.txt"
say "docker compose ps"; docker compose -f compose.yaml -f "$COMPOSEGUARD_STATE_DIR/projects/demo/pins.applied.yaml" ps
say "composeguard history"; "$CG" history
say "composeguard pins"; "$CG" pins
failed=$(find "$LAB/btrfs/.composeguard-snapshots/demo" -path '*/failed/*' -maxdepth 3 -mindepth 3 | head -n 1)
note "what v2 did to the data is kept, read-only, for inspection:"
say "cat $failed/orders.txt"; cat "$failed/orders.txt"
note "the next guarded up keeps the pinned v1 (plain 'docker compose up -d' would start v2 again):"
say "composeguard up -d"; "$CG" up -d
note "demo finished; the app still answers on http://127.0.0.1:18088/version: $(wget -q -O- http://127.0.0.1:18088/version)"
note "clean up with: bash lab/demo.sh clean"
[ "$rc" -eq 3 ]
