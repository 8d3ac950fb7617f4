#!/usr/bin/env bash
# Runs one load against ringup and the stores a team would pick instead,
# one after another, and prints the comparison:
#
#   ringup         3 nodes, RF=3, QUORUM, through the router (`ringup bench`),
#                  tokens, mutual TLS between the processes and values
#                  sealed at rest, as `ringup local` starts it
#   ringup plain   the same without TLS and encryption (--insecure-no-tls
#                  --insecure-no-encryption): what security costs
#   redis cluster  3 masters with 2 replicas each, appendonly yes,
#                  appendfsync everysec; a pipeline per batch and WAIT 1
#   postgresql     a (shop, id, ts, jsonb) table, a multi-row
#                  INSERT ... ON CONFLICT per batch, default durability
#   rocksdb        the ceiling: the node's storage layer, 3 replicas in one
#                  process, no network and no router
#
# For each store: a write phase, a GET phase as fast as it goes (its
# maximum GET rate), then a latency phase as long as the GET phase, of GETs
# at half that rate, open loop (`--rate`): p50/p99 without coordinated
# omission. Three tables: writes, reads, and latency at half the maximum.
#
# Every store listens on 127.0.0.1 only, runs alone while it is measured,
# and is stopped and deleted afterwards. Redis and PostgreSQL are installed
# from Debian's packages when missing.
#
# Usage: scripts/bench-peers.sh [--duration S] [--smoke] [--out DIR] [--bin-dir DIR]
#   --duration S   seconds of writes per store (default 20); the GET phase
#                  and the latency phase get half each
#   --smoke        tiny fixed counts, for tests: checks the script works
#   --out DIR      keep every run's JSON summary and the tables in DIR
#   --bin-dir DIR  use these ringup binaries instead of building them
# Ports 7400-7420 on 127.0.0.1 (RINGUP_PEERS_PORT moves the base).
# Exit status 75: a peer could not be installed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

duration=20
smoke=0
out=""
bin_dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration="$2"; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

base="${RINGUP_PEERS_PORT:-7400}"
router_port=$base
node_base=$((base + 1))  # 3 nodes
redis_base=$((base + 11)) # 9 servers
pg_port=$((base + 20))

if [ "$smoke" = 1 ]; then
  load=(--shops 10 --batch 10 --record-size 256 --concurrency 4 --seed 1 --quiet)
  writes=(--requests 40)
  reads=(--gets 100 --preload 2 --requests 40)
else
  load=(--shops 1000 --batch 50 --record-size 256 --concurrency 32 --seed 1)
  writes=(--duration "$duration")
  reads=(--gets 100 --preload 20 --duration "$(awk "BEGIN { print $duration / 2 }")")
fi

step() { echo "== $*" >&2; }

# Waits up to $1 seconds for the command after it to succeed.
wait_for() {
  local limit=$1; shift
  local until=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$until" ]; then
      echo "error: gave up after ${limit}s waiting for: $*" >&2
      return 1
    fi
    sleep 0.2
  done
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_peers() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$pg_bin" ] && [ -x "$pg_bin/postgres" ] || missing+=(postgresql)
  if [ "${#missing[@]}" -gt 0 ]; then
    step "installing ${missing[*]}"
    if ! { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
      echo "error: could not install ${missing[*]}" >&2
      exit 75
    fi
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  # Debian's package starts a server of its own; it is left alone.
}

ensure_peers
if [ -z "$bin_dir" ]; then
  ensure_build_deps
  step "building release binaries"
  cargo build --release --bins -p ringup-router -p ringup-cli -p ringup-node -p ringup-peers
  bin_dir="$CARGO_TARGET_DIR/release"
fi
for p in $router_port $(seq "$node_base" $((node_base + 2))) $(seq "$redis_base" $((redis_base + 8))) $pg_port; do
  port_free "$p" || { echo "error: 127.0.0.1:$p is taken; set RINGUP_PEERS_PORT to another base" >&2; exit 1; }
done

work=$(mktemp -d /tmp/ringup-peers.XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
  if [ -f "$work/pg/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}
cleanup() {
  stop_all
  if [ -n "$out" ]; then mkdir -p "$out" && cp "$work"/*.json "$work"/tables.txt "$out"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs a load and keeps its JSON summary as $work/$1-$2.json.
measure() {
  local phase=$1 name=$2; shift 2
  step "$name: $phase"
  "$@" --json >"$work/$phase-$name.json"
}

# Half the GET rate the summary $1 reports, in requests/s (at least 1).
half_get_rate() {
  python3 -c 'import json, sys; rate = json.load(open(sys.argv[1]))["ops"]["get"]["requests_per_s"]; print("%.1f" % max(1.0, rate / 2))' "$1"
}

# The write, read and latency phases of one system, whose load command is
# "$@": the latency phase is the read phase again (as long, or as many
# requests), at a fixed rate of half the GET rate the read phase reached.
measure_all() {
  local name=$1; shift
  measure write "$name" "$@" "${writes[@]}"
  measure get "$name" "$@" "${reads[@]}"
  local half
  half=$(half_get_rate "$work/get-$name.json")
  measure latency "$name" "$@" "${reads[@]}" --rate "$half"
}

started=$SECONDS

# ringup: 3 nodes and a router, RF=3, QUORUM.
"$bin_dir/ringup" local --dir "$work/ringup" --nodes 3 --base-port "$node_base" \
  --router-listen "127.0.0.1:$router_port" --bin-dir "$bin_dir" --no-sample >"$work/ringup.log" 2>&1 &
pids+=($!)
router="http://127.0.0.1:$router_port"
step "ringup: starting 3 nodes and a router"
wait_for 90 "$bin_dir/ringup" health --router "$router"
export RINGUP_TOKEN_FILE="$work/ringup/admin-token"
ringup_bench=("$bin_dir/ringup" bench --router "$router" --consistency quorum "${load[@]}")
measure_all ringup "${ringup_bench[@]}"
stop_all

# ringup again, plain TCP and values in clear (tokens still checked).
"$bin_dir/ringup" local --dir "$work/ringup-plain" --nodes 3 --base-port "$node_base" \
  --router-listen "127.0.0.1:$router_port" --bin-dir "$bin_dir" --no-sample \
  --insecure-no-tls --insecure-no-encryption >"$work/ringup-plain.log" 2>&1 &
pids+=($!)
step "ringup plain: starting 3 nodes and a router without TLS and encryption"
wait_for 90 "$bin_dir/ringup" health --router "$router"
export RINGUP_TOKEN_FILE="$work/ringup-plain/admin-token"
measure_all ringup-plain "${ringup_bench[@]}" --note "no TLS, no encryption"
stop_all

# Redis Cluster: 9 servers, 3 masters with 2 replicas each.
step "redis: starting 9 servers"
redis_nodes=()
for p in $(seq "$redis_base" $((redis_base + 8))); do
  mkdir -p "$work/redis/$p"
  redis-server --port "$p" --bind 127.0.0.1 --protected-mode yes --daemonize no \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 5000 \
    --appendonly yes --appendfsync everysec --save "" \
    --dir "$work/redis/$p" --logfile "$work/redis/$p/redis.log" &
  pids+=($!)
  redis_nodes+=("127.0.0.1:$p")
done
for p in $(seq "$redis_base" $((redis_base + 8))); do wait_for 30 redis-cli -p "$p" ping; done
redis-cli --cluster create "${redis_nodes[@]}" --cluster-replicas 2 --cluster-yes >"$work/redis/create.log" 2>&1 \
  || { cat "$work/redis/create.log" >&2; exit 1; }
cluster_ready() {
  for p in $(seq "$redis_base" $((redis_base + 8))); do
    redis-cli -p "$p" cluster info | grep -q 'cluster_state:ok' || return 1
    if redis-cli -p "$p" role | head -n 1 | grep -q master; then
      [ "$(redis-cli -p "$p" info replication | tr -d '\r' | sed -n 's/^connected_slaves://p')" = 2 ] || return 1
    else
      redis-cli -p "$p" info replication | grep -q 'master_link_status:up' || return 1
    fi
  done
}
wait_for 60 cluster_ready
nodes_csv=$(IFS=,; echo "${redis_nodes[*]}")
redis_bench=("$bin_dir/ringup-peers" redis --nodes "$nodes_csv" --wait-replicas 1 "${load[@]}")
measure_all redis "${redis_bench[@]}"
stop_all

# PostgreSQL: one server, default durability.
step "postgresql: starting a server"
mkdir -p "$work/pg"
[ "${#as_pg[@]}" -eq 0 ] || chown postgres "$work/pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U ringup --auth=trust -E UTF8 >"$work/pg/initdb.log" 2>&1 \
  || { cat "$work/pg/initdb.log" >&2; exit 1; }
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/postgres.log" -w -t 60 \
  -o "-h 127.0.0.1 -p $pg_port -k $work/pg -c shared_buffers=1GB" start >/dev/null
pg_bench=("$bin_dir/ringup-peers" postgres --url "host=127.0.0.1 port=$pg_port user=ringup dbname=postgres" "${load[@]}")
measure_all postgres "${pg_bench[@]}"
stop_all

# The ceiling: the node's storage, 3 replicas in this process.
rocks_bench=("$bin_dir/ringup-peers" rocksdb --dir "$work/rocksdb" --replicas 3 "${load[@]}")
measure_all rocksdb "${rocks_bench[@]}"

shape="batches of ${load[3]} records of ~${load[5]} B from ${load[1]} shops, ${load[7]} clients"
{
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo);" \
    "$(redis-server --version | awk '{ print "redis " $3 }' | tr -d 'v='), $("$pg_bin/postgres" --version | awk '{ print "postgresql " $3 }')"
  echo
  "$bin_dir/ringup-peers" table --op write --title "writes: $shape" "$work"/write-{ringup,ringup-plain,redis,postgres,rocksdb}.json
  echo
  "$bin_dir/ringup-peers" table --op get --title "reads: GET by id, $shape preloaded" \
    "$work"/get-{ringup,ringup-plain,redis,postgres,rocksdb}.json
  echo
  "$bin_dir/ringup-peers" table --op get --latency \
    --title "latency: GET p50/p99 at half of each system's maximum GET rate" \
    "$work"/latency-{ringup,ringup-plain,redis,postgres,rocksdb}.json
} | tee "$work/tables.txt"
step "done in $((SECONDS - started)) s"
