#!/usr/bin/env bash
# Search at scale: 100 000 vectors over 1 000 users of Zipf sizes (made once
# into the database collections_search_scale and kept), recall@10 against an
# exact scan, p50/p95 and PostgreSQL's CPU per search (from /proc: the server
# must run on this machine) per user-size bucket, and bytes per vector, in
# the release build. Starts PostgreSQL (scripts/postgres.sh) unless
# DATABASE_URL is set.
#   scripts/search-scale.sh [--vectors N] [--users N] [--queries N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_database
log "building (release) and running search-scale"
cargo run --quiet --release -p collections-benches --bin search-scale -- "$@"
