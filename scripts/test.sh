#!/usr/bin/env bash
# The full test suite: starts the services the tests need (PostgreSQL +
# pgvector, and moto_server as the local AWS endpoint), runs every Rust test
# of the workspace, then the CDK app's tests (synthesis, assertions, cdk-nag,
# cfn-lint). Fails when a test fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_venv "$ROOT/scripts/requirements.txt" "$ROOT/scripts/requirements-test.txt"
eval "$(bash scripts/postgres.sh env)"
eval "$(bash scripts/moto.sh env)"
# Services this run started are stopped when it ends; ones already running stay.
cleanup() {
    if [[ "${COLLECTIONS_MOTO_STARTED:-0}" == 1 ]]; then bash scripts/moto.sh stop; fi
    if [[ "${COLLECTIONS_PG_STARTED:-0}" == 1 ]]; then bash scripts/postgres.sh stop; fi
}
trap cleanup EXIT

log "cargo test --workspace"
cargo test --workspace --quiet

log "infra: npm ci && npm test"
npm --prefix infra ci --silent --no-audit --no-fund
CFN_LINT="$VENV/bin/cfn-lint" npm --prefix infra test --silent
