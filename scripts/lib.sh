# Shared by the project's scripts: paths, and the Python tools venv.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything the scripts install or start lives here (ignored by git).
STATE="$ROOT/.local"
VENV="$STATE/venv"

# Bold only on a terminal: logs and CI output get no escape codes.
if [[ -t 2 ]]; then
    log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
else
    log() { printf '==> %s\n' "$*" >&2; }
fi
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs pinned Python tools into the project's venv: the requirements
# files given (default scripts/requirements.txt), each once per change.
ensure_venv() {
    local files=("$@")
    [[ ${#files[@]} -gt 0 ]] || files=("$ROOT/scripts/requirements.txt")
    [[ -x "$VENV/bin/python" ]] || { mkdir -p "$STATE"; python3 -m venv "$VENV"; }
    local file stamp want
    for file in "${files[@]}"; do
        stamp="$VENV/.$(basename "$file").sha256"
        want="$(sha256sum "$file" | cut -d' ' -f1)"
        if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
            log "installing Python tools from ${file#"$ROOT"/} into $VENV"
            "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$file"
            echo "$want" > "$stamp"
        fi
    done
}

# Installs Debian packages (with sudo when not root), updating the index once if needed.
# Usage: apt_install [--no-recommends] PACKAGE...
apt_install() {
    local options=(-y -qq)
    if [[ ${1:-} == --no-recommends ]]; then options+=(--no-install-recommends); shift; fi
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "installing $* needs root or sudo; install them and run again"
        sudo=(sudo)
    fi
    log "installing $* (Debian packages)"
    "${sudo[@]}" apt-get install "${options[@]}" "$@" >/dev/null 2>&1 \
        || { "${sudo[@]}" apt-get update -qq >/dev/null && "${sudo[@]}" apt-get install "${options[@]}" "$@" >/dev/null; } \
        || die "could not install $*; install them and run again"
}

# Debian packages the build needs: nasm assembles libjpeg-turbo's SIMD code.
ensure_build_tools() {
    local missing=()
    command -v nasm >/dev/null || missing+=(nasm)
    command -v cc >/dev/null || missing+=(gcc)
    [[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
}

# What the comparison scripts share: the build tools, Pillow in the venv
# (to generate photos), GNU time (for peak RSS), and the release binary;
# prints the binary's path.
ensure_bench_binary() {
    {
        ensure_build_tools
        ensure_venv
        "$VENV/bin/pip" install --quiet --disable-pip-version-check "pillow==12.3.0"
        [[ -x /usr/bin/time ]] || apt_install time
        log "building collections (release)"
        cargo build --quiet --release -p collections
    } >&2
    local target
    target="$(cargo metadata --format-version 1 --no-deps | "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
    echo "$target/release/collections"
}

# PostgreSQL + pgvector (scripts/postgres.sh, started if stopped), unless
# DATABASE_URL names a server of your own; exports DATABASE_URL.
ensure_database() {
    if [[ -z "${DATABASE_URL:-}" ]]; then
        local pg_env
        pg_env="$(bash "$ROOT/scripts/postgres.sh" env)"
        eval "$pg_env"
    fi
}

# Debian's Chromium and its matching driver, for scripts/browser-test.py (which
# expects them at these paths). Recommends are skipped: they pull in a desktop.
ensure_browser() {
    local missing=()
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
    [[ ${#missing[@]} -eq 0 ]] || apt_install --no-recommends "${missing[@]}"
}
