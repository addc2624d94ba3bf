#!/usr/bin/env bash
# Compares `collections thumbnail` with the seed's Pillow approach and with
# libvips' vipsthumbnail on one generated folder of phone-sized photos.
# Installs what it needs (Pillow in .local/venv; libvips-tools and time from Debian).
#   scripts/compare-thumbnails.sh [--jpegs N] [--pngs N] [--rounds N]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
cd "$ROOT"

# vipsthumbnail is the libvips peer.
command -v vipsthumbnail >/dev/null || apt_install libvips-tools
collections="$(ensure_bench_binary)"
"$VENV/bin/python" scripts/compare_thumbnails.py "$collections" "$STATE/bench/thumbnails" "$@"
