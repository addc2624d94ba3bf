#!/usr/bin/env bash
# The main job on a fresh machine: provision PostgreSQL + pgvector, build,
# run the whole pipeline over samples/ with the offline providers, then search.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
# An assignment, not `eval "$(...)"`, so a failing set-up stops the script here.
pg_env="$(bash scripts/postgres.sh env)"
eval "$pg_env"
# The demo's local bucket (originals and thumbnails) lives with the rest of .local.
export COLLECTIONS_DATA_DIR="${COLLECTIONS_DATA_DIR:-$STATE/demo}"

log "building collections"
cargo build --quiet -p collections
collections() { cargo run --quiet -p collections -- "$@"; }

log "collections run samples --user demo"
collections run samples --user demo
log "collections search \"dark, mostly black\" --user demo --limit 3"
collections search "dark, mostly black" --user demo --limit 3
log "done: thumbnails are under $COLLECTIONS_DATA_DIR/bucket/local/demo/thumbnails"
log "to browse them, run:"
echo "  DATABASE_URL=$DATABASE_URL COLLECTIONS_DATA_DIR=$COLLECTIONS_DATA_DIR cargo run -q -p collections -- serve --user demo"
log "and open http://127.0.0.1:8080/"
