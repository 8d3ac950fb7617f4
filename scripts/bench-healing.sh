#!/usr/bin/env bash
# What continuous anti-entropy costs the foreground: the same fixed-rate
# ingest on a loaded local 3-node cluster, once with anti-entropy paused
# and once with it running back to back at its default budget, and the
# ingest's p50/p99 in each.
#
#   scripts/bench-healing.sh                 # 512 MiB of records
#   DATA_MIB=2048 RATE=200 scripts/bench-healing.sh
#
# Settings from the environment: DATA_MIB (records loaded, MiB of JSON;
# default 512), RATE (batches per second of the ingest; default 100, of 50
# records of 1 KB), WINDOWS (15 s windows per mode; default 3). Loopback
# only; each cluster is stopped and deleted at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-cluster.sh

DATA_MIB=${DATA_MIB:-512}
WINDOWS=${WINDOWS:-3}
bench_setup 18580 18501
dir=
cluster_pid=
cleanup() {
  [ -n "$cluster_pid" ] && kill -TERM "$cluster_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  if [ -n "$dir" ]; then rm -rf "$dir"; fi
}
trap cleanup EXIT
say() { printf '%s\n' "$*" >&2; }

# The sum over the nodes of one ringup_node_ sample in /metrics.
node_metric() {
  curl -s "$router/metrics" | awk -v name="ringup_node_$1" '$1 ~ "^"name"[{ ]" || $1 == name { s += $NF } END { printf "%.0f\n", s }'
}

# Runs one mode: $1 a name, then environment assignments for the nodes.
run_mode() {
  local name=$1; shift
  dir=$(mktemp -d /tmp/ringup-bench-healing.XXXXXX)
  start_local "$dir" "$@"
  local requests=$(( DATA_MIB * 1024 * 1024 / (BATCH * RECORD) ))
  say "== $name: loading ${DATA_MIB} MiB"
  "$bin/ringup" bench --router "$router" --requests "$requests" --batch "$BATCH" --record-size "$RECORD" \
    --shops 20000 --concurrency 32 --quiet --json --seed 7 >/dev/null
  sleep 5
  local scanned_before
  scanned_before=$(node_metric anti_entropy_read_bytes_total)
  : >"$dir/ingest.json"
  for seed in $(seq 1 "$WINDOWS"); do
    "$bin/ringup" bench --router "$router" --rate "$RATE" --duration 15 --batch 50 --record-size "$RECORD" \
      --shops 20000 --concurrency 64 --quiet --json --seed "$((100 + seed))" >>"$dir/ingest.json"
  done
  local scanned
  scanned=$(( $(node_metric anti_entropy_read_bytes_total) - scanned_before ))
  python3 - "$dir/ingest.json" "$name" "$scanned" "$WINDOWS" <<'PY'
import sys
sys.path.insert(0, "scripts")
from summaries import read
rows = read(sys.argv[1])
lat = lambda r, q: r["ops"]["write"]["latency_ms"][q]
p50 = sorted(lat(r, "p50") for r in rows)[len(rows) // 2]
p99 = max(lat(r, "p99") for r in rows)
errors = sum(r["errors"] for r in rows)
mib_s = int(sys.argv[3]) / (15 * int(sys.argv[4])) / 1048576
print(f"| {sys.argv[2]} | {mib_s:.1f} | {p50:.2f} | {p99:.2f} | {errors} |")
PY
  kill -TERM "$cluster_pid"
  wait "$cluster_pid" 2>/dev/null || true
  cluster_pid=
  rm -rf "$dir"
  dir=
}

echo "| anti-entropy | MiB/s scanned and pulled (3 nodes) | ingest p50 ms (median window) | ingest p99 ms (worst window) | errors |"
echo "|---|---|---|---|---|"
run_mode paused RINGUP_ANTI_ENTROPY_MIB_PER_SEC=0
run_mode running RINGUP_ANTI_ENTROPY_INTERVAL_SECS=0
