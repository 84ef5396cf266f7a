//! The batch reconciler's writes to the batch itself: its summary in the status, and the
//! removal of a finished mirrored batch.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::Api;
use kube::{Resource, ResourceExt};
use tracing::{debug, info};

use crate::api::PredictionBatch;
use crate::api::batch::BatchSummary;
use crate::controller::{Context, delete_decided};
use crate::decide::batch_status::Summary;
use crate::decide::conditions;
use crate::decide::pause::Pauses;
use crate::error::Error;
use crate::runtime::MANAGER;
use crate::runtime::status::{Precondition, apply_status};

/// The status fields `summary` stands for, conditions merged into the batch's existing ones.
fn summary_status(
    batch: &PredictionBatch,
    summary: &Summary,
    pauses: &Pauses,
    finished_at: Option<Timestamp>,
    now: Timestamp,
) -> BatchSummary {
    let existing = batch
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = batch.meta().generation;
    let count = |n: Option<u64>| n.and_then(|n| u32::try_from(n).ok());
    let mut status = BatchSummary {
        state: Some(summary.state),
        expected: count(summary.expected),
        completed: count(summary.completed),
        completion_percent: summary.percent,
        stall_at: summary.stall_at.map(Time),
        finished_at: finished_at.map(Time),
        observed_generation: generation,
        conditions: conditions::merge(existing, &summary.conditions, generation, now),
        ..BatchSummary::default()
    };
    pauses.write_into(&mut status);
    status
}

/// Applies the reconciler's part of the status, unless the batch shows it already. It is
/// bookkeeping (a heal records its own outcome), so it takes its turn. True when it wrote
/// (false: unchanged, or the batch changed since it was read and its next version decides).
pub async fn write(
    ctx: &Context,
    batch: &PredictionBatch,
    summary: &Summary,
    pauses: &Pauses,
    finished_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<bool, Error> {
    let status = summary_status(batch, summary, pauses, finished_at, now);
    if BatchSummary::of(batch.status.as_ref()) == status {
        return Ok(false);
    }
    let batches: Api<PredictionBatch> =
        Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
    let _turn = ctx.bookkeeping.turn().await;
    // Conditional on the version decided on: a reconcile working from a stale cache must not
    // overwrite what a heal (or a worker) wrote meanwhile, e.g. set a healed batch back to
    // Stalled. The newer version's watch event reconciles again.
    let written = apply_status(
        &batches,
        &batch.name_any(),
        MANAGER,
        Precondition::decided_from(batch),
        &status,
        "writing the batch's status",
    )
    .await?;
    if written.is_none() {
        debug!(batch = %batch.name_any(), "the batch changed since it was read; its next version decides");
    }
    Ok(written.is_some())
}

/// Deletes a finished mirrored batch (only the object it decided on).
pub async fn remove_mirror(ctx: &Context, batch: &PredictionBatch) -> Result<(), Error> {
    let batches: Api<PredictionBatch> =
        Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
    if delete_decided(&batches, batch, "removing the finished mirrored batch").await? {
        info!(batch = %batch.name_any(), "finished mirrored batch removed after the retention period");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::batch::BatchState;

    fn batch_with_status(status: serde_json::Value) -> PredictionBatch {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
            "metadata": {"name": "b1", "generation": 1},
            "spec": {"batchId": "b1", "source": "status"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_status_write_that_changes_nothing_is_skipped_and_any_change_is_not() {
        let now: Timestamp = "2026-11-24T10:20:00Z".parse().unwrap();
        let summary = Summary {
            state: BatchState::Progressing,
            expected: Some(10),
            completed: Some(9),
            percent: Some(90.0),
            stall_at: Some("2026-11-24T10:15:00Z".parse().unwrap()),
            conditions: Vec::new(),
        };
        let shown = batch_with_status(serde_json::json!({
            "state": "Progressing", "expected": 10, "completed": 9,
            "completionPercent": 90.0, "stallAt": "2026-11-24T10:15:00Z",
            "observedGeneration": 1,
            "report": {"completed": 9},
        }));
        let unchanged = summary_status(&shown, &summary, &Pauses::default(), None, now);
        assert_eq!(BatchSummary::of(shown.status.as_ref()), unchanged);

        let completed = Summary {
            completed: Some(10),
            ..summary.clone()
        };
        let changed = summary_status(&shown, &completed, &Pauses::default(), None, now);
        assert_ne!(BatchSummary::of(shown.status.as_ref()), changed);
        // A field to clear (no stall instant any more) is a change too.
        let cleared = Summary {
            stall_at: None,
            ..summary.clone()
        };
        let changed = summary_status(&shown, &cleared, &Pauses::default(), None, now);
        assert_ne!(BatchSummary::of(shown.status.as_ref()), changed);
        let fresh = batch_with_status(serde_json::json!(null));
        assert_ne!(
            BatchSummary::of(fresh.status.as_ref()),
            summary_status(&fresh, &summary, &Pauses::default(), None, now)
        );
    }
}
