#!/usr/bin/env bash
# The membership benchmark: loads data into a local 3-node cluster, adds a
# fourth node while a fixed-rate ingest runs, then decommissions it again,
# and reports for each change:
#   - bytes streamed against the ideal 1/(N+1) of the replicated data;
#   - the streaming rate against a plain cp of the same SST files;
#   - the change's duration;
#   - ingest p50/p99 during the change against steady state.
#
#   scripts/bench-membership.sh              # 2 GiB of records
#   DATA_MIB=5120 scripts/bench-membership.sh
#
# Settings from the environment: DATA_MIB (records loaded, MiB of JSON;
# default 2048), RATE (batches per second of the ingest during the
# changes; default 100, of 50 records of 1 KB), KEEP=1 keeps the cluster's
# directory. Loopback only; the cluster is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/bench-cluster.sh

DATA_MIB=${DATA_MIB:-2048}
WINDOW=15
bench_setup 18480 18401
dir=$(mktemp -d /tmp/ringup-bench-membership.XXXXXX)
cluster_pid=
node4_pid=
cleanup() {
  [ -n "$node4_pid" ] && kill -TERM "$node4_pid" 2>/dev/null || true
  [ -n "$cluster_pid" ] && kill -TERM "$cluster_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "${KEEP:-0}" = 1 ] || rm -rf "$dir"
}
trap cleanup EXIT

say() { printf '%s\n' "$*" >&2; }
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
sst_bytes() { find "$@" -name '*.sst' -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {printf "%.0f\n", s}'; }
# Records written so far, summed over every bench summary in the directory.
records_written() {
  python3 - "$dir" <<'PY'
import glob, sys
sys.path.insert(0, "scripts")
from summaries import read
print(sum(row["records"] for path in glob.glob(sys.argv[1] + "/*.json") for row in read(path)))
PY
}

say "== a local cluster in $dir"
start_local "$dir"
"$bin/ringup" health --router "$router" >&2

requests=$(( DATA_MIB * 1024 * 1024 / (BATCH * RECORD) ))
say "== loading ${DATA_MIB} MiB: $requests batches of $BATCH records of about $RECORD bytes"
load_started=$(date +%s.%N)
"$bin/ringup" bench --router "$router" --requests "$requests" --batch "$BATCH" --record-size "$RECORD" \
  --shops 20000 --concurrency 32 --quiet --json --seed 7 >"$dir/load.json"
load_s=$(python3 -c "print(round($(date +%s.%N) - $load_started, 1))")
say "   loaded in ${load_s}s: $(json 'd["records"]' <"$dir/load.json") records"
sleep 10

# Ingest at a fixed rate, in windows of WINDOW seconds, until $1 exists;
# one JSON summary per window into $2.
ingest_until() {
  local stop=$1 out=$2 seed=100
  : >"$out"
  while [ ! -e "$stop" ]; do
    seed=$((seed + 1))
    "$bin/ringup" bench --router "$router" --rate "$RATE" --duration "$WINDOW" --batch 50 --record-size "$RECORD" \
      --shops 20000 --concurrency 64 --quiet --json --seed "$seed" >>"$out" || true
  done
}
percentiles() {
  python3 - "$1" <<'PY'
import sys
sys.path.insert(0, "scripts")
from summaries import read
rows = read(sys.argv[1])
def lat(r, q):
    return r["ops"]["write"]["latency_ms"][q]
p50 = sorted(lat(r, "p50") for r in rows)
p99 = [lat(r, "p99") for r in rows]
errors = sum(r["errors"] for r in rows)
print(f'{len(rows)} windows, p50 {p50[len(p50)//2]:.2f} ms (median of windows), p99 {max(p99):.2f} ms (worst window), errors {errors}')
PY
}

say "== steady state: ${RATE} batches/s for $((2 * WINDOW))s"
touch "$dir/none"
for seed in 1 2; do
  "$bin/ringup" bench --router "$router" --rate "$RATE" --duration "$WINDOW" --batch 50 --record-size "$RECORD" \
    --shops 20000 --concurrency 64 --quiet --json --seed "$((200 + seed))" >>"$dir/steady.json"
done
steady=$(percentiles "$dir/steady.json")
say "   $steady"

sleep 5
data_before=$(sst_bytes "$dir"/node-1/db "$dir"/node-2/db "$dir"/node-3/db)
say "== cp of node 1's SST files on this disk"
mkdir -p "$dir/cp"
sync
cp_started=$(date +%s.%N)
find "$dir/node-1/db" -name '*.sst' -exec cp {} "$dir/cp/" \;
sync
cp_s=$(python3 -c "print($(date +%s.%N) - $cp_started)")
cp_bytes=$(sst_bytes "$dir/cp")
cp_rate=$(python3 -c "print(round($cp_bytes / $cp_s / 1048576, 1))")
rm -rf "$dir/cp"
say "   $cp_bytes bytes in $(python3 -c "print(round($cp_s, 2))")s: $cp_rate MiB/s"

# Runs a change ($1: a ringup node subcommand) under the ingest; prints the report line.
change() {
  local name=$1; shift
  rm -f "$dir/done"
  ingest_until "$dir/done" "$dir/$name.json" &
  local ingest=$!
  local started
  started=$(date +%s.%N)
  "$bin/ringup" node --router "$router" "$@" --wait >"$dir/$name.log" 2>&1
  local took
  took=$(python3 -c "print(round($(date +%s.%N) - $started, 1))")
  touch "$dir/done"
  wait "$ingest"
  local last
  last=$(curl -s -H "authorization: Bearer $(cat "$RINGUP_TOKEN_FILE")" "$router/v1/cluster" | json 'json.dumps(d["last_migration"])')
  local bytes records partitions
  bytes=$(echo "$last" | json 'd["bytes_moved"]')
  records=$(echo "$last" | json 'd["records_moved"]')
  partitions=$(echo "$last" | json 'd["partitions_done"]')
  python3 - "$name" "$took" "$bytes" "$records" "$partitions" "$data_before" "$cp_rate" "$(records_written)" <<'PY'
import sys
name, took, moved, records, parts, data, cp, written = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), float(sys.argv[7]), int(sys.argv[8])
# The fourth node holds 1/4 of the RF = 3 replicas of every record.
ideal_records = written * 3 / 4
rate = moved / took / 1048576
print(f"{name}: {took:.1f}s, {parts} partition moves; streamed {records} records = {records/ideal_records:.3f} x the ideal "
      f"(1/4 of 3 replicas of the {written} records written so far), {moved/1048576:.0f} MiB of SST files "
      f"(1/4 of the {data/1048576:.0f} MiB on disk before is {data/4/1048576:.0f} MiB); "
      f"{rate:.1f} MiB/s over the change = {100*rate/cp:.0f}% of cp ({cp} MiB/s)")
PY
  say "   ingest during the change: $(percentiles "$dir/$name.json")"
}

say "== join: node 4 added under ${RATE} batches/s"
# With a certificate of the cluster's CA and the cluster's data keys, as
# `ringup local` gives its own nodes.
"$bin/ringup" certs --dir "$dir/certs" --nodes node-4 --hosts 127.0.0.1,localhost >/dev/null
"$bin/ringup-node" --listen "127.0.0.1:$((base_port + 3))" --data-dir "$dir/node-4" \
  --tls-ca "$dir/certs/ca.pem" --tls-cert "$dir/certs/node-4.pem" --tls-key "$dir/certs/node-4.key" \
  --data-key-file "$dir/data-keys" </dev/null >"$dir/node-4.log" 2>&1 &
node4_pid=$!
sleep 1
change join add "127.0.0.1:$((base_port + 3))"
data_before=$(sst_bytes "$dir"/node-{1,2,3,4}/db)
say "== decommission: node 4 leaves under ${RATE} batches/s"
change decommission decommission 4
say "steady state before the changes: $steady"
"$bin/ringup" status --router "$router"
