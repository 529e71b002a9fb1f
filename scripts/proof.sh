#!/usr/bin/env bash
# Proofs under faults with real processes (tests/proof): one JSON line per backend, also kept in
# target/proof/<proof>.jsonl. The short form runs in scripts/test.sh; --long is what
# RELIABILITY.md reports.
#   ./scripts/proof.sh kill|db [--long] [--backend sqlite|postgres|both]
# `db --long` also restarts the local PostgreSQL server mid-run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT"

proof="${1:-}"
shift || true
case "$proof" in
  kill | db) ;;
  *) echo "usage: scripts/proof.sh kill|db [--long] [--backend sqlite|postgres|both]" >&2; exit 2 ;;
esac
size=(--kills 3 --instances 100)
if [ "${1:-}" = "--long" ]; then
  size=(--kills 10 --instances 500)
  [ "$proof" = db ] && size+=(--restart-postgres)
  shift
fi

ensure_rust_tools
ensure_postgres
build_site

mkdir -p target/proof
log "proof $proof ${size[*]} $*"
cargo run -q -p tests --example proof -- "$proof" "${size[@]}" "$@" | tee "target/proof/$proof.jsonl"
