//! The PhaseRun reconciler's writes: the run's status, its Kubernetes Events, and the
//! original's history document.

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use tracing::{debug, warn};

use crate::api::phase::{PhaseRun, PhaseRunStatus};
use crate::controller::{Context, STALE_READ_RETRY, record};
use crate::error::Error;
use crate::runtime::MANAGER;
use crate::runtime::status::{Precondition, apply_whole_status};
use crate::sink::firestore_history::{self, PassHistory};

/// Applies `status`, then goes on as `action` says. Written only over the status the step was
/// decided from: a reconcile that read a stale PhaseRun must not roll a pass back. Its own
/// status writes do not wake a PhaseRun, so on a conflict it looks again shortly.
pub async fn write(
    ctx: &Context,
    run: &PhaseRun,
    status: &PhaseRunStatus,
    action: Action,
) -> Result<Action, Error> {
    let api: Api<PhaseRun> =
        Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let written = apply_whole_status(
        &api,
        &run.name_any(),
        MANAGER,
        Precondition::decided_from(run),
        status,
        "writing the PhaseRun's status",
    )
    .await?;
    if written.is_none() {
        debug!(phase_run = %run.name_any(), "the PhaseRun changed since it was read; looking again");
        return Ok(Action::requeue(STALE_READ_RETRY));
    }
    Ok(action)
}

/// A Kubernetes Event on the run. A failure is logged: the HealingEvents are the record.
pub async fn publish(ctx: &Context, run: &PhaseRun, type_: EventType, reason: &str, note: String) {
    let regarding = run.object_ref(&());
    if let Err(e) = record::publish(ctx, &regarding, type_, reason, "Heal", note).await {
        warn!(phase_run = %run.name_any(), error = %e, "publishing a Kubernetes Event failed");
    }
}

/// The original's `self_heal_history` document for `pass` (when a Firestore project is
/// configured). A failure is logged: the HealingEvents are the record that must not be lost.
pub async fn write_history(ctx: &Context, run: &PhaseRun, pass: PassHistory<'_>) {
    let Some(db) = &ctx.firestore else { return };
    if let Err(error) = firestore_history::write(db, &pass).await {
        warn!(phase_run = %run.name_any(), document = %pass.document_id(), %error, "writing self_heal_history failed");
    }
}
