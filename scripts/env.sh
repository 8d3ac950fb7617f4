# Sourced by the other scripts: the shared cargo target directory and the
# one-time installation of what a fresh machine lacks.

# Outside the clone, so that warm builds (above all RocksDB's C++) are reused
# by every clone on this machine: yours, CI's, a newcomer's.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/ringup-target}"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "error: '$*' needs root; run it as root or install sudo" >&2; return 1
  fi
}

# rust-rocksdb's build runs bindgen (libclang) and compiles C++.
ensure_build_deps() {
  local missing=()
  command -v clang >/dev/null || missing+=(clang)
  ldconfig -p 2>/dev/null | grep -q 'libclang[-.0-9]*\.so' || missing+=(libclang-dev)
  command -v c++ >/dev/null || missing+=(g++)
  command -v curl >/dev/null || missing+=(curl)
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "== installing ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  if ! command -v cargo >/dev/null; then
    echo "error: cargo is not installed; install Rust with rustup first" >&2
    return 1
  fi
}

# promtool, which checks GET /metrics as Prometheus reads it. Taken out of
# Debian's `prometheus` package into ~/.cache/ringup-tools/bin, without
# installing the package (whose server would start as a service).
ensure_promtool() {
  local bin="$HOME/.cache/ringup-tools/bin"
  export PATH="$bin:$PATH"
  command -v promtool >/dev/null && return 0
  echo "== extracting promtool from Debian's prometheus package into $bin"
  local work
  work=$(mktemp -d)
  (cd "$work" && apt-get download prometheus >/dev/null 2>&1) || {
    as_root apt-get update -qq
    (cd "$work" && apt-get download prometheus >/dev/null)
  }
  dpkg-deb -x "$work"/prometheus_*.deb "$work/root"
  mkdir -p "$bin"
  install -m 0755 "$work/root/usr/bin/promtool" "$bin/promtool"
  rm -rf "$work"
}

# PostgreSQL's server binaries, for the test that compares reports with
# PostgreSQL's answers. Debian's package starts a server of its own, which
# is left alone; the test runs its own on a free port. Where it cannot be
# installed the gate fails.
ensure_postgres() {
  ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && return 0
  echo "== installing postgresql (for the reports comparison test)"
  { as_root apt-get update -qq && DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >/dev/null; } \
    || { echo "error: could not install postgresql, which the reports comparison test needs" >&2; return 1; }
}

# `docker compose` where only the standalone docker-compose (v1.28 or later,
# as Debian 12 ships it) is installed: a small CLI plugin in
# ~/.docker/cli-plugins that hands the command to docker-compose. Remove
# that file to undo it.
ensure_docker_compose() {
  docker compose version >/dev/null 2>&1 && return 0
  local v1
  v1=$(command -v docker-compose) || {
    echo "error: neither 'docker compose' nor 'docker-compose' is installed" >&2
    return 1
  }
  local plugin="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins/docker-compose"
  mkdir -p "$(dirname "$plugin")"
  cat >"$plugin" <<PLUGIN
#!/bin/sh
# Installed by ringup's scripts/env.sh: runs $v1 as 'docker compose'.
if [ "\$1" = docker-cli-plugin-metadata ]; then
  echo '{"SchemaVersion":"0.1.0","Vendor":"docker-compose v1","Version":"1","ShortDescription":"Docker Compose (runs $v1)"}'
  exit 0
fi
[ "\$1" = compose ] && shift
exec $v1 "\$@"
PLUGIN
  chmod +x "$plugin"
  echo "   'docker compose' now runs $v1 (plugin at $plugin)"
}
