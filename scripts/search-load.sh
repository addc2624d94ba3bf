#!/usr/bin/env bash
# Load on the search API as `collections serve` hosts it: 100 000 stored
# vectors over 20 users (made once into the database collections_search_load
# and kept), then searches over HTTP by 1, 10 and 50 concurrent clients, with
# the local embedder. Prints p50, p95 and requests/s. Starts PostgreSQL
# (scripts/postgres.sh) unless DATABASE_URL is set.
#   scripts/search-load.sh [--vectors N] [--users N] [--requests N] [--concurrency 1,10,50]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_database
# The dev profile (dependencies optimised, see Cargo.toml): nearly all the
# time of a search is PostgreSQL's, and it spares a release build of the SDKs.
log "building and running search-load"
cargo run --quiet -p collections-benches --bin search-load -- "$@"
