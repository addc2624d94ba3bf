# Shared by the project's scripts: paths, and the Python tools venv.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Everything the scripts install or start lives here (ignored by git).
STATE="$ROOT/.local"
VENV="$STATE/venv"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Installs the pinned Python tools (requirements in scripts/requirements.txt)
# into the project's venv, once per change of that file.
ensure_venv() {
    local stamp="$VENV/.requirements.sha256" want
    want="$(sha256sum "$ROOT/scripts/requirements.txt" | cut -d' ' -f1)"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        return
    fi
    log "installing Python tools into $VENV"
    mkdir -p "$STATE"
    [[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$ROOT/scripts/requirements.txt"
    echo "$want" > "$stamp"
}

# Installs Debian packages (with sudo when not root), updating the index once if needed.
apt_install() {
    log "installing $* (Debian packages)"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null 2>&1 \
        || { "${sudo[@]}" apt-get update -qq >/dev/null && "${sudo[@]}" apt-get install -y -qq "$@" >/dev/null; } \
        || die "could not install $*; install them and run again"
}

# Debian packages the build needs: nasm assembles libjpeg-turbo's SIMD code.
ensure_build_tools() {
    local missing=()
    command -v nasm >/dev/null || missing+=(nasm)
    command -v cc >/dev/null || missing+=(gcc)
    [[ ${#missing[@]} -eq 0 ]] || apt_install "${missing[@]}"
}
