//! What a step makes the reconciler do besides writing the status: trigger a wave, tell of
//! a pass or of giving up, keep the original's history.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{debug, info, warn};

use super::status::{publish, write_history};
use super::trigger::{Triggered, trigger};
use crate::api::phase::{PhaseRun, PhaseState};
use crate::controller::Context;
use crate::decide::phase::{Progress, Step};
use crate::decide::phase_status::{WaveTriggered, skip_correlation, wave_correlation};
use crate::error::Error;
use crate::sink::firestore_history::PassHistory;
use crate::sink::slack::phase_heal_message;

/// Carries out `step`; for a trigger step, what the wave came to.
pub async fn act(
    ctx: &Context,
    run: &PhaseRun,
    step: &Step,
    progress: &Progress,
    missing: &[String],
) -> Result<Option<WaveTriggered>, Error> {
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
            let wave = trigger_wave(ctx, run, processors, progress, missing, &correlation).await?;
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
    missing: &[String],
    correlation: &str,
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
        match trigger(ctx, run, name, missing, correlation, attempt).await? {
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
