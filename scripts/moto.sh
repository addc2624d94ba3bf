#!/usr/bin/env bash
# Starts moto_server (from PyPI, into .local/venv) as the local AWS endpoint
# the tests reach through the real AWS SDK. Idempotent.
#
#   scripts/moto.sh          start; prints the settings
#   scripts/moto.sh env      the same, as `export ...` lines
#   scripts/moto.sh stop     stop it
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PORT="${COLLECTIONS_MOTO_PORT:-54330}"
DIR="$STATE/moto"
PID_FILE="$DIR/server.pid"
URL="http://127.0.0.1:$PORT"

running() { [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; }

case "${1:-start}" in
    stop)
        if running; then kill "$(cat "$PID_FILE")"; log "moto_server stopped"; fi
        rm -f "$PID_FILE"
        exit 0
        ;;
    start | env) ;;
    *) die "usage: $0 [start|env|stop]" ;;
esac

ensure_venv "$ROOT/scripts/requirements-test.txt"
mkdir -p "$DIR"
STARTED=0
if ! running; then
    log "starting moto_server on $URL"
    nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$PORT" >"$DIR/server.log" 2>&1 &
    echo $! >"$PID_FILE"
    STARTED=1
    for _ in $(seq 1 100); do
        if "$VENV/bin/python" -c "import urllib.request; urllib.request.urlopen('$URL/moto-api/reset', data=b'')" 2>/dev/null; then
            break
        fi
        running || { tail -n 20 "$DIR/server.log" >&2; die "moto_server exited (log: $DIR/server.log)"; }
        sleep 0.2
    done
fi

settings=(
    "AWS_ENDPOINT_URL=$URL"
    "AWS_ACCESS_KEY_ID=test"
    "AWS_SECRET_ACCESS_KEY=test"
    "AWS_REGION=us-east-1"
)
if [[ "${1:-start}" == env ]]; then
    printf 'export %s\n' "${settings[@]}"
    echo "export COLLECTIONS_MOTO_STARTED=$STARTED"
else
    printf '%s\n' "${settings[@]}"
fi
