//! The HealingEvent reconciler: the outbox. An event whose action has not finished is held to
//! its actor's bound and then settled (`decide::unfinished`), so none stays open for ever.
//! Once an event's action has finished it is
//! exported to every configured sink, each sink's state kept in the event's status (exported
//! with time, or failing with attempts, last error and next attempt), failures retried with
//! capped, jittered backoff; after the retention period, and only once every sink has it,
//! the event is deleted. Events recorded by anyone (a worker's retry, a fallback) go the
//! same way as the controller's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::{Context, STALE_READ_RETRY, delete_decided, record, requeue_at};
use crate::api::HealingEvent;
use crate::api::event::{BATCH_CLEANUP, ExportState, HealingEventStatus, SinkExport};
use crate::decide::export::{Backoff, after_attempt, is_final, plan};
use crate::decide::unfinished::abandoned_reason;
use crate::error::{Error, KubeResultExt};
use crate::runtime::EXPORT_MANAGER;
use crate::runtime::batcher::ItemResult;
use crate::runtime::status::{Precondition, apply_status};

pub async fn reconcile(event: Arc<HealingEvent>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(&HealingEvent::kind(&()));
    ctx.policies.synced().await?;
    let namespace = event.namespace().unwrap_or_default();
    // Any change to an event may move its namespace's windows, circuits or export backlog.
    ctx.health.touch(&namespace);
    let retention = ctx.policies.spec_for(&namespace).retention.as_span();
    let sinks = ctx.sinks.names();
    let recorded = event.spec.timestamp.0;
    let now = Timestamp::now();
    if !is_final(event.status.as_ref()) {
        return settle(&ctx, &event, now).await;
    }

    let next = plan(event.status.as_ref(), &sinks, recorded, retention, now);
    if next.delete {
        delete(&ctx, &event).await?;
        return Ok(Action::await_change());
    }
    if next.due.is_empty() {
        return Ok(requeue_at(next.wake_at, now));
    }
    let exports = export_due(&ctx, &event, &next.due).await;
    let Some(status) = write_exports(&ctx, &event, exports).await? else {
        return Ok(Action::requeue(STALE_READ_RETRY));
    };
    // The write brings the event back through here, where the plan sees the new state; the
    // requeue below only covers a retry falling due with no change in between.
    let after = plan(Some(&status), &sinks, recorded, retention, now);
    Ok(requeue_at(after.wake_at, now))
}

/// Holds an event without an outcome to its actor's bound (`decide::unfinished`): waits until
/// then (its outcome arriving is a change, which wakes this anyway), then settles it. A heal
/// of a batch is judged by its batch; anything else is closed as abandoned.
async fn settle(ctx: &Context, event: &HealingEvent, now: Timestamp) -> Result<Action, Error> {
    let bounds = ctx.settle_bounds();
    let due = bounds.settle_at(event);
    if now < due {
        return Ok(requeue_at(Some(due), now));
    }
    let healing_type = event.spec.healing_type.as_str();
    let look_again = match healing_type {
        BATCH_CLEANUP => super::batch::resolve_unfinished(ctx, event).await?,
        _ => {
            let reason = abandoned_reason(healing_type, bounds.settle_after(healing_type));
            record::abandon(ctx, event, &reason).await?;
            None
        }
    };
    Ok(requeue_at(look_again, now))
}

/// Deletes the event after its retention period (only the object decided on).
async fn delete(ctx: &Context, event: &HealingEvent) -> Result<(), Error> {
    let api: Api<HealingEvent> =
        Api::namespaced(ctx.client.clone(), &event.namespace().unwrap_or_default());
    let step = "deleting the HealingEvent after the retention period";
    if delete_decided(&api, event, step).await? {
        info!(healing_id = %event.name_any(), "healing event removed after the retention period");
    }
    Ok(())
}

/// Exports the event to each sink in `due` at once; each sink's state after its attempt.
async fn export_due(
    ctx: &Context,
    event: &HealingEvent,
    due: &[&'static str],
) -> BTreeMap<String, SinkExport> {
    let id = event.name_any();
    let results =
        futures::future::join_all(due.iter().map(|sink| ctx.sinks.export(sink, event))).await;
    let previous = |sink: &str| event.status.as_ref().and_then(|s| s.exports.get(sink));
    let backoff = Backoff::default();
    due.iter()
        .zip(results)
        .map(|(sink, result)| {
            let before = previous(sink);
            log_attempt(&id, sink, before, &result);
            let state = after_attempt(before, result, Timestamp::now(), &backoff, &id);
            ((*sink).to_owned(), state)
        })
        .collect()
}

/// Applies every sink's state, the ones not due this time included (the export writer owns
/// the whole map, and an entry it left out would be removed); the event's status as written.
/// The map is rebuilt from a read, so the write is conditional on that read's version: a
/// stale one must not write an older state over a newer one. On a conflict the event is read
/// again and this attempt's results are written over the fresh map once more (so they are
/// not lost); None: it changed again, and its newer version decides.
async fn write_exports(
    ctx: &Context,
    event: &HealingEvent,
    exports: BTreeMap<String, SinkExport>,
) -> Result<Option<HealingEventStatus>, Error> {
    let api: Api<HealingEvent> =
        Api::namespaced(ctx.client.clone(), &event.namespace().unwrap_or_default());
    let id = event.name_any();
    let _turn = ctx.bookkeeping.turn().await;
    let mut read = event.clone();
    for _ in 0..2 {
        let mut status = read.status.clone().unwrap_or_default();
        status.exports.extend(exports.clone());
        let written_part = HealingEventStatus {
            exports: status.exports.clone(),
            ..Default::default()
        };
        let written = apply_status(
            &api,
            &id,
            EXPORT_MANAGER,
            Precondition::decided_from(&read),
            &written_part,
            "writing the export state",
        )
        .await?;
        if written.is_some() {
            return Ok(Some(status));
        }
        debug!(healing_id = %id, "the event changed since it was read; writing the export state over its newer version");
        let Some(fresh) = api
            .get_opt(&id)
            .await
            .at("reading the event after a conflict")?
        else {
            return Ok(None); // deleted meanwhile
        };
        read = fresh;
    }
    Ok(None)
}

/// Logs an export attempt. An outage fails every event at every retry, so a failure is
/// a warning only when it is new for the event (or its error changed); repeats are debug,
/// and the status keeps the count.
fn log_attempt(id: &str, sink: &str, before: Option<&SinkExport>, result: &ItemResult) {
    let failing_before = before.filter(|b| b.state == ExportState::Failing);
    match (result, failing_before) {
        (Ok(()), None) => debug!(healing_id = %id, sink, "healing event exported"),
        (Ok(()), Some(b)) => {
            info!(healing_id = %id, sink, failed_attempts = b.attempts, "healing event exported after failing")
        }
        (Err(error), Some(b)) if b.last_error.as_deref() == Some(error.0.as_str()) => {
            debug!(healing_id = %id, sink, %error, attempts = b.attempts + 1, "exporting a healing event failed again");
        }
        (Err(error), _) => {
            warn!(healing_id = %id, sink, %error, "exporting a healing event failed; retrying with backoff")
        }
    }
}
