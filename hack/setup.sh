#!/usr/bin/env bash
# Everything the tests use, installed by the project itself, idempotently, with caches outside
# the repo (~/.cache/pipeline-healer, or $PIPELINE_HEALER_CACHE):
#   - kube-apiserver, kube-controller-manager and etcd built from the Go module proxy
#   - the BigQuery emulator in a Python venv
#   - helm and crane, built from the Go module proxy
#   - Debian's chromium (headless), for the report page test only
#   - the Rust components rustfmt and clippy
# The Firestore emulator ships with the machine's gcloud; kubectl, openssl, curl, java and
# python3 come with the machine too. Missing tools are named with how to get them.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"

missing=()
need() { command -v "$1" >/dev/null || missing+=("$1 ($2)"); }
need cargo "Rust, via rustup"
need go "Go 1.26+, https://go.dev/dl"
need python3 "Python 3.10+ with venv"
need gcloud "Google Cloud SDK with the cloud-firestore-emulator component"
need java "a JRE 11+, for the Firestore emulator"
need kubectl "kubectl 1.30+"
need openssl "openssl"
need curl "curl"
need flock "util-linux"
if [ ${#missing[@]} -gt 0 ]; then
  printf '  missing: %s\n' "${missing[@]}" >&2
  die "install the tools above, then run this again"
fi

for component in rustfmt clippy; do
  if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
    log "adding the Rust component $component"
    rustup component add "$component" >&2
  fi
done

"$HERE/cluster.sh" build
"$HERE/tools.sh" build
"$HERE/emulators.sh" install
"$HERE/chromium.sh" install
log "ready"
