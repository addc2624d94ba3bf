#!/usr/bin/env bash
# The full test suite: starts the services the tests need (PostgreSQL +
# pgvector), then runs every test of the workspace. Fails when a test fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
eval "$(bash scripts/postgres.sh env)"
# Services this run started are stopped when it ends; ones already running stay.
cleanup() { if [[ "${COLLECTIONS_PG_STARTED:-0}" == 1 ]]; then bash scripts/postgres.sh stop; fi; }
trap cleanup EXIT

log "cargo test --workspace"
cargo test --workspace --quiet
