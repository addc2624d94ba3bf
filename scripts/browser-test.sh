#!/usr/bin/env bash
# The gallery in a real browser: the pipeline over samples/ (offline
# providers) into a database and bucket of its own, `collections serve` on a
# port of its own, then scripts/browser-test.py drives Debian's Chromium
# through the page: a search, every thumbnail loaded, a hit opened by
# keyboard. Needs PostgreSQL started (scripts/test.sh does that).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_browser
ensure_venv "$ROOT/scripts/requirements.txt" "$ROOT/scripts/requirements-test.txt"
pg_env="$(COLLECTIONS_PG_DB=collections_browser bash scripts/postgres.sh env)"
eval "$pg_env"
PORT="${COLLECTIONS_BROWSER_PORT:-54331}"
COLLECTIONS_DATA_DIR="$(mktemp -d)"
export COLLECTIONS_DATA_DIR
server=""
cleanup() {
    [[ -z "$server" ]] || kill "$server" 2>/dev/null || true
    rm -rf "$COLLECTIONS_DATA_DIR"
}
trap cleanup EXIT

cargo build --quiet -p collections
collections="${CARGO_TARGET_DIR:-$ROOT/target}/debug/collections"
"$collections" run samples --user demo --force >/dev/null
"$collections" serve --user demo --port "$PORT" &
server=$!
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    kill -0 "$server" 2>/dev/null || die "collections serve exited"
    sleep 0.1
done
"$VENV/bin/python" scripts/browser-test.py --url "http://127.0.0.1:$PORT/" --query "dark, mostly black" --expect-min 3
