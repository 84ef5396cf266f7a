#!/usr/bin/env bash
# Helm 3, built once from the Go module proxy into the cache (the chart tests and the demo
# use it; nothing is installed system-wide).
#
#   hack/helm.sh build   build once (idempotent)
#   hack/helm.sh path    build if needed; print the binary's path
set -euo pipefail

HELM_VERSION=3.22.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PIPELINE_HEALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-healer}
BIN=$CACHE/helm-v$HELM_VERSION
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"

build() {
  [ -x "$BIN/helm" ] && return 0
  mkdir -p "$CACHE"
  exec 8>"$CACHE/.helm-build.lock"
  flock 8
  [ -x "$BIN/helm" ] && return 0
  command -v go >/dev/null || die "go is required to build helm (see README)"
  log "building helm v$HELM_VERSION (once; about 1-2 min cold)"
  local work; work=$(mktemp -d "$CACHE/.helm.XXXXXX")
  (
    export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOBIN="$work/bin"
    go install -trimpath -ldflags "-s -w" "helm.sh/helm/v3/cmd/helm@v$HELM_VERSION"
  ) >&2
  rm -rf "$BIN" && mv "$work/bin" "$BIN" && rm -rf "$work"
  log "helm cached in $BIN"
}

case "${1:-}" in
  build) build ;;
  path) build; echo "$BIN/helm" ;;
  *) die "usage: hack/helm.sh build|path" ;;
esac
