#!/bin/sh
# The lab's test service. Its behaviour is baked into each image by APP_MODE:
#   healthy  serve /health; write nothing
#   bad      rewrite every file of the data volume (a "migration"), ask MIGRATE_URL (if set)
#            to migrate too, then serve without /health so the healthcheck fails
#   crash    run for CRASH_AFTER seconds, then exit 1 (a crash loop under restart: always)
# Every mode also serves /cgi-bin/migrate, which rewrites this container's /data: that is
# how an upgraded "app" migrates the data of the "db" service it depends on.
set -u
mkdir -p /www/cgi-bin
echo "${APP_VERSION}" > /www/version
cat > /www/cgi-bin/migrate <<'CGI'
#!/bin/sh
for f in /data/*; do [ -f "$f" ] && echo "migrated by a newer client" > "$f"; done
echo "schema: migrated" > /data/SCHEMA
printf 'Content-Type: text/plain\r\n\r\nmigrated\n'
CGI
chmod +x /www/cgi-bin/migrate
case "${APP_MODE}" in
    healthy)
        echo ok > /www/health ;;
    bad)
        if [ -d /data ]; then
            for f in /data/*; do [ -f "$f" ] && echo "migrated by ${APP_VERSION}" > "$f"; done
            echo "schema: ${APP_VERSION}" > /data/SCHEMA
        fi
        if [ -n "${MIGRATE_URL:-}" ]; then
            wget -q -O- "${MIGRATE_URL}" || true
        fi
        sync ;;
    crash)
        sleep "${CRASH_AFTER:-2}"
        echo "app ${APP_VERSION}: fatal error, exiting" >&2
        exit 1 ;;
esac
# busybox httpd as PID 1 would ignore SIGTERM; stop promptly like a real service does.
httpd -f -p 8080 -h /www &
trap 'kill $! 2>/dev/null; exit 0' TERM INT
wait $!
