#!/usr/bin/env bash
# Writes tests/fixtures/format-N/cluster: the directory of a three-node
# local cluster, made by the binaries of this checkout, holding the writes
# of tests/fixtures/format-N/writes.ndjson (pushes, overwrites, deletes).
# The upgrade test (tests/tests/upgrade.rs) starts today's binaries on a
# copy of it and reads every record back. Run it once per data format,
# with the binaries that write that format:
#
#   scripts/make-fixture.sh 3
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh
format=${1:?usage: scripts/make-fixture.sh FORMAT}
fixture=tests/fixtures/format-$format
[ -f "$fixture/writes.ndjson" ] || { echo "error: $fixture/writes.ndjson is missing" >&2; exit 1; }
[ -e "$fixture/cluster" ] && { echo "error: $fixture/cluster exists; remove it first" >&2; exit 1; }
cargo build --release --workspace --bins

# The ports the upgrade test starts the cluster on again: the map and the
# metadata group keep the nodes' addresses.
base_port=17301
router=127.0.0.1:17380
"$CARGO_TARGET_DIR/release/ringup" local --dir "$fixture/cluster" --nodes 3 --base-port $base_port \
  --router-listen $router --no-sample --insecure-no-tls </dev/null >"$fixture/local.log" 2>&1 &
local_pid=$!
trap 'kill -TERM $local_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 120); do
  curl -sf "http://$router/readyz" >/dev/null && break
  sleep 1
done
python3 - "$router" "$fixture/cluster/admin-token" "$fixture/writes.ndjson" <<'PY'
import json, sys, urllib.request
router, token_file, writes = sys.argv[1:]
token = open(token_file).read().strip()
def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{router}{path}?consistency=all", data=data, method=method)
    req.add_header("authorization", f"Bearer {token}")
    req.add_header("content-type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
for line in open(writes):
    op = json.loads(line)
    base = f"/v1/shops/{op['shop']}/{op['collection']}"
    if op["op"] == "push":
        call("POST", base, op["records"])
    else:
        call("DELETE", f"{base}/{op['id']}")
print("applied", sum(1 for _ in open(writes)), "writes")
PY
kill -TERM $local_pid
wait $local_pid
trap - EXIT
# The processes' logs, RocksDB's info logs and scratch space are no part
# of the format (RocksDB's write-ahead logs, NNNNNN.log, are).
rm -f "$fixture"/cluster/*.log
find "$fixture/cluster" \( -name 'LOG' -o -name 'LOG.old.*' \) -delete
rm -rf "$fixture"/cluster/node-*/scratch "$fixture/local.log"
du -sh "$fixture/cluster"
