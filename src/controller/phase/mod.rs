//! The PhaseRun reconciler: refuse tables outside the allowed projects -> count rows ->
//! step (pure) -> act on the step (trigger a wave: intent first, one HealingEvent per
//! trigger) -> write status -> look again after the step's backoff.
//!
//! BigQuery cannot be watched, so a phase being healed is looked at again on a doubling
//! backoff; a complete phase (or one not required) waits for a change to its spec.
//!
//! The decisions are in `decide::phase` (the step) and `decide::phase_status` (the status
//! and records); here: `observe.rs` counts rows and reads Jobs, `act.rs` carries out a step,
//! `trigger.rs` re-runs one processor, `refuse.rs` refuses a run naming a disallowed table,
//! and `status.rs` writes the status and tells people.

mod act;
mod observe;
mod refuse;
mod status;
mod trigger;

use std::sync::Arc;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use super::Context;
use crate::Error;
use crate::api::phase::PhaseRun;
use crate::decide::phase::{missing, step};
use crate::decide::phase_status::{limits, progress_of, specs, status_after};

pub async fn reconcile(run: Arc<PhaseRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .reconciled(&<PhaseRun as kube::Resource>::kind(&()));
    ctx.policies.synced().await?;
    let limits = limits(&ctx.policies.spec_for(&run.namespace().unwrap_or_default()));
    let now = Timestamp::now();
    if let Some(action) = refuse::refuse_tables(&ctx, &run, now).await? {
        return Ok(action);
    }
    let observation = observe::observe(&ctx, &run).await?;
    let processors = specs(&run.spec.processors);
    let progress = progress_of(&run);
    let next = step(&processors, &observation, &progress, &limits, now);
    let missing = missing(&processors, &observation);
    act::verify_reruns(&ctx, &run, &observation, &next, now).await?;
    let wave = act::act(&ctx, &run, &next, &progress, &observation, &limits).await?;
    let (status, wake_at) = status_after(
        &run,
        &next,
        wave.as_ref(),
        &observation,
        &missing,
        &limits,
        now,
    );
    status::write(&ctx, &run, &status, super::requeue_at(wake_at, now)).await
}
