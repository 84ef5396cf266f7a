//! What every reconciler records the same way: a HealingEvent's intent (created before the
//! action) and its outcome (applied after it), and the Kubernetes Events that tell people.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};
use tracing::info;

use super::Context;
use crate::api::HealingEvent;
use crate::api::event::{EXPORT_FINALIZER, HealingEventStatus, OUTCOME_IS_FINAL, Outcome};
use crate::error::{Error, KubeResultExt};
use crate::runtime::MANAGER;
use crate::runtime::status::{Precondition, apply_status};

/// Creates the HealingEvent `event`, intent first. False: it exists already (an earlier
/// attempt at the same action recorded it).
/// It carries the export finalizer from the start, so no deletion loses it unexported.
pub async fn intent(ctx: &Context, event: &HealingEvent) -> Result<bool, Error> {
    let events: Api<HealingEvent> =
        Api::namespaced(ctx.client.clone(), &event.namespace().unwrap_or_default());
    let mut event = event.clone();
    event.finalizers_mut().push(EXPORT_FINALIZER.to_owned());
    let created = events
        .create(&PostParams::default(), &event)
        .await
        .unless_conflict("recording the action's intent")?;
    Ok(created.is_some())
}

/// Applies the outcome `status` to the HealingEvent `id` of `healing_type` in `namespace`,
/// and counts it (with its latency when it succeeded). False: the event has a final outcome
/// already (another actor finished the action first, or it was recorded as abandoned), which
/// stands; nothing was written or counted.
pub async fn outcome(
    ctx: &Context,
    namespace: &str,
    id: &str,
    healing_type: &str,
    status: &HealingEventStatus,
) -> Result<bool, Error> {
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), namespace);
    // The sinks a final record must reach are fixed now, whatever a later process's flags.
    let status = &HealingEventStatus {
        required_sinks: ctx.sinks.names().into_iter().map(str::to_owned).collect(),
        ..status.clone()
    };
    let written = apply_status(
        &events,
        id,
        MANAGER,
        Precondition::None,
        status,
        "recording the action's outcome",
    )
    .await;
    match written {
        Err(e) if e.is_refused_by(OUTCOME_IS_FINAL) => {
            info!(%namespace, healing_id = %id, "the action's outcome was recorded already; that record stands");
            return Ok(false);
        }
        other => other?,
    };
    // Counted once, as it ends: a Verifying record is the action's progress, not its result.
    let outcome = status.outcome.unwrap_or(Outcome::Pending);
    if outcome.is_final() {
        let latency = status
            .heal_latency_seconds
            .filter(|_| outcome == Outcome::Succeeded);
        let healed = status.time_to_heal_seconds;
        ctx.metrics
            .healed(healing_type, &format!("{outcome:?}"), latency, healed);
    }
    Ok(true)
}

/// Publishes a Kubernetes Event on `regarding`.
pub async fn publish(
    ctx: &Context,
    regarding: &ObjectReference,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) -> Result<(), Error> {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    ctx.recorder
        .publish(&event, regarding)
        .await
        .at("publishing a Kubernetes Event")
}

/// Closes the unfinished HealingEvent `event` as abandoned for `reason`, with a Warning Event
/// on it (a failed publish is logged: the record is what must not be lost).
pub async fn abandon(ctx: &Context, event: &HealingEvent, reason: &str) -> Result<(), Error> {
    let ns = event.namespace().unwrap_or_default();
    let id = event.name_any();
    let status = crate::decide::unfinished::abandoned(event, reason, jiff::Timestamp::now());
    if !outcome(ctx, &ns, &id, &event.spec.healing_type, &status).await? {
        return Ok(());
    }
    tracing::warn!(namespace = %ns, healing_id = %id, healing_type = %event.spec.healing_type, reason, "an unfinished action recorded as abandoned");
    let note = format!("recorded as abandoned: {reason}");
    warn_on(ctx, event, "Abandoned", "Settle", note).await;
    Ok(())
}

/// Publishes a Warning Event on the HealingEvent `event` (see [`warn_about`]).
pub async fn warn_on(
    ctx: &Context,
    event: &HealingEvent,
    reason: &'static str,
    action: &'static str,
    note: String,
) {
    warn_about(
        ctx,
        &kube::Resource::object_ref(event, &()),
        reason,
        action,
        note,
    )
    .await;
}

/// Publishes a Warning Event on `regarding`. A failure is logged, not returned: the record
/// is what must not be lost, and a terminating namespace refuses new Events.
pub async fn warn_about(
    ctx: &Context,
    regarding: &ObjectReference,
    reason: &'static str,
    action: &'static str,
    note: String,
) {
    if let Err(error) = publish(ctx, regarding, EventType::Warning, reason, action, note).await {
        tracing::warn!(object = ?regarding.name, reason, %error, "could not publish a Warning Event");
    }
}
