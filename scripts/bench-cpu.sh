#!/usr/bin/env bash
# CPU per request: where a write or a GET spends its CPU, in the router and
# in the nodes. Starts a local cluster (3 nodes and a router on loopback),
# runs `ringup bench` writes, then GETs, and reads each process's CPU time
# (utime + stime from /proc/PID/stat) before and after each phase.
#
# Usage: scripts/bench-cpu.sh [--duration S] [--bin-dir DIR] [--rate N]
#   --duration S   seconds per phase (default 10)
#   --bin-dir DIR  use these ringup binaries instead of building them
#   --rate N       run the GET phase open loop at N requests/s (default: as fast as possible)
# Ports 7430-7433 on 127.0.0.1 (RINGUP_CPU_PORT moves the base).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

duration=10
bin_dir=""
rate=()
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --rate) rate=(--rate "$2"); shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$bin_dir" ]; then
  ensure_build_deps
  cargo build --release --bins -p ringup-router -p ringup-cli -p ringup-node >&2
  bin_dir="$CARGO_TARGET_DIR/release"
fi

base="${RINGUP_CPU_PORT:-7430}"
router="http://127.0.0.1:$base"
work=$(mktemp -d /tmp/ringup-cpu.XXXXXX)
"$bin_dir/ringup" local --dir "$work" --nodes 3 --base-port $((base + 1)) --router-listen "127.0.0.1:$base" \
  --bin-dir "$bin_dir" --no-sample >"$work/local.log" 2>&1 &
local_pid=$!
trap 'kill -TERM $local_pid 2>/dev/null; wait $local_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 450); do "$bin_dir/ringup" health --router "$router" >/dev/null 2>&1 && break; sleep 0.2; done
# `ringup bench` sends the local cluster's admin token.
export RINGUP_TOKEN_FILE="$work/admin-token"

ticks=$(getconf CLK_TCK)
# CPU seconds used so far by every process whose command line matches $1.
cpu_of() {
  local total=0 pid
  for pid in $(pgrep -f "$1" || true); do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$pid/stat")))
  done
  echo "$total"
}

# Runs one phase and prints its line: requests, rate, and CPU µs per request.
phase() {
  local name=$1; shift
  local r0 n0 r1 n1 summary
  r0=$(cpu_of "ringup-router --listen 127.0.0.1:$base")
  n0=$(cpu_of "ringup-node .*$work")
  summary=$("$bin_dir/ringup" bench --router "$router" --quiet --json "$@")
  r1=$(cpu_of "ringup-router --listen 127.0.0.1:$base")
  n1=$(cpu_of "ringup-node .*$work")
  python3 - "$name" "$summary" "$((r1 - r0))" "$((n1 - n0))" "$ticks" <<'PY'
import json, sys
name, summary, router, nodes, ticks = sys.argv[1], json.loads(sys.argv[2]), *map(int, sys.argv[3:])
requests = sum(op["requests"] for op in summary["ops"].values())
records = sum(op["records"] for op in summary["ops"].values())
secs = summary["elapsed_s"]
per = lambda t: t / ticks * 1e6 / max(requests, 1)
print(f"{name:<6} {requests:>9} {requests / secs:>10.0f} {records / secs:>11.0f} {per(router):>12.0f} {per(nodes):>12.0f}"
      f" {router / ticks / secs * 100:>9.0f}% {nodes / ticks / secs * 100:>9.0f}%")
PY
}

load=(--shops 1000 --batch 50 --record-size 256 --concurrency 32 --seed 1)
echo "machine: $(nproc) cores; binaries: $bin_dir"
echo "phase   requests      req/s   records/s  router µs/req  nodes µs/req  router CPU  nodes CPU"
phase write "${load[@]}" --duration "$duration"
phase get "${load[@]}" --gets 100 --preload 20 --duration "$duration" "${rate[@]}"
