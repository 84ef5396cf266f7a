//! The HealingEvent reconciler: the outbox. Once an event's action has finished it is
//! exported to every configured sink, each sink's state kept in the event's status (exported
//! with time, or failing with attempts, last error and next attempt), failures retried with
//! capped, jittered backoff; after the retention period, and only once every sink has it,
//! the event is deleted. Events recorded by anyone (a worker's retry, a fallback) go the
//! same way as the controller's own.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use kube::api::{DeleteParams, Preconditions};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{debug, info, warn};

use super::{Context, requeue_at};
use crate::api::HealingEvent;
use crate::api::event::{ExportState, HealingEventStatus, SinkExport};
use crate::decide::export::{Backoff, after_attempt, plan};
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
    let id = event.name_any();
    let policy = ctx.policies.spec_for(&namespace);
    let sinks = ctx.sinks.names();
    let now = Timestamp::now();
    let retention = policy.retention.as_span();
    let recorded = event.spec.timestamp.0;
    let api: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), &namespace);

    let next = plan(event.status.as_ref(), &sinks, recorded, retention, now);
    if next.delete {
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: event.uid(),
                resource_version: None,
            }),
            ..Default::default()
        };
        let deleted = api
            .delete(&id, &params)
            .await
            .unless_gone("deleting the HealingEvent after the retention period")?;
        if deleted.is_some() {
            info!(healing_id = %id, "healing event removed after the retention period");
        }
        return Ok(Action::await_change());
    }
    if next.due.is_empty() {
        return Ok(requeue_at(next.wake_at, now));
    }

    let results =
        futures::future::join_all(next.due.iter().map(|sink| ctx.sinks.export(sink, &event))).await;
    let previous = |sink: &str| event.status.as_ref().and_then(|s| s.exports.get(sink));
    let backoff = Backoff::default();
    let exports: BTreeMap<String, SinkExport> = next
        .due
        .iter()
        .zip(results)
        .map(|(sink, result)| {
            let before = previous(sink);
            log_attempt(&id, sink, before, &result);
            let state = after_attempt(before, result, Timestamp::now(), &backoff, &id);
            ((*sink).to_owned(), state)
        })
        .collect();
    // Every sink's state, the ones not due this time included: the export writer owns the
    // whole map, and an entry it left out would be removed.
    let mut all_exports = event
        .status
        .as_ref()
        .map(|s| s.exports.clone())
        .unwrap_or_default();
    all_exports.extend(exports);
    let status = HealingEventStatus {
        exports: all_exports,
        ..Default::default()
    };
    let turn = ctx.bookkeeping.turn().await;
    // Conditional on the version read: the map is rebuilt from it, so a stale read must not
    // write an older state over a newer one. A conflict is retried with the newer version.
    let written = apply_status(
        &api,
        &id,
        EXPORT_MANAGER,
        Precondition::decided_from(&*event),
        &status,
        "writing the export state",
    )
    .await?;
    drop(turn);
    if written.is_none() {
        debug!(healing_id = %id, "the event changed since it was read; exporting from its newer version");
        return Ok(Action::requeue(std::time::Duration::from_millis(200)));
    }

    // The write brings the event back through here, where the plan sees the new state; the
    // requeue below only covers a retry falling due with no change in between.
    let mut after_status = event.status.clone().unwrap_or_default();
    after_status.exports = status.exports;
    let after = plan(Some(&after_status), &sinks, recorded, retention, now);
    Ok(requeue_at(after.wake_at, now))
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
