#!/usr/bin/env bash
# Builds the container images ringup-node and ringup-router FROM scratch:
# no registry is needed. First builds the release binaries, then copies
# them with exactly the shared libraries they link (read off ldd) into a
# build context outside the clone, and builds both images from
# docker/Dockerfile.
#
#   scripts/docker-build.sh                  # build, tag :latest
#   scripts/docker-build.sh --tag e2e        # another tag
#   scripts/docker-build.sh --bin-dir DIR    # use the binaries in DIR, no cargo build
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

tag=latest
bin_dir=
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag=$2; shift 2 ;;
    --bin-dir) bin_dir=$2; shift 2 ;;
    -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

if ! docker info >/dev/null 2>&1; then
  echo "error: no Docker daemon answers ('docker info' fails); start it first" >&2
  exit 1
fi

if [ -z "$bin_dir" ]; then
  ensure_build_deps
  echo "== building the release binaries (the first build compiles RocksDB and takes about 25 minutes)"
  cargo build --release --workspace --bins
  bin_dir="$CARGO_TARGET_DIR/release"
fi
bins=(ringup-node ringup-router ringup)
for bin in "${bins[@]}"; do
  [ -x "$bin_dir/$bin" ] || { echo "error: $bin_dir/$bin is missing" >&2; exit 1; }
done

# The build context: rootfs/ is laid over the empty image as it is.
context="$CARGO_TARGET_DIR/docker-context/$tag"
rm -rf "$context"
mkdir -p "$context/bin" "$context/rootfs/etc" "$context/data" "$context/secrets"
for bin in "${bins[@]}"; do
  cp "$bin_dir/$bin" "$context/bin/"
done
# Every library any binary links, at the path the loader looks for it,
# with symlinks resolved. A statically linked binary lists none.
libs=$(for bin in "${bins[@]}"; do ldd "$bin_dir/$bin" 2>/dev/null || true; done |
  awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u)
for lib in $libs; do
  mkdir -p "$context/rootfs$(dirname "$lib")"
  cp -L "$lib" "$context/rootfs$lib"
done
cat >"$context/rootfs/etc/passwd" <<'PASSWD'
root:x:0:0:root:/:/sbin/nologin
ringup:x:10001:10001:ringup:/data:/sbin/nologin
PASSWD
cat >"$context/rootfs/etc/group" <<'GROUP'
root:x:0:
ringup:x:10001:
GROUP
echo "hosts: files dns" >"$context/rootfs/etc/nsswitch.conf"
cp docker/Dockerfile "$context/Dockerfile"

for target in node router; do
  echo "== docker build ringup-$target:$tag"
  if ! out=$(docker build --target "$target" --tag "ringup-$target:$tag" "$context" 2>&1); then
    echo "$out" >&2
    exit 1
  fi
done
# The images these tags held before are left untagged: remove them.
docker image prune --force --filter "label=org.opencontainers.image.title=ringup" >/dev/null
echo "== built"
docker images --format '   {{.Repository}}:{{.Tag}}  {{.Size}}' --filter "reference=ringup-*:$tag"
echo "   libraries copied: $(echo "$libs" | tr '\n' ' ')"
ensure_docker_compose
echo "   next: docker compose up -d   # 3 nodes and a router on localhost:8080"
