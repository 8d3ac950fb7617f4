#!/usr/bin/env bash
# Starts a local ringup cluster: 3 nodes and a router on loopback, data under
# .ringup/local. Installs what is missing, builds, pushes sample data and
# prints how to use it. Stops cleanly on Ctrl-C or SIGTERM.
# Extra arguments go to `ringup local` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
ensure_build_deps
echo "== building (the first build compiles RocksDB and takes about 25 minutes)"
cargo build --release --workspace --bins
exec "$CARGO_TARGET_DIR/release/ringup" local "$@"
