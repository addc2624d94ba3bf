#!/usr/bin/env bash
# A clone where the PostgreSQL server's user cannot reach it (root working
# in a mode-700 folder, as under /root): scripts/postgres.sh must still set
# up and start the embedded PostgreSQL, and the database must answer.
# Part of scripts/test.sh; uses its own port, and stops what it started.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT="${COLLECTIONS_PRIVATE_PG_PORT:-54339}"
private="$(mktemp -d)" # mode 700
chmod 700 "$private"
clone="$private/collections"
cleanup() {
    if [[ -d "$clone" ]]; then COLLECTIONS_PG_PORT="$PORT" bash "$clone/scripts/postgres.sh" stop >/dev/null 2>&1 || true; fi
    # The server's folder outside the clone (see scripts/postgres.sh).
    rm -rf "/var/lib/collections-postgres/$(printf '%s' "$clone" | sha256sum | cut -c1-12)" "$private"
}
trap cleanup EXIT

git clone --quiet "$ROOT" "$clone"
if [[ $(id -u) -eq 0 ]] && runuser -u postgres -- test -x "$clone" 2>/dev/null; then
    die "the private folder $private is reachable by the postgres user; the test would prove nothing"
fi
# The clone's venv reuses pip's download cache, so this is quick after the first time.
env_lines="$(COLLECTIONS_PG_PORT="$PORT" bash "$clone/scripts/postgres.sh" env)"
eval "$env_lines"
[[ "$DATABASE_URL" == "postgres://postgres@127.0.0.1:$PORT/collections" ]] || die "unexpected DATABASE_URL $DATABASE_URL"
answer="$("$COLLECTIONS_PGBIN/psql" "$DATABASE_URL" -Atqc "CREATE EXTENSION IF NOT EXISTS vector; SELECT '[1,2]'::vector <=> '[2,4]'::vector")"
[[ "$answer" == "0" ]] || die "pgvector in the private clone's server answered ${answer:-nothing}"
log "private clone: PostgreSQL + pgvector set up outside the clone and answering on port $PORT"
