#!/usr/bin/env bash
# The full test suite: starts the services the tests need (PostgreSQL +
# pgvector), then runs every test of the workspace. Fails when a test fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
eval "$(bash scripts/postgres.sh env)"

log "cargo test --workspace"
cargo test --workspace --quiet
