#!/bin/bash
# The healthcheck: waits (up to 100 s) for app.sh to say how it went. A v1 waiting for a slow
# db (initdb while the host is busy) is then not "unhealthy" before it could try, and a v2 is
# unhealthy as soon as its migration committed, not merely when its start period ran out.
for _ in $(seq 1000); do
    [ -f /tmp/healthy ] && exit 0
    [ -f /tmp/failed ] && exit 1
    sleep 0.1
done
exit 1
