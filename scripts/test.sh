#!/usr/bin/env bash
# The whole gate: formatting, clippy with warnings as errors, and every test
# (unit, property and end-to-end with real processes on loopback).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_build_deps
ensure_promtool
ensure_postgres

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== import cycles"
python3 scripts/module-graph.py --quiet
echo "== cargo clippy"
cargo clippy --release --workspace --all-targets -- -D warnings
echo "== cargo build (binaries for the end-to-end tests)"
cargo build --release --workspace --bins
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --no-fail-fast --workspace --exclude ringup-tests 2>&1 | tee "$log" || status=$?
echo "== end-to-end tests (real processes on loopback; their figures are printed)"
cargo test --release --no-fail-fast -p ringup-tests -- --nocapture 2>&1 | tee -a "$log" || status=$?
# One closing line over every test binary. A test whose peer is missing
# (PostgreSQL, Docker) fails: nothing is skipped.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) s += $i } }
     END { printf "tests: %d passed, %d failed, %d ignored\n", p, f, s }' "$log"
exit "$status"
