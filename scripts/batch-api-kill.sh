#!/usr/bin/env bash
# `--batch-api` with the real binary and a real SIGKILL: a mock server that
# speaks Anthropic's Message Batches API (crates/test-support's
# mock-providers), `collections run samples --batch-api` killed with SIGKILL
# once the provider holds its batch, then the same command again. Fails
# unless the second run submits no batch, makes no synchronous Messages
# call, and finishes every image. Needs PostgreSQL (scripts/test.sh starts it).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

pg_env="$(COLLECTIONS_PG_DB=collections_batch_api bash scripts/postgres.sh env)"
eval "$pg_env"
PORT="${COLLECTIONS_MOCK_PORT:-54341}"
COLLECTIONS_DATA_DIR="$(mktemp -d)"
export COLLECTIONS_DATA_DIR
mock=""
run=""
cleanup() {
    [[ -z "$run" ]] || kill -9 "$run" 2>/dev/null || true
    [[ -z "$mock" ]] || kill "$mock" 2>/dev/null || true
    rm -rf "$COLLECTIONS_DATA_DIR"
}
trap cleanup EXIT

cargo build --quiet -p collections -p test-support --bin collections --bin mock-providers
bin="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
# --batches-only: a synchronous Messages call would be refused, stopping the run.
"$bin/mock-providers" --port "$PORT" --batch-seconds 4 --batches-only >/dev/null &
mock=$!
base="http://127.0.0.1:$PORT/anthropic"
export ANALYZER_PROVIDER=anthropic ANTHROPIC_BASE_URL="$base" ANTHROPIC_API_KEY=sk-ant-mock ANALYZER_BATCH_POLL_SECS=0.2
# The mock's own list of message batches, and how many there are.
batches() {
    python3 - "$base" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1] + "/v1/messages/batches", headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
print(len(json.load(urllib.request.urlopen(request))["data"]))
PY
}
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
    sleep 0.1
done
user="kill-$(date +%s)-$$"
images="$(find samples -maxdepth 1 -iname '*.jpg' -o -maxdepth 1 -iname '*.png' | wc -l)"

log "collections run samples --user $user --batch-api, killed with SIGKILL once its batch is submitted"
"$bin/collections" run samples --user "$user" --batch-api >/dev/null 2>&1 &
run=$!
for _ in $(seq 300); do
    [[ "$(batches)" == 1 ]] && break
    sleep 0.1
done
[[ "$(batches)" == 1 ]] || die "no batch was submitted"
# The provider's answer is recorded as it comes; give it a moment, then kill.
sleep 0.5
kill -9 "$run"
wait "$run" 2>/dev/null || true
run=""
# The newest batch (listed first) is this run's.
newest() { "$bin/collections" batches | sed -n 2p; }
grep -Eq "^msgbatch_[0-9a-f]+  in_progress " <<<"$(newest)" || die "the batch in flight is not recorded: $(newest)"

log "the same command again"
out="$("$bin/collections" run samples --user "$user" --batch-api 2>/dev/null)"
echo "$out"
[[ "$(batches)" == 1 ]] || die "the second run submitted another batch ($(batches) in all)"
grep -q "^processed $images, skipped [0-9]*, failed 0$" <<<"$out" || die "not every one of the $images images was processed"
! grep -q "no longer waiting" <<<"$out" || die "an image was taken for deleted"
grep -Eq "^msgbatch_[0-9a-f]+  ingested .* $images stored" <<<"$(newest)" || die "the batch is not recorded as ingested: $(newest)"
log "ok: one batch for $images images, picked up after SIGKILL, nothing submitted twice"
