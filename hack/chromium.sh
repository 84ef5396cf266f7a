#!/usr/bin/env bash
# Headless Chromium for one test: `analyze --html` renders to a PNG (tests/report_page.rs).
# Debian's `chromium` package, installed through apt-get only when missing (idempotent).
# Nothing else uses it; without root or apt-get it says how to get it and fails.
#
#   hack/chromium.sh install     install if missing
#   hack/chromium.sh path        print the browser's path (installs first)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"

find_browser() { command -v chromium || command -v chromium-browser || true; }

install() {
  [ -n "$(find_browser)" ] && return 0
  command -v apt-get >/dev/null || die "chromium is missing and there is no apt-get: install Debian's chromium package"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || die "chromium is missing: run 'apt-get install chromium' as root"
    sudo=(sudo)
  fi
  log "installing Debian's chromium (once; for the report page test)"
  # The package lists may be stale on a fresh machine: refresh them when the package is
  # not found as they are.
  if ! "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >&2; then
    "${sudo[@]}" apt-get update -q >&2
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >&2
  fi
  [ -n "$(find_browser)" ] || die "chromium was installed but is not on PATH"
}

case "${1:-}" in
  install) install ;;
  path) install; find_browser ;;
  *) die "usage: $0 install|path" ;;
esac
