//! The HealingEvent reconciler: the outbox. An event whose action has not finished is held to
//! its actor's bound and then settled (`decide::unfinished`), so none stays open for ever.
//! Once an event's action has finished it is exported to every sink it must reach (those
//! configured when it became final, kept on its status, and any configured since), each
//! sink's state kept in the event's status (exported with time, or failing with attempts,
//! last error and next attempt), failures retried with capped, jittered backoff. After the
//! retention period, and only once every such sink has it, the event is deleted; a sink
//! removed from the flags keeps it for a grace period more. A finalizer holds a deleted event
//! (by hand, or with its namespace) until it is exported or `--export-finalizer-timeout`
//! passes. Events recorded by anyone (a worker's retry, a fallback) go the same way as the
//! controller's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, error, info, warn};

use super::{Context, STALE_READ_RETRY, delete_decided, record, requeue_at};
use crate::api::HealingEvent;
use crate::api::event::{
    BATCH_CLEANUP, EXPORT_FINALIZER, ExportState, HealingEventStatus, SinkExport,
};
use crate::decide::export::{Backoff, Outbox, Release, after_attempt, is_final, plan};
use crate::decide::unfinished::abandoned_reason;
use crate::error::{Error, KubeResultExt};
use crate::runtime::batcher::ItemResult;
use crate::runtime::status::{Precondition, apply_status};
use crate::runtime::{EXPORT_MANAGER, finalizer};

pub async fn reconcile(event: Arc<HealingEvent>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(&HealingEvent::kind(&()));
    ctx.policies.synced().await?;
    let namespace = event.namespace().unwrap_or_default();
    // Any change to an event may move its namespace's windows, circuits or export backlog.
    ctx.health.touch(&namespace);
    let api: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), &namespace);
    let deleting = event.metadata.deletion_timestamp.as_ref().map(|t| t.0);
    if deleting.is_none() && !finalizer::has(&*event, EXPORT_FINALIZER) {
        // Events recorded by others arrive without it; the patch comes back as a change.
        let step = "adding the export finalizer";
        return Ok(
            match finalizer::add(&api, &event, EXPORT_FINALIZER, step).await? {
                true => Action::await_change(),
                false => Action::requeue(STALE_READ_RETRY),
            },
        );
    }
    let sinks = ctx.sinks.names();
    let outbox = Outbox {
        sinks: &sinks,
        retention: ctx.policies.spec_for(&namespace).retention.as_span(),
        release_after: ctx.export_finalizer_timeout(),
    };
    let recorded = event.spec.timestamp.0;
    let now = Timestamp::now();
    let next = plan(event.status.as_ref(), &outbox, recorded, deleting, now);
    if let Some(how) = next.release {
        return release(&ctx, &api, &event, how).await;
    }
    if !is_final(event.status.as_ref()) {
        let settled_at = settle(&ctx, &event, now).await?;
        let wake = [settled_at, next.wake_at].into_iter().flatten().min();
        return Ok(requeue_at(wake, now));
    }
    if next.delete {
        delete(&ctx, &api, &event).await?;
        return Ok(Action::await_change());
    }
    let mut exports = export_due(&ctx, &event, &next.due).await;
    let removed = newly_removed(&event, &next.removed, next.kept_until);
    let required_changed = event
        .status
        .as_ref()
        .is_none_or(|s| s.required_sinks != next.required);
    if exports.is_empty() && removed.is_empty() && !required_changed {
        return Ok(requeue_at(next.wake_at, now));
    }
    exports.extend(removed.clone());
    let Some(status) = write_exports(&ctx, &event, exports, &next.required).await? else {
        return Ok(Action::requeue(STALE_READ_RETRY));
    };
    if !removed.is_empty() {
        tell_removed(&ctx, &event, &removed).await;
    }
    // The write brings the event back through here, where the plan sees the new state; the
    // requeue below only covers a retry falling due with no change in between.
    let after = plan(Some(&status), &outbox, recorded, deleting, now);
    Ok(requeue_at(after.wake_at, now))
}

/// The export state of each sink in `removed` that the event does not show as such yet.
fn newly_removed(
    event: &HealingEvent,
    removed: &[String],
    kept_until: Option<Timestamp>,
) -> BTreeMap<String, SinkExport> {
    let previous = |sink: &str| event.status.as_ref().and_then(|s| s.exports.get(sink));
    let kept_until = kept_until.unwrap_or(Timestamp::MAX);
    removed
        .iter()
        .filter(|sink| previous(sink).is_none_or(|e| e.state != ExportState::Unconfigured))
        .map(|sink| {
            let attempts = previous(sink).map_or(0, |e| e.attempts);
            let message = format!(
                "the {sink} sink is no longer configured; this event must reach it and is \
                 kept until {kept_until} (retention plus a grace period) unless it is \
                 configured again"
            );
            let state = SinkExport {
                state: ExportState::Unconfigured,
                attempts,
                exported_at: None,
                last_error: Some(message),
                next_attempt_at: None,
            };
            (sink.clone(), state)
        })
        .collect()
}

/// A Warning Event on the event, and a log line, for sinks it must reach that this process
/// runs without (once: when they are first shown as Unconfigured).
async fn tell_removed(ctx: &Context, event: &HealingEvent, removed: &BTreeMap<String, SinkExport>) {
    let id = event.name_any();
    for (sink, state) in removed {
        let note = state.last_error.clone().unwrap_or_default();
        warn!(healing_id = %id, sink = %sink, "{note}");
        record::warn_on(ctx, event, "SinkRemoved", "Export", note).await;
    }
}

/// Lets a deleted event go: the finalizer removed once every sink has it, or, after
/// `--export-finalizer-timeout`, without that, its whole record logged and a Warning Event
/// sent (which a terminating namespace may refuse; the log line has the record either way).
async fn release(
    ctx: &Context,
    api: &Api<HealingEvent>,
    event: &HealingEvent,
    how: Release,
) -> Result<Action, Error> {
    let id = event.name_any();
    if how == Release::TimedOut {
        let record = serde_json::json!({"spec": event.spec, "status": event.status});
        let timeout = ctx.config.export_finalizer_timeout;
        error!(namespace = ?event.namespace(), healing_id = %id, ?timeout, record = %record, "a deleted healing event is released before reaching every sink; its record is in this line");
        let note = format!(
            "deleted, and released after {timeout:?} (--export-finalizer-timeout) before \
             reaching every sink; the controller's log holds its whole record"
        );
        record::warn_on(ctx, event, "ReleasedUnexported", "Export", note).await;
    }
    let step = "removing the export finalizer";
    if !finalizer::remove(api, event, EXPORT_FINALIZER, step).await? {
        return Ok(Action::requeue(STALE_READ_RETRY));
    }
    debug!(healing_id = %id, ?how, "healing event released");
    Ok(Action::await_change())
}

/// Holds an event without an outcome to its actor's bound (`decide::unfinished`): waits until
/// then (its outcome arriving is a change, which wakes this anyway), then settles it. A heal
/// of a batch is judged by its batch; anything else is closed as abandoned.
async fn settle(
    ctx: &Context,
    event: &HealingEvent,
    now: Timestamp,
) -> Result<Option<Timestamp>, Error> {
    let bounds = ctx.settle_bounds();
    let due = bounds.settle_at(event);
    if now < due {
        return Ok(Some(due));
    }
    let healing_type = event.spec.healing_type.as_str();
    let look_again = match healing_type {
        BATCH_CLEANUP => super::batch::resolve_unfinished(ctx, event).await?,
        _ => {
            let reason = abandoned_reason(event, &bounds);
            record::abandon(ctx, event, &reason).await?;
            None
        }
    };
    Ok(look_again)
}

/// Deletes the event after its retention period (only the object decided on); the
/// finalizer then lets it go at once, since every sink has it.
async fn delete(ctx: &Context, api: &Api<HealingEvent>, event: &HealingEvent) -> Result<(), Error> {
    let step = "deleting the HealingEvent after the retention period";
    let _turn = ctx.bookkeeping.turn().await;
    if delete_decided(api, event, step).await? {
        info!(healing_id = %event.name_any(), "healing event removed after the retention period");
    }
    Ok(())
}

/// Exports the event to each sink in `due` at once; each sink's state after its attempt.
async fn export_due(
    ctx: &Context,
    event: &HealingEvent,
    due: &[String],
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
            (sink.clone(), state)
        })
        .collect()
}

/// Applies every sink's state, the ones not due this time included (the export writer owns
/// the whole map, and an entry it left out would be removed), and the sinks the event must
/// reach; the event's status as written.
/// The map is rebuilt from a read, so the write is conditional on that read's version: a
/// stale one must not write an older state over a newer one. On a conflict the event is read
/// again and this attempt's results are written over the fresh map once more (so they are
/// not lost); None: it changed again, and its newer version decides.
async fn write_exports(
    ctx: &Context,
    event: &HealingEvent,
    exports: BTreeMap<String, SinkExport>,
    required: &[String],
) -> Result<Option<HealingEventStatus>, Error> {
    let api: Api<HealingEvent> =
        Api::namespaced(ctx.client.clone(), &event.namespace().unwrap_or_default());
    let id = event.name_any();
    let _turn = ctx.bookkeeping.turn().await;
    let mut read = event.clone();
    for _ in 0..2 {
        let mut status = read.status.clone().unwrap_or_default();
        status.exports.extend(exports.clone());
        status.required_sinks = required.to_vec();
        let written_part = HealingEventStatus {
            exports: status.exports.clone(),
            required_sinks: status.required_sinks.clone(),
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
