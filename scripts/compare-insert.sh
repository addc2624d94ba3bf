#!/usr/bin/env bash
# Compares the project's batch insert path with psql's binary COPY on the
# same 1024-dimensional vectors, with and without the HNSW index, and
# measures the deferred-index mode. Starts PostgreSQL (scripts/postgres.sh)
# unless DATABASE_URL is set.
#   scripts/compare-insert.sh [--rows N] [--indexed-rows N] [--batch N] [--rounds N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_database
psql="${COLLECTIONS_PGBIN:+$COLLECTIONS_PGBIN/}psql"
log "building and running compare-insert (release)"
cargo run --quiet --release -p collections-benches --bin compare-insert -- --psql "$psql" "$@"
