//! What every reconciler records the same way: a HealingEvent's intent (created before the
//! action) and its outcome (applied after it), and the Kubernetes Events that tell people.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};

use super::Context;
use crate::api::HealingEvent;
use crate::api::event::{HealingEventStatus, Outcome};
use crate::error::{Error, KubeResultExt};
use crate::runtime::MANAGER;
use crate::runtime::status::{Precondition, apply_status};

/// Creates the HealingEvent `event`, intent first. False: it exists already (an earlier
/// attempt at the same action recorded it).
pub async fn intent(ctx: &Context, event: &HealingEvent) -> Result<bool, Error> {
    let events: Api<HealingEvent> =
        Api::namespaced(ctx.client.clone(), &event.namespace().unwrap_or_default());
    let created = events
        .create(&PostParams::default(), event)
        .await
        .unless_conflict("recording the action's intent")?;
    Ok(created.is_some())
}

/// Applies the outcome `status` to the HealingEvent `id` of `healing_type` in `namespace`,
/// and counts it (with its latency when it succeeded).
pub async fn outcome(
    ctx: &Context,
    namespace: &str,
    id: &str,
    healing_type: &str,
    status: &HealingEventStatus,
) -> Result<(), Error> {
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), namespace);
    apply_status(
        &events,
        id,
        MANAGER,
        Precondition::None,
        status,
        "recording the action's outcome",
    )
    .await?;
    let outcome = status.outcome.unwrap_or(Outcome::Pending);
    let latency = status
        .heal_latency_seconds
        .filter(|_| outcome == Outcome::Succeeded);
    ctx.metrics
        .healed(healing_type, &format!("{outcome:?}"), latency);
    Ok(())
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
