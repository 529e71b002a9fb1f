#!/usr/bin/env bash
# Runs trialflow on http://127.0.0.1:3000 with its data in ./data, installing what is missing first.
#   ./scripts/run.sh [--release] [serve flags…]   e.g. ./scripts/run.sh --release --addr 0.0.0.0:8080
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

profile=debug
if [ "${1:-}" = "--release" ]; then
  profile=release
  shift
fi

ensure_rust_tools
if [ "$profile" = release ]; then
  ensure_wasm_opt
  build_site --release
else
  build_site
fi

mkdir -p "${TRIALFLOW_DATA_DIR:-./data}"
log "starting trialflow (Ctrl-C stops it)"
echo "Lost the admin password? target/$profile/trialflow user reset-password admin" >&2
exec "target/$profile/trialflow" serve --demo "$@"
