#!/usr/bin/env bash
# The reports benchmark: the same sales (default 10 million from 300 shops
# of Zipf-like sizes, over 90 days) in ringup (3 nodes, RF=3, on loopback),
# in PostgreSQL (a typed table with its primary key, default settings, so
# parallel workers are allowed) and in DuckDB (its Python package, the
# single-machine analytic ceiling); five report queries run on each, and
# each system's median of 5 runs (after a warm-up run) is printed with its
# ratio to ringup's.
#
#   scripts/bench-reports.sh [--rows N] [--shops N] [--runs N] [--out DIR]
#
# Everything runs on loopback and stops by itself; the data lives in a
# temporary directory removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

rows=10000000
shops=300
runs=5
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rows) rows=$2; shift 2 ;;
    --shops) shops=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "usage: $0 [--rows N] [--shops N] [--runs N] [--out DIR]" >&2; exit 2 ;;
  esac
done
step() { echo "== $*" >&2; }

ensure_build_deps
ensure_postgres
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
step "building release binaries"
cargo build --release --bins -p ringup-router -p ringup-cli -p ringup-node -p ringup-peers >&2
bin="$CARGO_TARGET_DIR/release"
py_env="$HOME/.cache/ringup-bench-py"
if [ ! -x "$py_env/bin/python" ] || ! "$py_env/bin/python" -c 'import duckdb' 2>/dev/null; then
  step "installing DuckDB's Python package into $py_env"
  python3 -m venv "$py_env"
  "$py_env/bin/pip" install -q duckdb >&2
fi

work=$(mktemp -d /tmp/ringup-reports.XXXXXX)
chmod 755 "$work"
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(runuser -u postgres --); fi
local_pid=""
cleanup() {
  [ -n "$local_pid" ] && kill -TERM "$local_pid" 2>/dev/null && wait "$local_pid" 2>/dev/null || true
  if [ -f "$work/pg/data/postmaster.pid" ]; then
    "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  if [ -n "$out" ]; then mkdir -p "$out" && cp "$work"/*.jsonl "$work"/table.txt "$out"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The five reports, in PostgreSQL's and DuckDB's SQL as well as ringup's.
cat >"$work/queries.sql" <<'EOF'
SELECT count(*), sum(amount), avg(amount), min(ts), max(ts) FROM sales
SELECT shop, sum(amount) AS total FROM sales GROUP BY shop ORDER BY total DESC LIMIT 10
SELECT region, count(DISTINCT sku) AS skus, count(*) FROM sales GROUP BY region ORDER BY region
SELECT date_trunc('day', ts) AS day, count(*), sum(amount) FROM sales WHERE ts >= '2026-02-01' AND ts < '2026-03-03' GROUP BY day ORDER BY day
SELECT shop, id, amount, ts FROM sales WHERE region = 'eu-west' AND status = 'refunded' ORDER BY amount DESC, shop, id LIMIT 20
EOF
data=(--rows "$rows" --shops "$shops")

step "writing $rows sales as CSV"
"$bin/ringup-peers" reports csv "${data[@]}" --out "$work/sales.csv"

step "ringup: starting 3 nodes and a router, loading $rows sales"
RINGUP_ROUTER_LISTEN=127.0.0.1:18080 "$bin/ringup" local --dir "$work/ringup" --base-port 17101 --no-sample \
  </dev/null >"$work/ringup.log" 2>&1 &
local_pid=$!
for _ in $(seq 120); do "$bin/ringup" health --router http://127.0.0.1:18080 >/dev/null 2>&1 && break; sleep 1; done
export RINGUP_TOKEN_FILE="$work/ringup/admin-token"
"$bin/ringup-peers" reports load "${data[@]}" --router http://127.0.0.1:18080
# As PostgreSQL gets its ANALYZE: the nodes' flushes and compactions after
# the load finish before the timings (at most 5 minutes).
step "ringup: waiting for the nodes' flushes and compactions to finish"
for _ in $(seq 300); do
  busy=$(curl -s http://127.0.0.1:18080/metrics \
    | awk '/^ringup_node_rocksdb_(running_compactions|running_flushes|pending_compaction_bytes)\{/ { s += $2 } END { print s + 0 }')
  [ "$busy" = 0 ] && break
  sleep 1
done
"$bin/ringup-peers" reports time --system ringup --url http://127.0.0.1:18080 --queries "$work/queries.sql" --runs "$runs" \
  | tee "$work/ringup.jsonl"

step "postgresql: starting a server, loading $rows sales"
mkdir -p "$work/pg"
[ "${#as_pg[@]}" -eq 0 ] || chown postgres "$work/pg"
"${as_pg[@]}" "$pg_bin/initdb" -D "$work/pg/data" -U ringup --auth=trust -E UTF8 --no-locale >"$work/pg/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/postgres.log" -w -t 60 \
  -o "-p 15432 -k $work/pg -c listen_addresses=127.0.0.1" start >/dev/null
pg_url="host=127.0.0.1 port=15432 user=ringup dbname=postgres"
psql_bin="$pg_bin/psql"
"$psql_bin" "$pg_url" -q -v ON_ERROR_STOP=1 <<EOF
SET TIME ZONE 'UTC';
CREATE TABLE sales (shop text, id text, ts timestamptz, amount bigint, qty bigint, sku text, region text,
                    status text, PRIMARY KEY (shop, id));
CREATE TEMP TABLE raw (shop text, id text, ts double precision, amount bigint, qty bigint, sku text, region text, status text);
\copy raw FROM '$work/sales.csv' WITH (FORMAT csv, HEADER true)
INSERT INTO sales SELECT shop, id, to_timestamp(ts), amount, qty, sku, region, status FROM raw;
ANALYZE sales;
EOF
"$bin/ringup-peers" reports time --system postgres --url "$pg_url" --queries "$work/queries.sql" --runs "$runs" \
  | tee "$work/postgres.jsonl"

step "duckdb: loading $rows sales"
"$py_env/bin/python" - "$work" "$runs" <<'EOF' | tee "$work/duckdb.jsonl"
import json, statistics, sys, time
import duckdb
work, runs = sys.argv[1], int(sys.argv[2])
db = duckdb.connect(f"{work}/duck.db")
db.execute("SET TimeZone = 'UTC'")
db.execute(f"""CREATE TABLE sales AS SELECT shop, id, to_timestamp(ts) AS ts, amount, qty, sku, region, status
               FROM read_csv('{work}/sales.csv', header = true,
                 columns = {{'shop': 'VARCHAR', 'id': 'VARCHAR', 'ts': 'DOUBLE', 'amount': 'BIGINT', 'qty': 'BIGINT',
                            'sku': 'VARCHAR', 'region': 'VARCHAR', 'status': 'VARCHAR'}})""")
for i, sql in enumerate(l.strip() for l in open(f"{work}/queries.sql") if l.strip()):
    times = []
    for run in range(runs + 1):
        t = time.perf_counter()
        rows = db.execute(sql).fetchall()
        if run:
            times.append(time.perf_counter() - t)
    print(json.dumps({"system": "duckdb", "query": i + 1, "median_s": statistics.median(times), "rows": len(rows)}))
EOF

step "results"
"$py_env/bin/python" - "$work" "$rows" "$shops" <<'EOF' | tee "$work/table.txt"
import json, sys
work, rows, shops = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
res = {}
for system in ("ringup", "postgres", "duckdb"):
    for line in open(f"{work}/{system}.jsonl"):
        r = json.loads(line)
        res[(system, r["query"])] = r
names = ["global aggregate", "top 10 shops by sum", "count(DISTINCT sku) by region", "30 days by day", "plain rows, ORDER BY + LIMIT"]
print(f"{rows} sales from {shops} shops; median of the runs, in ms; ratio = ringup's time / the other's;")
print("ringup's warm-up run (the first, which builds its column segments) apart")
print("| query | ringup | PostgreSQL | ringup/PostgreSQL | DuckDB | ringup/DuckDB | ringup warm-up |")
print("|---|---:|---:|---:|---:|---:|---:|")
for q, name in enumerate(names, 1):
    r, p, d = (res[(s, q)]["median_s"] for s in ("ringup", "postgres", "duckdb"))
    w = res[("ringup", q)].get("first_s", 0)
    print(f"| {q}. {name} | {r*1000:.0f} | {p*1000:.0f} | {r/p:.2f} | {d*1000:.0f} | {r/d:.1f} | {w*1000:.0f} |")
EOF
