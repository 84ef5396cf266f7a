//! Healing events as other components record them, for the export tests and benchmark.

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use pipeline_healer::api::event::{HealingEventStatus, Outcome, TargetRef};
use pipeline_healer::api::{HealingEvent, HealingEventSpec};
use serde_json::json;

use super::TestNamespace;

/// A worker's retry, recorded the way any component records a healing action.
pub fn worker_retry(i: usize, target_namespace: Option<&str>) -> HealingEvent {
    let id = format!("retry-worker-{i:05}");
    HealingEvent::new(
        &id,
        HealingEventSpec {
            healing_id: id.clone(),
            timestamp: MicroTime(jiff::Timestamp::now()),
            healing_type: "retry".into(),
            trigger_reason: format!("player {i} timed out reading the feature store"),
            action_taken: "retried the player once".into(),
            root_cause: "feature_store_timeout".into(),
            correlation_id: Some("run-2026-11-24".into()),
            target: TargetRef {
                api_version: None,
                kind: "Worker".into(),
                namespace: target_namespace.map(Into::into),
                name: format!("worker-{}", i % 7),
                uid: None,
            },
            dry_run: false,
            threshold_time: None,
            onset_time: None,
            detected_time: None,
            before_state: Some(json!({"attempt": 1, "player": format!("player{i}")})),
            details: Some(json!({"timeout_seconds": 30, "nested": {"i": i}})),
        },
    )
}

/// `count` worker retries, each on a target in namespace `pipeline`.
pub fn worker_retries(count: usize) -> Vec<HealingEvent> {
    (0..count)
        .map(|i| worker_retry(i, Some("pipeline")))
        .collect()
}

/// Creates the events and records their outcome (as `finished` has it), 16 at a time.
pub async fn record(ns: &TestNamespace, events: Vec<HealingEvent>) {
    record_outcomes(ns, events.into_iter().map(|e| (e, finished())).collect()).await;
}

/// Creates each event and then records the outcome given with it, 16 at a time.
pub async fn record_outcomes(ns: &TestNamespace, events: Vec<(HealingEvent, HealingEventStatus)>) {
    let api = ns.api::<HealingEvent>();
    futures::stream::iter(events)
        .map(|(event, status)| {
            let api = api.clone();
            async move {
                let name = event.spec.healing_id.clone();
                api.create(&PostParams::default(), &event).await?;
                let status = json!({"status": status});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .map(|_| ())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .expect("record the events");
}

/// The outcome a worker records after a successful retry.
pub fn finished() -> HealingEventStatus {
    HealingEventStatus {
        outcome: Some(Outcome::Succeeded),
        success: Some(true),
        after_state: Some(json!({"attempt": 2, "ok": true})),
        heal_latency_seconds: Some(0.25),
        ..Default::default()
    }
}
