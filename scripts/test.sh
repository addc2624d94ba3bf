#!/usr/bin/env bash
# The full test suite: checks the formatting and lints (rustfmt, clippy with
# warnings as errors), starts the services the tests need (PostgreSQL +
# pgvector, and moto_server as the local AWS endpoint), checks the PostgreSQL
# set-up in a clone its server user cannot reach, runs every Rust test of the
# workspace, the gallery in Chromium, `--batch-api` killed and resumed with
# the real binary, then the CDK app's tests (synthesis, assertions, cdk-nag,
# cfn-lint). Fails when a check or a test fails.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools

log "cargo fmt --check"
cargo fmt --all --check
log "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --quiet --workspace --all-targets -- -D warnings

ensure_venv "$ROOT/scripts/requirements.txt" "$ROOT/scripts/requirements-test.txt"
# An assignment, not `eval "$(...)"`, so a failing set-up stops the script here.
pg_env="$(bash scripts/postgres.sh env)"
eval "$pg_env"
moto_env="$(bash scripts/moto.sh env)"
eval "$moto_env"
# Services this run started are stopped when it ends; ones already running stay.
cleanup() {
    if [[ "${COLLECTIONS_MOTO_STARTED:-0}" == 1 ]]; then bash scripts/moto.sh stop; fi
    if [[ "${COLLECTIONS_PG_STARTED:-0}" == 1 ]]; then bash scripts/postgres.sh stop; fi
}
trap cleanup EXIT

log "scripts/postgres.sh in a clone the postgres user cannot reach"
bash scripts/test-private-clone.sh

log "cargo test --workspace"
cargo test --workspace --quiet

log "the gallery in Chromium (scripts/browser-test.sh)"
bash scripts/browser-test.sh

log "--batch-api with the real binary, killed with SIGKILL and run again (scripts/batch-api-kill.sh)"
bash scripts/batch-api-kill.sh

log "infra: npm ci && npm test"
npm --prefix infra ci --silent --no-audit --no-fund
CFN_LINT="$VENV/bin/cfn-lint" npm --prefix infra test --silent
