#!/usr/bin/env bash
# shellcheck disable=SC2317  # cleanup functions are reached through traps
# Start a throwaway PostgreSQL and Redis on loopback (free ports, data under a temp dir),
# run a command with their URLs in the environment, then stop both and exit with the
# command's exit code.
#
#   scripts/test-services.sh -- .venv/bin/python -m pytest -x
#   scripts/test-services.sh            # no command: print the exports, wait for Ctrl-C
#
# Exported to the command:
#   GATEWAY_TEST_POSTGRES_URL        postgresql://gateway:gateway@127.0.0.1:PORT/gateway_test
#                                    (role `gateway`: LOGIN CREATEDB, owns gateway_test)
#   GATEWAY_TEST_POSTGRES_ADMIN_URL  same server as superuser `postgres` (db `postgres`)
#   GATEWAY_TEST_PG_BIN / GATEWAY_TEST_PG_DATA / GATEWAY_TEST_PG_PORT / GATEWAY_TEST_PG_LOG
#                                    for scripts/pg-ctl.sh stop|start|restart|status
#   GATEWAY_TEST_REDIS_URL           redis://127.0.0.1:PORT/0
# A service that cannot be had leaves its variables unset (a line on stderr says so);
# tests then skip with a reason.
#
# Knobs: GATEWAY_TEST_PG_BIN (PostgreSQL bin dir to use), GATEWAY_TEST_NO_INSTALL=1 (never
# apt-get install), GATEWAY_TEST_KEEP_TMP=1 (keep the temp dir with the server logs).
set -euo pipefail

log() { printf 'test-services: %s\n' "$*" >&2; }

if [[ "${1:-}" == "--" ]]; then shift; fi
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '3,/^set /{/^#/s/^# \{0,1\}//p}' "$0"
    exit 0
fi

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IS_ROOT=0
[[ "$(id -u)" == 0 ]] && IS_ROOT=1

# /tmp, not $TMPDIR: the unix socket path must stay short (<108 bytes) and the postgres
# user must be able to traverse to its data dir.
WORK="$(mktemp -d /tmp/gw-test-services.XXXXXX)"
chmod 755 "$WORK"

PG_PID=""
PG_DATA=""
REDIS_PID=""
SLEEP_PID=""
POLICY_RC_CREATED=0

alive() { # pid -> 0 while it runs (a zombie waiting for init to reap it counts as gone)
    local st
    kill -0 "$1" 2>/dev/null || return 1
    st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" || true
    [[ "$st" != Z ]]
}

wait_gone() { # pid timeout_tenths -> 0 when the pid is gone
    local pid=$1 n=$2
    while alive "$pid"; do
        ((n-- > 0)) || return 1
        sleep 0.1
    done
}

stop_pid() { # name pid first_signal: signal, wait, escalate
    local name=$1 pid=$2 sig=$3
    alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    if ! wait_gone "$pid" 300; then
        log "$name (pid $pid) did not stop after SIG$sig; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_gone "$pid" 100 || log "$name (pid $pid) is still running"
    fi
    # reap it if it is our own child (redis)
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -n "$SLEEP_PID" ]] && { kill "$SLEEP_PID" 2>/dev/null || true; }
    if [[ -n "$REDIS_PID" ]]; then
        stop_pid redis "$REDIS_PID" TERM
    fi
    if [[ -n "$PG_DATA" ]]; then
        # The tests may have restarted PostgreSQL (scripts/pg-ctl.sh), so prefer the
        # postmaster's current pid; fall back to the one recorded at start.
        local pid="$PG_PID"
        if [[ -f "$PG_DATA/postmaster.pid" ]]; then
            pid="$(head -n1 "$PG_DATA/postmaster.pid" 2>/dev/null || echo "$PG_PID")"
        fi
        # SIGINT = "fast" shutdown: does not wait for clients that are still connected.
        [[ -n "$pid" ]] && stop_pid postgres "$pid" INT
        [[ -n "$PG_PID" && "$PG_PID" != "$pid" ]] && stop_pid postgres "$PG_PID" INT
    fi
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; fi
    if [[ "${GATEWAY_TEST_KEEP_TMP:-}" == 1 ]]; then
        log "kept $WORK (server logs: $WORK/pg/postgres.log, $WORK/redis/redis.log)"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() ( exec 3<>"/dev/tcp/127.0.0.1/$1" ) 2>/dev/null

free_ports() { # n -> n distinct free loopback ports, one per line
    if ! command -v python3 >/dev/null; then # fallback: random unused ports
        local n=$1 p seen=" "
        while ((n > 0)); do
            p=$((20000 + RANDOM % 40000))
            [[ "$seen" == *" $p "* ]] && continue
            port_in_use "$p" && continue
            seen+="$p "; echo "$p"; n=$((n - 1))
        done
        return 0
    fi
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
EOF
}

# --- apt helpers (root only) ---------------------------------------------------------
APT_UPDATED=0
apt_install() { # pkg... -> 0 if one of the alternatives installed
    ((IS_ROOT)) || return 1
    [[ "${GATEWAY_TEST_NO_INSTALL:-}" == 1 ]] && return 1
    command -v apt-get >/dev/null || return 1
    # Keep the packages' postinst from starting system-wide services (port 5432/6379).
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_CREATED=1
    fi
    local pkg ok=1
    for pkg in "$@"; do
        log "installing $pkg with apt-get"
        if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" </dev/null >"$WORK/apt.log" 2>&1; then
            ok=0; break
        fi
        if ((!APT_UPDATED)); then
            APT_UPDATED=1
            DEBIAN_FRONTEND=noninteractive apt-get update -q </dev/null >>"$WORK/apt.log" 2>&1 || true
            if DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$pkg" </dev/null >>"$WORK/apt.log" 2>&1; then
                ok=0; break
            fi
        fi
    done
    if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
    ((ok == 0)) || { log "apt-get install failed:"; tail -n 5 "$WORK/apt.log" >&2 || true; }
    return $ok
}

# --- PostgreSQL ----------------------------------------------------------------------
find_pg_bin() {
    local d
    if [[ -n "${GATEWAY_TEST_PG_BIN:-}" && -x "${GATEWAY_TEST_PG_BIN}/initdb" ]]; then
        echo "$GATEWAY_TEST_PG_BIN"; return 0
    fi
    for d in /usr/lib/postgresql/15/bin $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
        [[ -x "$d/initdb" && -x "$d/pg_ctl" ]] && { echo "$d"; return 0; }
    done
    if command -v pg_config >/dev/null; then
        d="$(pg_config --bindir 2>/dev/null || true)"
        [[ -n "$d" && -x "$d/initdb" ]] && { echo "$d"; return 0; }
    fi
    command -v initdb >/dev/null && { dirname "$(command -v initdb)"; return 0; }
    return 1
}

start_postgres() {
    local bin port=$1 user as=() pgroot
    if ! bin="$(find_pg_bin)"; then
        apt_install postgresql-15 postgresql || true
        bin="$(find_pg_bin)" || { log "PostgreSQL is not available (no initdb found)"; return 1; }
    fi
    if ((IS_ROOT)); then
        # postgres refuses to run as root: own the data dir by, and run as, `postgres`.
        user=postgres
        id -u "$user" >/dev/null 2>&1 || { log "PostgreSQL: no 'postgres' OS user to run it as"; return 1; }
        as=(runuser -u "$user" --)
    else
        user="$(id -un)"
    fi
    pgroot="$WORK/pg"
    mkdir -p "$pgroot/sock"
    ((IS_ROOT)) && chown -R "$user:" "$pgroot"
    local data="$pgroot/data" pglog="$pgroot/postgres.log"
    printf 'postgres\n' > "$WORK/pwfile"
    chmod 644 "$WORK/pwfile"

    if ! (cd "$pgroot" && "${as[@]}" "$bin/initdb" -D "$data" -U postgres --pwfile="$WORK/pwfile" \
            --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-locale --no-sync \
            >"$WORK/initdb.log" 2>&1); then
        log "PostgreSQL initdb failed:"; tail -n 20 "$WORK/initdb.log" >&2
        return 1
    fi
    rm -f "$WORK/pwfile"
    # Settings live in postgresql.conf so a plain `pg_ctl -D DATA start` (pg-ctl.sh)
    # brings the server back on the same port/socket.
    cat >>"$data/postgresql.conf" <<EOF

# --- scripts/test-services.sh: throwaway test server ---
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$pgroot/sock'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
EOF
    PG_DATA="$data"
    if ! (cd "$pgroot" && "${as[@]}" "$bin/pg_ctl" -D "$data" -l "$pglog" -w -t 60 start >/dev/null 2>&1); then
        log "PostgreSQL failed to start:"; tail -n 20 "$pglog" >&2 || true
        return 1
    fi
    PG_PID="$(head -n1 "$data/postmaster.pid")"
    local i
    for ((i = 0; i < 100; i++)); do
        "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" -t 1 && break
        sleep 0.1
    done
    if ! (cd "$pgroot" && "${as[@]}" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$pgroot/sock" -p "$port" \
            -U postgres -d postgres >"$WORK/psql.log" 2>&1 <<'SQL'
CREATE ROLE gateway LOGIN CREATEDB PASSWORD 'gateway';
GRANT pg_signal_backend TO gateway;
CREATE DATABASE gateway_test OWNER gateway;
SQL
    ); then
        log "PostgreSQL: creating role/database failed:"; cat "$WORK/psql.log" >&2
        return 1
    fi
    export GATEWAY_TEST_POSTGRES_URL="postgresql://gateway:gateway@127.0.0.1:$port/gateway_test"
    export GATEWAY_TEST_POSTGRES_ADMIN_URL="postgresql://postgres:postgres@127.0.0.1:$port/postgres"
    export GATEWAY_TEST_PG_BIN="$bin" GATEWAY_TEST_PG_DATA="$data" GATEWAY_TEST_PG_PORT="$port"
    export GATEWAY_TEST_PG_LOG="$pglog"
    log "PostgreSQL $("$bin/postgres" -V | awk '{print $3}') on 127.0.0.1:$port (pid $PG_PID, data $data)"
}

# --- Redis ---------------------------------------------------------------------------
redis_ping() ( # port -> 0 when it answers PONG (subshell: the fd closes with it)
    reply=""
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    printf 'PING\r\n' >&3
    IFS= read -r -t 1 reply <&3 || true
    [[ "$reply" == "+PONG"* ]]
) 2>/dev/null

start_redis() {
    local port=$1 srv
    srv="$(command -v redis-server || true)"
    if [[ -z "$srv" ]]; then
        apt_install redis-server || true
        srv="$(command -v redis-server || true)"
        [[ -n "$srv" ]] || { log "Redis is not available (no redis-server found)"; return 1; }
    fi
    mkdir -p "$WORK/redis"
    "$srv" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/redis" \
        --daemonize no --loglevel warning </dev/null >"$WORK/redis/redis.log" 2>&1 &
    REDIS_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        redis_ping "$port" && break
        alive "$REDIS_PID" || break
        sleep 0.1
    done
    if ! redis_ping "$port"; then
        log "Redis failed to start:"; tail -n 20 "$WORK/redis/redis.log" >&2 || true
        return 1
    fi
    export GATEWAY_TEST_REDIS_URL="redis://127.0.0.1:$port/0"
    log "Redis $("$srv" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1:$port (pid $REDIS_PID)"
}

unset GATEWAY_TEST_POSTGRES_URL GATEWAY_TEST_POSTGRES_ADMIN_URL GATEWAY_TEST_REDIS_URL \
    GATEWAY_TEST_PG_DATA GATEWAY_TEST_PG_PORT GATEWAY_TEST_PG_LOG
mapfile -t PORTS < <(free_ports 2)
start_postgres "${PORTS[0]}" || log "PostgreSQL unavailable: GATEWAY_TEST_POSTGRES_URL left unset"
start_redis "${PORTS[1]}" || log "Redis unavailable: GATEWAY_TEST_REDIS_URL left unset"
# The UI tests drive Debian's Chromium (Playwright's own browser download fails offline).
if ! command -v chromium >/dev/null 2>&1; then
    apt_install chromium || log "Chromium unavailable: the browser tests will skip"
fi
export GATEWAY_TEST_PG_CTL="$SCRIPT_DIR/pg-ctl.sh"

if (($# == 0)); then
    env | grep '^GATEWAY_TEST_' | sed 's/^/export /'
    log "services running; press Ctrl-C to stop them"
    while :; do sleep 3600 & SLEEP_PID=$!; wait "$SLEEP_PID" || true; done
fi

set +e
"$@"
rc=$?
set -e
exit "$rc"
