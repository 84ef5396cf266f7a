#!/usr/bin/env bash
# The controller image, with no container runtime: a static binary (glibc, crt-static) packed
# into an OCI image (linux/amd64, entrypoint the binary, user 65532) with crane, through a
# throw-away local registry, and written as a tarball.
#
#   hack/image.sh [OUT.tar]      default: target/image/pipeline-healer.tar
#
# Push it elsewhere with `crane push OUT.tar REGISTRY/REPO:TAG` (see README).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
cd "$ROOT"

OUT=${1:-target/image/pipeline-healer.tar}
TARGET=x86_64-unknown-linux-gnu
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
CRANE=$("$HERE/tools.sh" path crane)

log "building the static binary (release; about 5 min cold)"
RUSTFLAGS="-C target-feature=+crt-static" cargo build --quiet --release --target "$TARGET" --bin pipeline-healer
bin=target/$TARGET/release/pipeline-healer

work=$(mktemp -d)
registry_pid=
cleanup() {
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# One layer: the binary, owned by root, timestamps fixed so the layer is reproducible.
mkdir -p "$work/root/usr/local/bin"
install -m 0755 "$bin" "$work/root/usr/local/bin/pipeline-healer"
tar --owner=0 --group=0 --numeric-owner --mtime=@0 --sort=name -C "$work/root" -cf "$work/layer.tar" usr

port=$(free_port)
"$CRANE" registry serve --address "127.0.0.1:$port" >"$work/registry.log" 2>&1 &
registry_pid=$!
wait_for registry 20 "$work/registry.log" curl -sf "http://127.0.0.1:$port/v2/"
repo=127.0.0.1:$port/pipeline-healer
"$CRANE" append --insecure --oci-empty-base -f "$work/layer.tar" -t "$repo:layer" >&2
"$CRANE" mutate --insecure "$repo:layer" -t "$repo:$VERSION" \
  --entrypoint /usr/local/bin/pipeline-healer --cmd run --user 65532:65532 \
  --set-platform linux/amd64 --label "org.opencontainers.image.version=$VERSION" \
  --label "org.opencontainers.image.source=https://github.com/najicham/nba-stats-scraper" >&2
mkdir -p "$(dirname "$OUT")"
"$CRANE" pull --insecure "$repo:$VERSION" "$OUT"
log "image written to $OUT ($(du -h "$OUT" | cut -f1)); digest $("$CRANE" digest --insecure "$repo:$VERSION")"
