#!/usr/bin/env bash
# Runs trialflow on http://127.0.0.1:3000 with its data in ./data, installing what is missing first.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_rust_tools
build_site

mkdir -p "${TRIALFLOW_DATA_DIR:-./data}"
log "starting trialflow (Ctrl-C stops it)"
echo "Lost the admin password? target/debug/trialflow user reset-password admin" >&2
exec target/debug/trialflow serve --demo "$@"
