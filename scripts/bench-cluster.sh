# Sourced by the bench scripts that measure a local cluster, from the
# project's top directory: the binaries, the cluster's ports, and its start.

. scripts/env.sh

# Batches of 50 records a second in the ingest windows (RATE).
RATE=${RATE:-100}
# Records of about 1 KB, written in batches of 100 when a script loads data.
RECORD=1000
BATCH=100

# Builds the binaries into $bin; the router will listen on port $1 and the
# nodes from port $2 on.
bench_setup() {
  router_port=$1
  base_port=$2
  router=http://127.0.0.1:$router_port
  ensure_build_deps
  cargo build --release --workspace --bins >&2
  bin=$CARGO_TARGET_DIR/release
}

# Starts `ringup local` in directory $1 (further arguments are environment
# assignments for it), sets cluster_pid and RINGUP_TOKEN_FILE, and waits
# until the router answers; fails after 60 s.
start_local() {
  local dir=$1
  shift
  env "$@" "$bin/ringup" local --dir "$dir" --no-sample --router-listen "127.0.0.1:$router_port" \
    --base-port "$base_port" </dev/null >"$dir/local.log" 2>&1 &
  cluster_pid=$!
  # Every ringup command after it sends the local cluster's admin token.
  export RINGUP_TOKEN_FILE="$dir/admin-token"
  for _ in $(seq 1 120); do
    "$bin/ringup" health --router "$router" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "error: the local cluster in $dir did not answer within 60 s; see $dir/local.log" >&2
  return 1
}
