#!/usr/bin/env bash
# Go-built tools, each built once from the Go module proxy into the cache (nothing is
# installed system-wide): helm (the chart tests, the demo) and crane (the image).
#
#   hack/tools.sh build          build every tool once (idempotent)
#   hack/tools.sh path TOOL      build TOOL if needed; print its path (TOOL: helm, crane)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PIPELINE_HEALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-healer}
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"

module() {
  case "$1" in
    helm) echo "helm.sh/helm/v3/cmd/helm@v3.22.0" ;;
    crane) echo "github.com/google/go-containerregistry/cmd/crane@v0.22.1" ;;
    *) die "unknown tool $1 (helm, crane)" ;;
  esac
}

# build TOOL: into $CACHE/TOOL-vVERSION/TOOL, once, one build at a time.
build() {
  local tool=$1 mod; mod=$(module "$tool")
  local dir=$CACHE/$tool-${mod##*@}
  if [ ! -x "$dir/$tool" ]; then
    mkdir -p "$CACHE"
    exec 8>"$CACHE/.$tool-build.lock"
    flock 8
    if [ ! -x "$dir/$tool" ]; then
      command -v go >/dev/null || die "go is required to build $tool (see README)"
      log "building $tool ${mod##*@} (once; about a minute cold)"
      local work; work=$(mktemp -d "$CACHE/.$tool.XXXXXX")
      (
        export GOTOOLCHAIN=local GOWORK=off CGO_ENABLED=0 GOBIN="$work/bin"
        go install -trimpath -ldflags "-s -w" "$mod"
      ) >&2
      rm -rf "$dir" && mv "$work/bin" "$dir" && rm -rf "$work"
      log "$tool cached in $dir"
    fi
    exec 8>&-
  fi
  echo "$dir/$tool"
}

case "${1:-}" in
  build) for tool in helm crane; do build "$tool" >/dev/null; done ;;
  path) [ -n "${2:-}" ] || die "usage: hack/tools.sh path helm|crane"; build "$2" ;;
  *) die "usage: hack/tools.sh build | path helm|crane" ;;
esac
