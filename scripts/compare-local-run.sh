#!/usr/bin/env bash
# How close the whole local pipeline (`collections run`: thumbnails, the
# offline analyzer, the local embedder, PostgreSQL) comes to thumbnailing
# alone (`collections thumbnail`) on one folder of distinct 3 MP photos.
# Installs what it needs (Pillow in .local/venv, time from Debian) and
# starts PostgreSQL (scripts/postgres.sh) unless DATABASE_URL is set.
#   scripts/compare-local-run.sh [--photos N] [--rounds N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

collections="$(ensure_bench_binary)"
ensure_database
export COLLECTIONS_PSQL="${COLLECTIONS_PGBIN:+$COLLECTIONS_PGBIN/}psql"
"$VENV/bin/python" scripts/compare_local_run.py "$collections" "$STATE/bench/local-run" "$@"
