//! Re-running one processor: record the intent, trigger it (POST or Job), record the
//! outcome. The record says what the allowlists refused, as any other outcome.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::events::EventType;
use serde_json::json;
use tracing::info;

use super::status::publish;
use crate::api::event::{Outcome, PHASE_RERUN};
use crate::api::phase::PhaseRun;
use crate::controller::{Context, record};
use crate::decide::phase::{Count, Observation};
use crate::decide::phase_status::{how, rerun_intent};
use crate::decide::rerun::{Rerun, RerunError, rerun};
use crate::decide::verify;
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

/// What every trigger of a wave shares.
pub struct WaveInputs<'a> {
    /// The processors missing rows.
    pub missing: &'a [String],
    /// The pass's correlation id.
    pub correlation: &'a str,
    /// The observation the wave was decided on (its row counts are the "before").
    pub observation: &'a Observation,
    /// How long a triggered re-run has to show its rows.
    pub verify_within: SignedDuration,
}

/// Records the intent, triggers one processor, records the outcome: Verifying when the
/// trigger was taken (the phase's next observations judge it, `decide::verify::reruns`),
/// Failed when it was not. An Err is an API failure (the reconcile is retried).
pub async fn trigger(
    ctx: &Context,
    run: &PhaseRun,
    name: &str,
    wave: &WaveInputs<'_>,
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
        wave.missing,
        wave.correlation,
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
            .trigger(&request, name, &date, wave.correlation)
            .await
            .err()
            .map(|e| e.to_string()),
        Ok(Rerun::Job(job)) => create_job(ctx, &job).await.err().map(|e| e.to_string()),
        Err(e) => Some(e.to_string()),
    };
    let now = Timestamp::now();
    let status = match &failure {
        None => {
            let rows_before = match wave.observation.rows.get(name) {
                Some(Count::Rows(n)) => json!(n),
                _ => serde_json::Value::Null,
            };
            let verify_by = now
                .checked_add(wave.verify_within)
                .unwrap_or(Timestamp::MAX);
            verify::verifying(
                "triggered; waiting for the processor's rows",
                json!({"triggered": true, "rows_before": rows_before}),
                verify_by,
            )
        }
        Some(e) => verify::finished(
            &event.spec,
            Outcome::Failed,
            e,
            Some(json!({"triggered": false})),
            now,
        ),
    };
    let ns = run.namespace().unwrap_or_default();
    // False: the record was settled already (its actor counted as stopped); that stands.
    record::outcome(ctx, &ns, &id, PHASE_RERUN, &status).await?;
    let outcome = status.outcome.unwrap_or(Outcome::Pending);
    info!(phase_run = %run.name_any(), processor = name, healing_id = %id, ?outcome, "processor re-run");
    let (type_, reason, note) = match &failure {
        None => (
            EventType::Normal,
            "Triggered",
            format!("re-ran {name} ({how}; HealingEvent {id}); verifying its rows"),
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
