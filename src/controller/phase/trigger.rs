//! Re-running one processor: record the intent, trigger it (POST or Job), record the
//! outcome. The record says what the allowlists refused, as any other outcome.

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use tracing::info;

use super::status::publish;
use crate::api::event::{HealingEventStatus, Outcome, PHASE_RERUN};
use crate::api::phase::PhaseRun;
use crate::controller::{Context, record};
use crate::decide::phase_status::{how, rerun_intent};
use crate::decide::rerun::{Rerun, RerunError, rerun};
use crate::error::{Error, KubeResultExt};

/// What one `trigger` call did.
#[derive(Debug, PartialEq, Eq)]
pub enum Triggered {
    /// Recorded and run.
    Ran,
    /// Recorded already by an earlier reconcile (this one read a stale PhaseRun): not run
    /// again.
    Earlier,
    /// Recorded, and the trigger failed (retried by the phase's own backoff).
    Failed(String),
    /// Recorded as failed: the operator's allowlists refuse it, so nothing was sent or
    /// created.
    Refused(String),
}

/// Records the intent, triggers one processor, records the outcome. An Err is an API
/// failure (the reconcile is retried).
pub async fn trigger(
    ctx: &Context,
    run: &PhaseRun,
    name: &str,
    missing: &[String],
    correlation: &str,
    attempt: u32,
) -> Result<Triggered, Error> {
    let Some(processor) = run.spec.processors.iter().find(|p| p.name == name) else {
        return Ok(Triggered::Failed(format!("no processor named {name}")));
    };
    // Checked before the intent is recorded, so that a refusal is the record's root cause.
    let planned = rerun(&ctx.config.trust, run, processor, attempt);
    let event = rerun_intent(
        run,
        processor,
        &planned,
        missing,
        correlation,
        attempt,
        Timestamp::now(),
    );
    let id = event.name_any();
    if !record::intent(ctx, &event).await? {
        // This trigger was recorded already (a retried reconcile): do not run it twice.
        return Ok(Triggered::Earlier);
    }
    let how = how(&planned);
    let refused = matches!(planned, Err(RerunError::Refused(_)));
    let date = run.spec.date.to_string();
    let failure = match planned {
        Ok(Rerun::Http(request)) => ctx
            .triggers
            .trigger(&request, name, &date, correlation)
            .await
            .err()
            .map(|e| e.to_string()),
        Ok(Rerun::Job(job)) => create_job(ctx, &job).await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    let outcome = if failure.is_none() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    };
    let ns = run.namespace().unwrap_or_default();
    record_outcome(
        ctx,
        &ns,
        &id,
        outcome,
        failure.as_deref(),
        json_triggered(failure.is_none()),
    )
    .await?;
    info!(phase_run = %run.name_any(), processor = name, healing_id = %id, ?outcome, "processor re-run");
    let (type_, reason, note) = match &failure {
        None => (
            EventType::Normal,
            "Triggered",
            format!("re-ran {name} ({how}; HealingEvent {id})"),
        ),
        Some(e) => (
            EventType::Warning,
            if refused {
                "TriggerRefused"
            } else {
                "TriggerFailed"
            },
            format!("re-running {name} failed: {e} (HealingEvent {id})"),
        ),
    };
    publish(ctx, run, type_, reason, note).await;
    Ok(match failure {
        None => Triggered::Ran,
        Some(e) if refused => Triggered::Refused(e),
        Some(e) => Triggered::Failed(e),
    })
}

fn json_triggered(triggered: bool) -> serde_json::Value {
    serde_json::json!({ "triggered": triggered })
}

/// Makes the HealingEvent `id` final with `outcome` (a failure's message, when it failed).
pub async fn record_outcome(
    ctx: &Context,
    ns: &str,
    id: &str,
    outcome: Outcome,
    failure: Option<&str>,
    after_state: serde_json::Value,
) -> Result<(), Error> {
    let status = HealingEventStatus {
        outcome: Some(outcome),
        success: Some(failure.is_none()),
        message: Some(failure.unwrap_or("triggered").to_owned()),
        finished_at: Some(Time(Timestamp::now())),
        after_state: Some(after_state),
        ..Default::default()
    };
    // False: the record was settled already (its actor counted as stopped); that stands.
    record::outcome(ctx, ns, id, PHASE_RERUN, &status)
        .await
        .map(|_| ())
}

/// Creates the re-run's Job; one that exists already is this attempt's, created by an
/// earlier reconcile.
async fn create_job(ctx: &Context, job: &Job) -> Result<(), Error> {
    let api: Api<Job> = Api::namespaced(
        ctx.client.clone(),
        job.metadata.namespace.as_deref().unwrap_or_default(),
    );
    api.create(&PostParams::default(), job)
        .await
        .unless_conflict("creating the Job")?;
    Ok(())
}
