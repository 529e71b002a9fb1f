# Shared helpers for run.sh and test.sh: idempotent installs of everything the project needs.
# Each ensure_* step checks first and installs only what is missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

log() { printf '\033[1;34m==>\033[0m %s\n' "$*" >&2; }

apt_install() {
  if [ -z "${APT_UPDATED:-}" ]; then
    apt-get update -qq >&2
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

# Only the wasm target: the browser bundle is built by the workspace's own xtask
# (scripts/xtask, the wasm-bindgen library at the Cargo.lock version), so neither
# cargo-leptos nor the wasm-bindgen CLI is compiled on the way to the first page.
ensure_rust_tools() {
  if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32 target"
    rustup target add wasm32-unknown-unknown
  fi
}

# binaryen's wasm-opt for release bundles, from npm (Debian's 108 breaks hydration).
BINARYEN_VERSION="132.0.0"
ensure_wasm_opt() {
  local tools="$ROOT/.tools"
  if [ -x "$tools/node_modules/.bin/wasm-opt" ]; then
    return
  fi
  ensure_node
  log "installing wasm-opt (binaryen $BINARYEN_VERSION from npm) into .tools/"
  mkdir -p "$tools"
  (cd "$tools" && npm install --no-audit --no-fund --no-save "binaryen@$BINARYEN_VERSION" >&2)
}

ensure_node() {
  if ! command -v npm >/dev/null; then
    log "installing Node.js and npm"
    apt_install nodejs npm
  fi
}

ensure_chromium() {
  if ! [ -x /usr/bin/chromium ]; then
    log "installing Debian's Chromium"
    apt_install chromium chromium-driver
  fi
}

ensure_node_deps() {
  ensure_node
  if ! [ -d "$ROOT/end2end/node_modules/@playwright/test" ]; then
    log "installing Playwright (the library only; the browser is Debian's)"
    (cd "$ROOT/end2end" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund >&2)
  fi
}

# The venv with the real iMednet SDK (the independent client that proves the simulator) and moto.
ensure_python() {
  local venv="$ROOT/.venv" req="$ROOT/tests/sdk/requirements.txt"
  if [ -x "$venv/bin/python" ] && cmp -s "$req" "$venv/.installed-requirements"; then
    return
  fi
  if ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
    apt_install python3-venv
  fi
  log "creating the Python venv with imednet 0.5.0, pytest and moto"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$req" >&2
  cp "$req" "$venv/.installed-requirements"
}

# A PostgreSQL answering at 127.0.0.1:5432 as user postgres without a password.
ensure_postgres() {
  local url="${TRIALFLOW_TEST_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}"
  if psql "$url" -qtAc 'SELECT 1' >/dev/null 2>&1; then
    return
  fi
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql postgresql-client
  fi
  local version
  version="$(ls /etc/postgresql | sort -V | tail -n 1)"
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Test machines only: let local TCP connections in as postgres without a password.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  log "starting PostgreSQL $version"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
    || pg_ctlcluster --skip-systemctl-redirect "$version" main reload
  for _ in $(seq 1 30); do
    psql "$url" -qtAc 'SELECT 1' >/dev/null 2>&1 && return
    sleep 1
  done
  echo "PostgreSQL did not answer at $url" >&2
  exit 1
}

# One build of server binary + browser bundle (target/<profile>/trialflow and
# target/<profile>/site/), shared by every test stage. Pass --release for an optimised one.
build_site() {
  log "building trialflow (browser bundle + server) $*"
  (cd "$ROOT" && cargo run -q -p xtask -- build "$@")
}
