#!/usr/bin/env bash
# Stop/start the throwaway PostgreSQL started by scripts/test-services.sh, e.g. to test
# how the gateway behaves while its database is down.
#
#   scripts/pg-ctl.sh stop|start|restart|status
#
# Uses GATEWAY_TEST_PG_BIN and GATEWAY_TEST_PG_DATA (and GATEWAY_TEST_PG_LOG if set), as
# exported by test-services.sh. Runs pg_ctl as the owner of the data dir (`postgres` when
# we are root: PostgreSQL refuses to run as root). `stop` is a fast shutdown (connected
# clients are disconnected); both `stop` and `start` wait until done. Exit code is pg_ctl's.
set -euo pipefail

cmd="${1:-}"
case "$cmd" in
    start | stop | restart | status) ;;
    *) echo "usage: $0 start|stop|restart|status" >&2; exit 2 ;;
esac

bin="${GATEWAY_TEST_PG_BIN:?GATEWAY_TEST_PG_BIN is not set (run under scripts/test-services.sh)}"
data="${GATEWAY_TEST_PG_DATA:?GATEWAY_TEST_PG_DATA is not set (run under scripts/test-services.sh)}"
pglog="${GATEWAY_TEST_PG_LOG:-$(dirname "$data")/postgres.log}"

owner="$(stat -c %U "$data")"
as=()
if [[ "$(id -un)" != "$owner" ]]; then
    if [[ "$(id -u)" == 0 ]]; then
        as=(runuser -u "$owner" --)
    else
        echo "$0: data dir $data belongs to $owner; cannot run pg_ctl as $(id -un)" >&2
        exit 1
    fi
fi

# A directory the server user can read, so nothing complains about the caller's cwd.
cd "$(dirname "$data")"

case "$cmd" in
    start)   exec "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$pglog" -w -t 60 start ;;
    stop)    exec "${as[@]}" "$bin/pg_ctl" -D "$data" -m fast -w -t 60 stop ;;
    restart) exec "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$pglog" -m fast -w -t 60 restart ;;
    status)  exec "${as[@]}" "$bin/pg_ctl" -D "$data" status ;;
esac
