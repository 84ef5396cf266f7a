//! A finished batch's outcome to BigQuery's `batch_outcomes`, with the HealingEvent outbox's
//! guarantees: the export state lives on the batch's status (`outcomeExport`: exported with
//! the time, or failing with the attempts, the last error and the next attempt), failures are
//! retried with the same capped, jittered backoff, the row's insertId (namespace and batch id)
//! makes a repeat harmless, and a finalizer holds a deleted batch until its outcome is
//! exported or `--export-finalizer-timeout` passes (the row is then logged whole).

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, error, info, warn};

use crate::api::PredictionBatch;
use crate::api::batch::OutcomeExport;
use crate::api::event::{ExportState, SinkExport};
use crate::controller::{Context, STALE_READ_RETRY, record, requeue_at};
use crate::decide::batch_status::finished_how;
use crate::decide::export::{Backoff, after_attempt, is_due};
use crate::error::Error;
use crate::runtime::status::{Precondition, apply_status};
use crate::runtime::{EXPORT_MANAGER, finalizer};
use crate::sink::row::BatchOutcomeRow;

/// Holds a batch whose outcome must reach `batch_outcomes`.
pub const OUTCOME_FINALIZER: &str = "healing.pipeline.dev/batch-outcome";

/// What the batch reconciler does after the outcome step.
pub enum Next {
    /// Go on deciding; wake by this instant at the latest (a retry of the export).
    Continue(Option<Timestamp>),
    /// Stop here (a finalizer changed, or the batch is being deleted).
    Return(Action),
}

/// Adds the finalizer, exports a finished batch's outcome when due, and lets a deleted batch
/// go once its outcome is exported (or it has none, or the timeout passed).
pub async fn step(ctx: &Context, batch: &PredictionBatch, now: Timestamp) -> Result<Next, Error> {
    let api: Api<PredictionBatch> =
        Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
    let deleting = batch.meta().deletion_timestamp.as_ref().map(|t| t.0);
    let held = finalizer::has(batch, OUTCOME_FINALIZER);
    if !ctx.sinks.exports_outcomes() {
        // Configured before, not now: nothing can be exported, so nothing is held.
        if deleting.is_some() && held {
            return release(&api, batch).await;
        }
        return Ok(match deleting {
            Some(_) => Next::Return(Action::await_change()),
            None => Next::Continue(None),
        });
    }
    let status = batch.status.as_ref();
    let state = status.and_then(|s| s.state);
    if deleting.is_none() && !held {
        // Only a batch with an outcome to record is held: one still running (or a controller
        // uninstalled meanwhile) must not keep its deletion waiting.
        if finished_how(state, true).is_none() {
            return Ok(Next::Continue(None));
        }
        let step = "adding the batch outcome finalizer";
        return Ok(Next::Return(
            match finalizer::add(&api, batch, OUTCOME_FINALIZER, step).await? {
                true => Action::await_change(),
                false => Action::requeue(STALE_READ_RETRY),
            },
        ));
    }
    let export = status.and_then(|s| s.outcome_export.as_ref());
    let exported = export.is_some_and(|e| e.state == ExportState::Exported);
    let how = finished_how(state, deleting.is_some());
    let finished_time = status
        .and_then(|s| s.finished_at.as_ref())
        .map(|t| t.0)
        .or(deleting);
    let row = how
        .zip(finished_time)
        .map(|(how, at)| BatchOutcomeRow::from_batch(batch, how, at));
    let Some(deleted_at) = deleting else {
        return Ok(match row {
            Some(row) if !exported && is_due(export, now) => {
                Next::Continue(attempt(ctx, &api, batch, row).await?.0)
            }
            Some(_) if !exported => Next::Continue(next_attempt(export)),
            _ => Next::Continue(None),
        });
    };
    let Some(row) = row.filter(|_| held && !exported) else {
        // Exported, or nothing to record (deleted unfinished), or not ours to hold.
        return match held {
            true => release(&api, batch).await,
            false => Ok(Next::Return(Action::await_change())),
        };
    };
    let deadline = deleted_at
        .saturating_add(ctx.export_finalizer_timeout())
        .unwrap_or(Timestamp::MAX);
    if now >= deadline {
        let timeout = ctx.config.export_finalizer_timeout;
        let record = serde_json::to_string(&row).unwrap_or_default();
        error!(namespace = %row.namespace, batch_id = ?row.batch_id, ?timeout, record = %record, "a deleted batch is released before its outcome reached batch_outcomes; the row is in this line");
        let note = format!(
            "deleted, and released after {timeout:?} (--export-finalizer-timeout) before its \
             outcome reached batch_outcomes; the controller's log holds the row"
        );
        record::warn_about(
            ctx,
            &batch.object_ref(&()),
            "ReleasedUnexported",
            "Export",
            note,
        )
        .await;
        return release(&api, batch).await;
    }
    let (wake, written) = match is_due(export, now) {
        true => attempt(ctx, &api, batch, row).await?,
        false => (next_attempt(export), None),
    };
    if wake.is_none() {
        // Exported just now: the batch may go (as written, so the finalizer's precondition
        // holds).
        return release(&api, written.as_ref().unwrap_or(batch)).await;
    }
    Ok(Next::Return(requeue_at(
        wake.map(|w| w.min(deadline)),
        Timestamp::now(),
    )))
}

/// When a failing export is tried next.
fn next_attempt(export: Option<&SinkExport>) -> Option<Timestamp> {
    export
        .filter(|e| e.state != ExportState::Exported)
        .and_then(|e| e.next_attempt_at.as_ref())
        .map(|t| t.0)
}

/// Sends the row and records the attempt on the batch: the next attempt's time if it failed,
/// and the batch as written.
async fn attempt(
    ctx: &Context,
    api: &Api<PredictionBatch>,
    batch: &PredictionBatch,
    row: BatchOutcomeRow,
) -> Result<(Option<Timestamp>, Option<PredictionBatch>), Error> {
    let key = row.insert_id();
    let before = batch
        .status
        .as_ref()
        .and_then(|s| s.outcome_export.as_ref());
    let result = ctx.sinks.export_outcome(row).await;
    match (&result, before.filter(|b| b.state == ExportState::Failing)) {
        (Ok(()), None) => debug!(batch = %batch.name_any(), "batch outcome exported"),
        (Ok(()), Some(b)) => {
            info!(batch = %batch.name_any(), failed_attempts = b.attempts, "batch outcome exported after failing")
        }
        (Err(error), Some(b)) if b.last_error.as_deref() == Some(error.0.as_str()) => {
            debug!(batch = %batch.name_any(), %error, "exporting a batch outcome failed again")
        }
        (Err(error), _) => {
            warn!(batch = %batch.name_any(), %error, "exporting a batch outcome failed; retrying with backoff")
        }
    }
    let state = after_attempt(before, result, Timestamp::now(), &Backoff::default(), &key);
    let wake = next_attempt(Some(&state));
    let _turn = ctx.bookkeeping.turn().await;
    // The export writer's own field: whatever else changed meanwhile is not its to keep. A
    // state lost to a crash is sent again, which the insertId makes harmless.
    let written = apply_status(
        api,
        &batch.name_any(),
        EXPORT_MANAGER,
        Precondition::None,
        &OutcomeExport {
            outcome_export: Some(state),
        },
        "writing the batch outcome's export state",
    )
    .await?;
    Ok((wake, written))
}

async fn release(api: &Api<PredictionBatch>, batch: &PredictionBatch) -> Result<Next, Error> {
    let step = "removing the batch outcome finalizer";
    Ok(Next::Return(
        match finalizer::remove(api, batch, OUTCOME_FINALIZER, step).await? {
            true => Action::await_change(),
            false => Action::requeue(STALE_READ_RETRY),
        },
    ))
}
