//! `source: status` batches as workers report them, for the healing and alert tests.

use jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use pipeline_healer::api::PredictionBatch;
use serde_json::json;

use super::TestNamespace;

/// A `source: status` batch of 10 players; the workers report 9 done, the last at `last`.
pub async fn batch(ns: &TestNamespace, name: &str, last: Timestamp) -> PredictionBatch {
    let pb: PredictionBatch = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
        "metadata": {"name": name},
        "spec": {"batchId": format!("batch_2026-11-24_{name}"), "gameDate": "2026-11-24", "source": "status", "expectedPlayers": 10}
    }))
    .unwrap();
    let api = ns.api::<PredictionBatch>();
    api.create(&PostParams::default(), &pb).await.unwrap();
    report(ns, name, 9, last).await
}

/// What a worker does: patch its progress report into the status.
pub async fn report(
    ns: &TestNamespace,
    name: &str,
    completed: u32,
    last: Timestamp,
) -> PredictionBatch {
    let patch = json!({"status": {"report": {
        "completed": completed,
        "failing": {"feature_store_timeout": 10 - completed},
        "missingPlayers": ["lebronjames"],
        "lastProgressTime": last.to_string(),
    }}});
    ns.api::<PredictionBatch>()
        .patch_status(
            name,
            &PatchParams::apply("worker").force(),
            &Patch::Apply(&with_kind(patch)),
        )
        .await
        .unwrap()
}

pub fn with_kind(mut v: serde_json::Value) -> serde_json::Value {
    v["apiVersion"] = json!("healing.pipeline.dev/v1alpha1");
    v["kind"] = json!("PredictionBatch");
    v
}
