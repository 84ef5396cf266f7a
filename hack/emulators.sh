#!/usr/bin/env bash
# The Firestore emulator (from the machine's gcloud) and the BigQuery emulator (`bqemulator`
# from PyPI, in a venv this script creates) on free loopback ports.
#
#   hack/emulators.sh install      create the BigQuery emulator venv once (idempotent)
#   hack/emulators.sh up           start both; print the `export` lines last
#   hack/emulators.sh down [DIR]   stop the pair in DIR (default: the one
#                                  $PIPELINE_HEALER_EMULATORS_DIR names) and remove DIR
#
# With PH_OWNER_PID set, `up` also tears the pair down when that process exits.
set -euo pipefail

BQEMULATOR_VERSION=1.4.0
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PIPELINE_HEALER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pipeline-healer}
VENV=$CACHE/bqemulator-$BQEMULATOR_VERSION
PROJECT=${GOOGLE_CLOUD_PROJECT:-pipeline-healer-test}
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"

install() {
  [ -x "$VENV/bin/python" ] && [ -f "$VENV/.complete" ] && return 0
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.bqemulator.lock"
  flock 9
  [ -f "$VENV/.complete" ] && return 0
  log "creating the BigQuery emulator venv in $VENV (once)"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "bqemulator==$BQEMULATOR_VERSION" numpy >&2
  touch "$VENV/.complete"
}

check_gcloud() {
  command -v gcloud >/dev/null || die "gcloud is required for the Firestore emulator"
  command -v java >/dev/null || die "java is required for the Firestore emulator"
}

up() {
  install
  check_gcloud
  local dir; dir=$(mktemp -d "${TMPDIR:-/tmp}/ph-emulators.XXXXXX")
  trap 'down "$dir" >/dev/null 2>&1 || true' ERR
  local fp bp gp pid attempt

  # Offline, the DuckDB spatial extension cannot be downloaded: skip loading it.
  cat >"$dir/bqemulator_launch.py" <<'PY'
import sys
import bqemulator.storage.engine as engine
engine.DuckDBEngine._load_spatial = lambda self: None
import bqemulator.cli
sys.argv = ["bqemulator"] + sys.argv[1:]
sys.exit(bqemulator.cli.main())
PY

  # A free port can be taken between choosing it and binding it: an emulator that exits
  # while starting is started again on other ports.
  for attempt in 1 2 3; do
    fp=$(free_port)
    # setsid: gcloud starts the emulator as a child java process; its own process group
    # lets `down` stop both.
    CLOUDSDK_CONFIG="$dir/gcloud" setsid gcloud emulators firestore start \
      --host-port="127.0.0.1:$fp" --quiet >"$dir/firestore.log" 2>&1 &
    pid=$!
    echo "$pid" >>"$dir/pids"
    wait_alive "Firestore emulator" 60 "$dir/firestore.log" "$pid" curl -sf "http://127.0.0.1:$fp/" && break
    signal_pid KILL "$pid"
    [ "$attempt" -lt 3 ] || die "the Firestore emulator did not start"
  done
  for attempt in 1 2 3; do
    bp=$(free_port); gp=$(free_port)
    setsid "$VENV/bin/python" "$dir/bqemulator_launch.py" start --rest-host 127.0.0.1 \
      --rest-port "$bp" --grpc-port "$gp" --project "$PROJECT" >"$dir/bigquery.log" 2>&1 &
    pid=$!
    echo "$pid" >>"$dir/pids"
    wait_alive "BigQuery emulator" 60 "$dir/bigquery.log" "$pid" \
      curl -sf "http://127.0.0.1:$bp/bigquery/v2/projects/$PROJECT/datasets" && break
    signal_pid KILL "$pid"
    [ "$attempt" -lt 3 ] || die "the BigQuery emulator did not start"
  done
  trap - ERR
  [ -n "${PH_OWNER_PID:-}" ] && reap_with_owner "$PH_OWNER_PID" "$0" "$dir"
  log "emulators up in $dir (logs in $dir/*.log)"
  echo "export PIPELINE_HEALER_EMULATORS_DIR=$dir"
  echo "export GOOGLE_CLOUD_PROJECT=$PROJECT"
  echo "export FIRESTORE_EMULATOR_HOST=127.0.0.1:$fp"
  echo "export BIGQUERY_EMULATOR_HOST=127.0.0.1:$bp"
}

down() {
  local dir=${1:-${PIPELINE_HEALER_EMULATORS_DIR:-}}
  [ -n "$dir" ] || die "down: name the emulators directory or set PIPELINE_HEALER_EMULATORS_DIR"
  case "$(basename "$dir")" in ph-emulators.*) ;; *) die "down: $dir is not a directory made by 'up'";; esac
  stop_pids "$dir"
  rm -rf "$dir"
  log "emulators in $dir stopped"
}

case "${1:-}" in
  install) install ;;
  up) up ;;
  down) down "${2:-}" ;;
  *) echo "usage: $0 install|up|down [DIR]" >&2; exit 2 ;;
esac
