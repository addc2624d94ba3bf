#!/usr/bin/env bash
# Compares `collections thumbnail` with the seed's Pillow approach and with
# libvips' vipsthumbnail on one generated folder of phone-sized photos.
# Installs what it needs (Pillow in .local/venv; libvips-tools and time from Debian).
#   scripts/compare-thumbnails.sh [--jpegs N] [--pngs N] [--rounds N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

ensure_build_tools
ensure_venv
"$VENV/bin/pip" install --quiet --disable-pip-version-check "pillow==12.3.0"
# GNU time measures each tool's peak RSS; vipsthumbnail is the libvips peer.
command -v vipsthumbnail >/dev/null && [[ -x /usr/bin/time ]] || apt_install libvips-tools time
log "building collections (release)"
cargo build --quiet --release -p collections
target="$(cargo metadata --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
"$VENV/bin/python" scripts/compare_thumbnails.py "$target/release/collections" "$STATE/bench/thumbnails" "$@"
