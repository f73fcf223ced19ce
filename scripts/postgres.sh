#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for gristmill's SQL jobs and tests, on a Unix
# socket only (no TCP), with its data under the repository's var/postgres/.
#
#   scripts/postgres.sh start    init the cluster if needed, start it (idempotent)
#   scripts/postgres.sh stop     stop it if it runs (idempotent)
#   scripts/postgres.sh status   exit 0 when it runs
#   scripts/postgres.sh env      print the libpq variables to reach it:
#                                eval "$(scripts/postgres.sh env)"; psql -c 'select 1'
#   scripts/postgres.sh destroy  stop it and delete its data
#
# The server runs as the `postgres` user (PostgreSQL refuses root); the data folder is
# handed to that user. Durability is off (fsync etc.): this cluster is for tests only.
# Not wired into `make test` yet.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="${GRISTMILL_PG_DIR:-$ROOT/var/postgres}"
DATA="$BASE/data"
LOG="$BASE/postgres.log"
PORT="${GRISTMILL_PG_PORT:-5432}"
DATABASE="${GRISTMILL_PG_DATABASE:-gristmill}"
SUPERUSER="postgres"

die() { printf 'postgres.sh: error: %s\n' "$*" >&2; exit 1; }
say() { printf 'postgres.sh: %s\n' "$*"; }

# Newest installed server, unless PG_BIN says otherwise.
if [[ -z "${PG_BIN:-}" ]]; then
    PG_BIN="$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
[[ -n "$PG_BIN" && -x "$PG_BIN/pg_ctl" ]] \
    || die "no PostgreSQL server found (/usr/lib/postgresql/*/bin); run scripts/install-system.sh"

# A Unix socket path may hold at most 107 bytes: when the repository sits deep,
# the socket goes to a short folder under /tmp named after the repository.
SOCKET_DIR="$BASE/run"
if ((${#SOCKET_DIR} + 20 > 100)); then
    SOCKET_DIR="/tmp/gristmill-pg-$(printf '%s' "$ROOT" | md5sum | cut -c1-12)"
fi

# Run a command as the server's owner.
if ((EUID == 0)); then
    id -u postgres >/dev/null 2>&1 || die "no 'postgres' user (is the postgresql package installed?)"
    as_owner() { runuser -u postgres -- "$@"; }
else
    as_owner() { "$@"; }
fi

is_running() {
    [[ -f "$DATA/PG_VERSION" ]] && as_owner "$PG_BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1
}

prepare_dirs() {
    mkdir -p "$BASE" "$SOCKET_DIR"
    if ((EUID == 0)); then
        chown postgres:postgres "$BASE" "$SOCKET_DIR"
        chmod 0700 "$BASE"
        chmod 0755 "$SOCKET_DIR"
        # The owner must be able to walk down to its folder.
        as_owner test -w "$BASE" \
            || die "user postgres cannot reach $BASE (a parent folder is not searchable by others); set GRISTMILL_PG_DIR"
    fi
}

cmd_start() {
    if is_running; then
        say "already running (socket $SOCKET_DIR, port $PORT)"
        return
    fi
    prepare_dirs
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        say "initdb $DATA"
        as_owner "$PG_BIN/initdb" -D "$DATA" -U "$SUPERUSER" --auth=trust \
            --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$BASE/initdb.log" 2>&1 \
            || { cat "$BASE/initdb.log" >&2; die "initdb failed"; }
    fi
    say "starting (socket $SOCKET_DIR, port $PORT, log ${LOG#"$ROOT"/})"
    as_owner "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start -o "\
-c listen_addresses='' -c port=$PORT -c unix_socket_directories='$SOCKET_DIR' \
-c fsync=off -c synchronous_commit=off -c full_page_writes=off \
-c max_connections=100 -c shared_buffers=64MB" >/dev/null \
        || { tail -n 20 "$LOG" >&2 || true; die "pg_ctl start failed"; }
    local psql=("$PG_BIN/psql" -h "$SOCKET_DIR" -p "$PORT" -U "$SUPERUSER" -d postgres -X -q -t -A)
    if [[ "$(as_owner "${psql[@]}" -c "select 1 from pg_database where datname = '$DATABASE'")" != 1 ]]; then
        as_owner "${psql[@]}" -c "create database \"$DATABASE\"" >/dev/null
        say "created database $DATABASE"
    fi
    say "ready: eval \"\$(scripts/postgres.sh env)\""
}

cmd_stop() {
    if ! is_running; then
        say "not running"
        return
    fi
    as_owner "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null
    say "stopped"
}

cmd_env() {
    printf 'export PGHOST=%q PGPORT=%q PGUSER=%q PGDATABASE=%q\n' \
        "$SOCKET_DIR" "$PORT" "$SUPERUSER" "$DATABASE"
    printf 'export GRISTMILL_DATABASE_URL=%q\n' \
        "postgresql://$SUPERUSER@/$DATABASE?host=$SOCKET_DIR&port=$PORT"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status)
        if is_running; then say "running (socket $SOCKET_DIR, port $PORT)"; else say "not running"; exit 1; fi
        ;;
    env) cmd_env ;;
    destroy)
        cmd_stop
        rm -rf "$BASE"
        [[ "$SOCKET_DIR" == "$BASE/run" ]] || rm -rf "$SOCKET_DIR"
        say "deleted $BASE"
        ;;
    *)
        sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
