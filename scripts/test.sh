#!/usr/bin/env bash
# Runs every check and test: formatting, lints, unit and integration tests on SQLite and
# PostgreSQL, and the browser journeys in Chromium (hydrated and with JavaScript off).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

ensure_rust_tools
ensure_postgres
ensure_chromium
ensure_node_deps
ensure_python

log "cargo fmt --check"
cargo fmt --all -- --check

log "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

build_site

log "unit and integration tests (SQLite and PostgreSQL)"
cargo test --workspace

log "proofs under faults: SIGKILL loop and database faults on both backends (short forms; --long in RELIABILITY.md)"
scripts/proof.sh kill
scripts/proof.sh db

log "the real iMednet Python SDK against the simulator"
.venv/bin/python -m pytest -q tests/sdk

log "every README command against a fresh data directory (SQLite and PostgreSQL); the container files"
.venv/bin/python -m pytest -q tests/deploy

log "end-to-end tests in Chromium"
E2E_DATA="$ROOT/target/e2e-data"
rm -rf "$E2E_DATA"
export TRIALFLOW_E2E_DATA="$E2E_DATA"
export TRIALFLOW_E2E_ADMIN_PASSWORD="e2e-admin-password"
export TRIALFLOW_E2E_VIEWER_PASSWORD="e2e-viewer-password"
printf '%s' "$TRIALFLOW_E2E_ADMIN_PASSWORD" | target/debug/trialflow user add admin --role admin --password-stdin --data-dir "$E2E_DATA" >/dev/null
printf '%s' "$TRIALFLOW_E2E_VIEWER_PASSWORD" | target/debug/trialflow user add viewer --role viewer --password-stdin --data-dir "$E2E_DATA" >/dev/null
(cd end2end && npx playwright test)

log "all tests passed"
