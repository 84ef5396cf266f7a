#!/usr/bin/env bash
# The demo: a local control plane and emulators, the CRDs and a HealingPolicy, the
# controller, and a simulated pipeline in which a batch stalls at 92 % (an injured player
# and a feature-store timeout), three more stall on an injured player alone (the policy, as
# the original's once did, lacks player_injury_out), and a Phase 4 date has an empty table.
# Shows the heals, the phase re-run, `kubectl get pb,pr,he`, the analyze report and the
# prevention loop (proposals, the patch, the trend, the HTML page), then stops everything it
# started. Run it as `make demo`.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
# shellcheck source=hack/lib.sh
. "$HERE/lib.sh"
cd "$ROOT"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
started=$SECONDS
BIN=$ROOT/target/debug/pipeline-healer
NS=demo
DATE=$(date -u +%F)
pids=()
cleanup() {
  set +e
  step "Stopping everything the demo started"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; done
  [ -n "${PIPELINE_HEALER_EMULATORS_DIR:-}" ] && "$HERE/emulators.sh" down >/dev/null 2>&1
  [ -n "${KUBECONFIG:-}" ] && "$HERE/cluster.sh" down >/dev/null 2>&1
  log "done in $((SECONDS - started)) s"
}
trap cleanup EXIT

step "Building the controller"
cargo build --quiet --bin pipeline-healer

step "Starting a local control plane and the Firestore and BigQuery emulators"
eval "$("$HERE/cluster.sh" up | grep '^export ')"
eval "$("$HERE/emulators.sh" up | grep '^export ')"
kubectl create namespace "$NS" >/dev/null

OUT=$ROOT/target/demo
mkdir -p "$OUT"
step "A HealingPolicy, as a GitOps repository would hold it ($OUT/healingpolicy.yaml): stall after 20 s instead of 15 min, player_injury_out missing from the permanent skip reasons"
cat > "$OUT/healingpolicy.yaml" <<YAML
apiVersion: healing.pipeline.dev/v1alpha1
kind: HealingPolicy
metadata: {name: default, namespace: $NS}
spec:
  stallAfter: 20s
  permanentSkipReasons: [no_features, player_not_found, no_prop_lines, game_not_found,
    player_inactive, no_historical_data, invalid_features, quality_too_low]
  phaseHealing: {initialBackoff: 2s, maxBackoff: 8s}
YAML
kubectl apply --server-side -f "$OUT/healingpolicy.yaml"

step "The pipeline's BigQuery tables for $DATE: Phase 4 is missing player_daily_cache"
python3 "$HERE/demo_pipeline.py" setup "$DATE"
port=$(free_port)
python3 "$HERE/demo_pipeline.py" serve "$port" &
pids+=($!)

step "Running the controller (its http triggers allowed only to the local endpoint)"
"$BIN" run --namespace "$NS" --log-format text --metrics-addr 127.0.0.1:0 \
  --bigquery-project "$GOOGLE_CLOUD_PROJECT" \
  --trigger-allowed-url-prefix "http://127.0.0.1:$port/" 2> >(sed 's/^/[controller] /' >&2) &
pids+=($!)

# batch NAME COMPLETED SKIPPED FAILING MISSING: a PredictionBatch of 25 players, as its
# workers report it.
batch() {
  kubectl -n "$NS" apply --server-side -f - >/dev/null <<YAML
apiVersion: healing.pipeline.dev/v1alpha1
kind: PredictionBatch
metadata: {name: batch-$DATE-$1}
spec:
  batchId: batch_${DATE}_$1
  gameDate: "$DATE"
  source: status
  expectedPlayers: 25
  correlationId: demo-run
YAML
  kubectl -n "$NS" patch pb "batch-$DATE-$1" --subresource=status --type=merge -p "{\"status\":{\"report\":{
    \"completed\": $2, \"skipped\": $3, \"failing\": $4, \"missingPlayers\": $5,
    \"lastProgressTime\": \"$(date -u +%FT%TZ)\"}}}" >/dev/null
}
step "A prediction batch: 23 of 25 players done, one injured, one timing out"
batch demo 23 '{"player_injury_out": 1}' '{"feature_store_timeout": 1}' '["lebronjames", "stephencurry"]'
step "Three more batches: 24 of 25 done, the last one injured"
for i in 1 2 3; do
  batch "late-$i" 24 '{"player_injury_out": 1}' '{}' '["kevindurant"]'
done

step "Phase 4 for $DATE, its processors re-run through the local endpoint"
sed -e "s|https://nba-phase4-precompute.example.run.app/process-date|http://127.0.0.1:$port/process-date|" \
    -e '/audience:/d' -e "s|2026-11-25|$DATE|g" examples/phaserun-phase4.yaml |
  kubectl -n "$NS" apply --server-side -f - >/dev/null

step "Waiting for the stall to be healed and the phase to complete"
deadline=$((SECONDS + 90))
until [ "$(kubectl -n "$NS" get pb -o jsonpath='{range .items[*]}{.status.state}{"\n"}{end}' | grep -c '^AutoCompleted$')" = 4 ] &&
      [ "$(kubectl -n "$NS" get pr "phase4-$DATE" -o jsonpath='{.status.state}')" = Complete ]; do
  [ $SECONDS -lt $deadline ] || die "the demo did not finish within 90 s"
  sleep 1
done

step "kubectl get pb,pr,he"
kubectl -n "$NS" get pb,pr
kubectl -n "$NS" get he -o wide
kubectl -n "$NS" get events --field-selector reason=AutoCompleted -o custom-columns=OBJECT:.involvedObject.name,REASON:.reason,MESSAGE:.message

step "Waiting for the healing events to reach BigQuery"
until [ -z "$(kubectl -n "$NS" get he -o jsonpath='{range .items[*]}{.status.exports.bigquery.state}{"\n"}{end}' | grep -v '^Exported$')" ]; do
  [ $SECONDS -lt $deadline ] || die "the events were not exported in time"
  sleep 1
done

step "pipeline-healer analyze --since 1h"
"$BIN" analyze --since 1h --bigquery-project "$GOOGLE_CLOUD_PROJECT"

step "Preventing recurrence: analyze --since 1h --propose --policy $OUT/healingpolicy.yaml --propose-patch $OUT/policy.yaml --trend day --html $OUT/report.html"
"$BIN" analyze --since 1h --bigquery-project "$GOOGLE_CLOUD_PROJECT" --propose \
  --policy "$OUT/healingpolicy.yaml" --propose-patch "$OUT/policy.yaml" \
  --trend day --html "$OUT/report.html" |
  sed -n '/^Proposals:/,$p'
step "The proposed policy: the repository's file with the change ($OUT/policy.yaml), applied as committed"
diff -u "$OUT/healingpolicy.yaml" "$OUT/policy.yaml" || true
kubectl apply --server-side -f "$OUT/policy.yaml"
log "the page with the report, the proposals and the trend plots: $OUT/report.html"
