//! What a step makes the reconciler do besides writing the status: trigger a wave, tell of
//! a pass or of giving up, keep the original's history.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{debug, info, warn};

use super::status::{publish, write_history};
use super::trigger::{Triggered, WaveInputs, trigger};
use crate::api::event::{Outcome, PHASE_RERUN};
use crate::api::phase::{PhaseRun, PhaseState};
use crate::controller::{Context, record};
use crate::decide::phase::{Limits, Observation, Progress, Step, missing};
use crate::decide::phase_status::{WaveTriggered, skip_correlation, specs, wave_correlation};
use crate::decide::verify::{self, is_rerun_of, is_verifying, rerun_verify_within};
use crate::error::Error;
use crate::sink::firestore_history::PassHistory;
use crate::sink::slack::phase_heal_message;

/// Carries out `step`; for a trigger step, what the wave came to.
pub async fn act(
    ctx: &Context,
    run: &PhaseRun,
    step: &Step,
    progress: &Progress,
    observation: &Observation,
    limits: &Limits,
) -> Result<Option<WaveTriggered>, Error> {
    let missing = &missing(&specs(&run.spec.processors), observation);
    match step {
        Step::ObservationFailed { message, .. } => {
            let before = run.status.as_ref().and_then(|s| s.state);
            if before == Some(PhaseState::ObservationFailed) {
                debug!(phase_run = %run.name_any(), error = %message, "counting rows failed again");
            } else {
                warn!(phase_run = %run.name_any(), error = %message, "counting rows failed; nothing triggered until it works");
            }
        }
        Step::NothingTriggerable { reason } => {
            let correlation = skip_correlation(run);
            let pass = PassHistory {
                phase: &run.spec.phase,
                date: run.spec.date.to_string(),
                correlation_id: &correlation,
                missing,
                triggered: &[],
                failed: &[],
                skipped_reason: Some(reason.as_str()),
            };
            write_history(ctx, run, pass).await;
        }
        Step::GaveUp { reason } => {
            publish(ctx, run, EventType::Warning, "GaveUp", reason.clone()).await;
        }
        Step::Trigger {
            processors,
            plan,
            new_pass,
            ..
        } => {
            let correlation = wave_correlation(run, progress, *new_pass);
            let inputs = WaveInputs {
                missing,
                correlation: &correlation,
                observation,
                verify_within: rerun_verify_within(limits.max_backoff),
            };
            let wave = trigger_wave(ctx, run, processors, progress, &inputs).await?;
            // A pass whose triggers were all recorded earlier was announced then.
            if *new_pass && wave.earlier < processors.len() {
                info!(phase_run = %run.name_any(), correlation_id = %correlation, plan = ?plan, "healing pass started");
                announce(ctx, run, &correlation, missing, &wave).await;
            }
            return Ok(Some(WaveTriggered {
                correlation_id: correlation,
                attempts: wave.attempts,
                refused: wave.refused,
            }));
        }
        Step::Invalid(_) | Step::NotRequired | Step::Complete | Step::Wait { .. } => {}
    }
    Ok(None)
}

/// What triggering a wave's processors came to.
struct Wave {
    attempts: std::collections::BTreeMap<String, u32>,
    triggered: Vec<String>,
    failed: Vec<String>,
    refused: Vec<String>,
    /// Triggers recorded by an earlier reconcile (not run again).
    earlier: usize,
}

async fn trigger_wave(
    ctx: &Context,
    run: &PhaseRun,
    processors: &[String],
    progress: &Progress,
    inputs: &WaveInputs<'_>,
) -> Result<Wave, Error> {
    let mut wave = Wave {
        attempts: progress.attempts.clone(),
        triggered: Vec::new(),
        failed: Vec::new(),
        refused: Vec::new(),
        earlier: 0,
    };
    for name in processors {
        let attempt = wave.attempts.get(name).copied().unwrap_or(0) + 1;
        wave.attempts.insert(name.clone(), attempt);
        match trigger(ctx, run, name, inputs, attempt).await? {
            Triggered::Ran => wave.triggered.push(name.clone()),
            Triggered::Failed(_) => wave.failed.push(name.clone()),
            Triggered::Refused(why) => {
                wave.failed.push(name.clone());
                wave.refused.push(format!("{name}: {why}"));
            }
            Triggered::Earlier => wave.earlier += 1,
        }
    }
    Ok(wave)
}

/// A new pass goes to Slack and to the original's history.
async fn announce(
    ctx: &Context,
    run: &PhaseRun,
    correlation: &str,
    missing: &[String],
    wave: &Wave,
) {
    let (channel, payload) = phase_heal_message(
        &run.spec.phase,
        &run.spec.date.to_string(),
        !wave.triggered.is_empty(),
        correlation,
        missing,
    );
    ctx.slack.send(channel, payload, &ctx.metrics);
    let pass = PassHistory {
        phase: &run.spec.phase,
        date: run.spec.date.to_string(),
        correlation_id: correlation,
        missing,
        triggered: &wave.triggered,
        failed: &wave.failed,
        skipped_reason: None,
    };
    write_history(ctx, run, pass).await;
}

/// Judges the run's re-runs still Verifying by this observation and the step it led to
/// (`decide::verify::reruns`), before the step acts: a processor triggered again has its
/// earlier attempt recorded as ineffective first. Each verdict is told on the PhaseRun.
pub async fn verify_reruns(
    ctx: &Context,
    run: &PhaseRun,
    observation: &Observation,
    step: &Step,
    now: jiff::Timestamp,
) -> Result<(), Error> {
    let events = ctx.events.state();
    let verifying: Vec<&crate::api::HealingEvent> = events
        .iter()
        .map(AsRef::as_ref)
        .filter(|e| is_rerun_of(e, run) && is_verifying(e))
        .collect();
    if verifying.is_empty() {
        return Ok(());
    }
    let ns = run.namespace().unwrap_or_default();
    for (id, status) in verify::reruns(run, &verifying, observation, step, now) {
        if !record::outcome(ctx, &ns, &id, PHASE_RERUN, &status).await? {
            continue;
        }
        let message = status.message.clone().unwrap_or_default();
        info!(phase_run = %run.name_any(), healing_id = %id, outcome = ?status.outcome, %message, "re-run verified");
        let note = format!("{message} (HealingEvent {id})");
        match status.outcome {
            Some(Outcome::Succeeded) => {
                publish(ctx, run, EventType::Normal, "RerunVerified", note).await;
            }
            Some(Outcome::Failed) => {
                publish(ctx, run, EventType::Warning, "RerunIneffective", note).await;
            }
            _ => {}
        }
    }
    Ok(())
}
