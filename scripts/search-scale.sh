#!/usr/bin/env bash
# Search at scale: 100 000 vectors over 1 000 users of Zipf sizes (made once
# into the database collections_search_scale and kept), recall@10 against an
# exact scan and p50/p95 per user-size bucket, and bytes per vector. Starts
# PostgreSQL (scripts/postgres.sh) unless DATABASE_URL is set.
#   scripts/search-scale.sh [--vectors N] [--users N] [--queries N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_database
log "building and running search-scale"
cargo run --quiet -p collections-benches --bin search-scale -- "$@"
