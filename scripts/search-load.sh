#!/usr/bin/env bash
# Load on the search API as `collections serve` hosts it: 100 000 stored
# vectors over 20 users (made once into the database collections_search_load
# and kept), then searches over HTTP by 1, 10 and 50 concurrent clients, with
# the local embedder (its vectors of repeated queries kept, as the search
# service keeps them). Prints p50, p95, requests/s and the database's CPU
# time per search (its backends' CPU from /proc, so PostgreSQL must run on
# this machine); then the same for "more like this" of the user's items.
# Starts PostgreSQL (scripts/postgres.sh) unless DATABASE_URL is set.
#   scripts/search-load.sh [--vectors N] [--users N] [--requests N] [--concurrency 1,10,50]
#                          [--provider-latency-ms MS] [--query-cache N] [--pool N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_database
# The release build: the figures users get (the dev profile leaves the
# project's own code unoptimised).
log "building (release) and running search-load"
cargo run --quiet --release -p collections-benches --bin search-load -- "$@"
