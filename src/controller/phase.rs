//! The PhaseRun reconciler: count rows -> step (pure) -> trigger a wave (intent first: one
//! HealingEvent per trigger) -> write status -> look again after the step's backoff.
//!
//! BigQuery cannot be watched, so a phase being healed is looked at again on a doubling
//! backoff; a complete phase (or one not required) waits for a change to its spec.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::{Context, requeue_at};
use crate::api::event::{HealingEventSpec, HealingEventStatus, Outcome, PHASE_RERUN, TargetRef};
use crate::api::phase::{PhaseRun, PhaseState, Processor};
use crate::api::{HealingEvent, HealingPolicySpec};
use crate::decide::conditions::{self, Desired};
use crate::decide::naming::healing_id;
use crate::decide::phase::{
    Count, JobState, Limits, Observation, ProcessorSpec, Progress, Step, step,
};
use crate::decide::plan::Node;
use crate::decide::rerun::{ATTEMPT_LABEL, PHASE_LABEL, PROCESSOR_LABEL, Rerun, RerunError, rerun};
use crate::decide::trust::Refusal;
use crate::error::{Error, KubeResultExt};
use crate::sink::firestore_history::{self, PassHistory};
use crate::sink::slack::phase_heal_message;

/// How soon a reconcile that read a stale PhaseRun looks again (the watch has the newer one
/// within milliseconds).
const STALE_READ_RETRY: std::time::Duration = std::time::Duration::from_millis(200);

fn specs(processors: &[Processor]) -> Vec<ProcessorSpec> {
    processors
        .iter()
        .map(|p| ProcessorSpec {
            node: Node::from(p),
            min_rows: i64::from(p.min_rows),
            triggerable: p.trigger.is_some(),
            job: p.trigger.as_ref().is_some_and(|t| t.job.is_some()),
        })
        .collect()
}

fn limits(policy: &HealingPolicySpec) -> Limits {
    let p = &policy.phase_healing;
    Limits {
        max_attempts: p.max_attempts,
        initial_backoff: p.initial_backoff.as_span(),
        max_backoff: p.max_backoff.as_span(),
    }
}

fn progress_of(run: &PhaseRun) -> Progress {
    let Some(s) = run.status.as_ref() else {
        return Progress::default();
    };
    Progress {
        // A pass is under way while it has a current wave; it survives an observation that
        // failed in the middle, and ends (the wave is cleared) when the phase is settled.
        plan: if s.current_wave.is_some() {
            s.plan.clone()
        } else {
            Vec::new()
        },
        current_wave: s.current_wave.unwrap_or(0) as usize,
        wave_triggered_at: s.wave_triggered_at.as_ref().map(|t| t.0),
        checks: s.checks,
        attempts: s.attempts.clone(),
    }
}

pub async fn reconcile(run: Arc<PhaseRun>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(&PhaseRun::kind(&()));
    ctx.policies.synced().await?;
    let ns = run.namespace().unwrap_or_default();
    let policy = ctx.policies.spec_for(&ns);
    let limits = limits(&policy);
    let processors = specs(&run.spec.processors);
    let now = Timestamp::now();
    if let Some(action) = refuse_tables(&ctx, &run, now).await? {
        return Ok(action);
    }
    let observation = observe(&ctx, &run).await?;
    let progress = progress_of(&run);
    let next = step(&processors, &observation, &progress, &limits, now);
    let missing = crate::decide::phase::missing(&processors, &observation);
    let counts: BTreeMap<String, i64> = run
        .spec
        .processors
        .iter()
        .filter_map(|p| {
            let Count::Rows(n) = observation.rows.get(&p.name)? else {
                return None;
            };
            Some((p.table.as_str().to_owned(), *n))
        })
        .collect();

    let mut status = json!({
        "recordCounts": counts,
        "missingProcessors": missing,
        "lastObservedTime": Time(now),
        "observedGeneration": run.meta().generation,
    });
    let (state, desired, action) = match &next {
        Step::Invalid(message) => (
            PhaseState::Invalid,
            vec![Desired::new(
                "Healing",
                false,
                "InvalidSpec",
                message.clone(),
            )],
            Action::await_change(),
        ),
        Step::ObservationFailed { message, retry_at } => {
            let before = run.status.as_ref().and_then(|s| s.state);
            if before == Some(PhaseState::ObservationFailed) {
                debug!(phase_run = %run.name_any(), error = %message, "counting rows failed again");
            } else {
                warn!(phase_run = %run.name_any(), error = %message, "counting rows failed; nothing triggered until it works");
            }
            // Each failure waits longer before the next query.
            status["checks"] = json!(progress.checks + 1);
            (
                PhaseState::ObservationFailed,
                vec![Desired::new(
                    "ObservationFailed",
                    true,
                    "QueryFailed",
                    message.clone(),
                )],
                requeue_at(Some(*retry_at), now),
            )
        }
        Step::NotRequired => (
            PhaseState::NotRequired,
            vec![
                Desired::new(
                    "NotRequired",
                    true,
                    "NoGames",
                    "the schedule has no rows for the date",
                ),
                Desired::new("ObservationFailed", false, "Counted", "rows counted"),
            ],
            Action::await_change(),
        ),
        Step::Complete => (
            PhaseState::Complete,
            vec![
                Desired::new(
                    "Complete",
                    true,
                    "AllTablesFilled",
                    "every table has its rows for the date",
                ),
                Desired::new("Healing", false, "Complete", "nothing to re-run"),
                Desired::new("ObservationFailed", false, "Counted", "rows counted"),
            ],
            Action::await_change(),
        ),
        Step::Wait { until } => {
            status["checks"] = json!(progress.checks + 1);
            (
                PhaseState::Healing,
                Vec::new(),
                requeue_at(Some(*until), now),
            )
        }
        Step::NothingTriggerable { reason } => {
            let correlation = skip_correlation(&run);
            let pass = PassHistory {
                phase: &run.spec.phase,
                date: run.spec.date.to_string(),
                correlation_id: &correlation,
                missing: &missing,
                triggered: &[],
                failed: &[],
                skipped_reason: Some(reason.as_str()),
            };
            write_history(&ctx, &run, pass).await;
            (
                PhaseState::Skipped,
                vec![
                    Desired::new("Complete", false, "RowsMissing", reason.clone()),
                    Desired::new("Healing", false, "NothingTriggerable", reason.clone()),
                ],
                requeue_at(Some(now + limits.max_backoff), now),
            )
        }
        Step::GaveUp { reason } => {
            publish(&ctx, &run, EventType::Warning, "GaveUp", reason.clone()).await;
            (
                PhaseState::GaveUp,
                vec![
                    Desired::new("GaveUp", true, "AttemptsExhausted", reason.clone()),
                    Desired::new("Healing", false, "GaveUp", reason.clone()),
                ],
                Action::await_change(),
            )
        }
        Step::Trigger {
            processors: wave_processors,
            plan,
            wave,
            new_pass,
            blocked,
        } => {
            let correlation = match (
                new_pass,
                run.status.as_ref().and_then(|s| s.correlation_id.clone()),
            ) {
                (false, Some(c)) => c,
                _ => pass_correlation(&run, &progress),
            };
            let mut attempts = progress.attempts.clone();
            let mut triggered = Vec::new();
            let mut failed = Vec::new();
            let mut refused = Vec::new();
            let mut earlier = 0;
            for name in wave_processors {
                let attempt = attempts.get(name).copied().unwrap_or(0) + 1;
                attempts.insert(name.clone(), attempt);
                match trigger(&ctx, &run, name, &missing, &correlation, attempt).await? {
                    Triggered::Ran => triggered.push(name.clone()),
                    Triggered::Failed(_) => failed.push(name.clone()),
                    Triggered::Refused(why) => {
                        failed.push(name.clone());
                        refused.push(format!("{name}: {why}"));
                    }
                    Triggered::Earlier => earlier += 1,
                }
            }
            // A pass whose triggers were all recorded earlier was announced then.
            if *new_pass && earlier < wave_processors.len() {
                info!(phase_run = %run.name_any(), correlation_id = %correlation, plan = ?plan, "healing pass started");
                let (channel, payload) = phase_heal_message(
                    &run.spec.phase,
                    &run.spec.date.to_string(),
                    !triggered.is_empty(),
                    &correlation,
                    &missing,
                );
                ctx.slack.send(channel, payload, &ctx.metrics);
                let pass = PassHistory {
                    phase: &run.spec.phase,
                    date: run.spec.date.to_string(),
                    correlation_id: &correlation,
                    missing: &missing,
                    triggered: &triggered,
                    failed: &failed,
                    skipped_reason: None,
                };
                write_history(&ctx, &run, pass).await;
            }
            status["plan"] = json!(plan);
            status["currentWave"] = json!(wave);
            status["waveTriggeredAt"] = json!(Time(now));
            status["checks"] = json!(0);
            status["attempts"] = json!(attempts);
            status["correlationId"] = json!(correlation);
            status["blocked"] = json!(blocked);
            let message = format!(
                "wave {} of {}: {}",
                wave + 1,
                plan.len(),
                wave_processors.join(", ")
            );
            let trigger_refused = if refused.is_empty() {
                Desired::new(
                    "TriggerRefused",
                    false,
                    "TriggersAllowed",
                    "every trigger of the wave is allowed",
                )
            } else {
                Desired::new("TriggerRefused", true, "NotAllowed", refused.join("; "))
            };
            (
                PhaseState::Healing,
                vec![
                    trigger_refused,
                    Desired::new("Healing", true, "WaveTriggered", message),
                    Desired::new(
                        "Complete",
                        false,
                        "RowsMissing",
                        format!("missing: {}", missing.join(", ")),
                    ),
                    Desired::new("ObservationFailed", false, "Counted", "rows counted"),
                ],
                requeue_at(Some(now + limits.initial_backoff), now),
            )
        }
    };
    if matches!(
        state,
        PhaseState::Complete
            | PhaseState::NotRequired
            | PhaseState::GaveUp
            | PhaseState::Skipped
            | PhaseState::Invalid
    ) {
        // The pass is over; its plan stays on show.
        status["currentWave"] = serde_json::Value::Null;
    }
    status["state"] = json!(state);
    let existing = run
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status["conditions"] = json!(conditions::merge(
        existing,
        &desired,
        run.meta().generation,
        now
    ));
    // Written only over the status this step was decided from: a reconcile that read a
    // stale PhaseRun must not roll a pass back. Its own status writes do not wake a PhaseRun,
    // so on a conflict it looks again shortly.
    let api: Api<PhaseRun> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({
        "metadata": {"resourceVersion": run.resource_version()},
        "status": status,
    });
    let written = api
        .patch_status(
            &run.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unless_conflict("writing the PhaseRun's status")?;
    if written.is_none() {
        debug!(phase_run = %run.name_any(), "the PhaseRun changed since it was read; looking again");
        return Ok(Action::requeue(STALE_READ_RETRY));
    }
    Ok(action)
}

/// The correlation id of a new healing pass: fixed by the triggers made before it, so a
/// reconcile that reads a stale PhaseRun (its own status write not yet seen) starts the same
/// pass again, whose HealingEvents exist already, instead of a second one.
fn pass_correlation(run: &PhaseRun, progress: &Progress) -> String {
    let earlier: u32 = progress.attempts.values().sum();
    fixed_correlation(run, &["pass", &earlier.to_string()])
}

/// A fixed correlation id for "nothing could be triggered" records, so re-observing the
/// same phase rewrites one history document instead of adding one each time.
fn skip_correlation(run: &PhaseRun) -> String {
    fixed_correlation(run, &["skipped"])
}

/// A correlation id fixed by the PhaseRun (its uid) and `parts`.
fn fixed_correlation(run: &PhaseRun, parts: &[&str]) -> String {
    let uid = run.uid().unwrap_or_default();
    let mut all = vec![uid.as_str()];
    all.extend_from_slice(parts);
    format!("{:016x}", crate::decide::naming::fnv1a(&all))
}

/// Row counts for the schedule and every processor's table, and the state of this pass's
/// Jobs. A failed query is an Err in the observation, never a zero.
async fn observe(ctx: &Context, run: &PhaseRun) -> Result<Observation, Error> {
    let date = run.spec.date.date();
    let count = |table: String, column: String| async move {
        match &ctx.row_counter {
            Some(counter) => match counter.count(&table, &column, date).await {
                Ok(rows) => Count::Rows(rows),
                Err(e) => Count::Unknown(e.to_string()),
            },
            None => Count::Unknown(
                "no BigQuery project is configured for phases (--phase-project)".to_owned(),
            ),
        }
    };
    let schedule = match &run.spec.schedule {
        Some(s) => Some(count(s.table.to_string(), s.date_column.to_string()).await),
        None => None,
    };
    let rows = futures::future::join_all(run.spec.processors.iter().map(|p| async {
        (
            p.name.clone(),
            count(p.table.to_string(), p.date_column.to_string()).await,
        )
    }))
    .await
    .into_iter()
    .collect();
    Ok(Observation {
        schedule_rows: schedule,
        rows,
        jobs: jobs_of(ctx, run).await?,
    })
}

/// The latest Job per processor of this PhaseRun, as a JobState.
async fn jobs_of(ctx: &Context, run: &PhaseRun) -> Result<BTreeMap<String, JobState>, Error> {
    if !run
        .spec
        .processors
        .iter()
        .any(|p| p.trigger.as_ref().is_some_and(|t| t.job.is_some()))
    {
        return Ok(BTreeMap::new());
    }
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &run.namespace().unwrap_or_default());
    let jobs = api
        .list(&ListParams::default().labels(&format!("{PHASE_LABEL}={}", run.name_any())))
        .await
        .at("listing the phase's Jobs")?;
    let mut latest: BTreeMap<String, (i64, JobState)> = BTreeMap::new();
    for job in jobs.items {
        let labels = job.labels();
        let Some(processor) = labels.get(PROCESSOR_LABEL).cloned() else {
            continue;
        };
        let attempt: i64 = labels
            .get(ATTEMPT_LABEL)
            .and_then(|a| a.parse().ok())
            .unwrap_or(0);
        let status = job.status.as_ref();
        let failed = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Failed" && c.status == "True"));
        let state = if status.and_then(|s| s.succeeded).unwrap_or(0) > 0 {
            JobState::Succeeded
        } else if failed {
            JobState::Failed
        } else {
            JobState::Running
        };
        if latest.get(&processor).is_none_or(|(a, _)| attempt >= *a) {
            latest.insert(processor, (attempt, state));
        }
    }
    Ok(latest.into_iter().map(|(p, (_, s))| (p, s)).collect())
}

/// What one `trigger` call did.
#[derive(Debug, PartialEq, Eq)]
enum Triggered {
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
async fn trigger(
    ctx: &Context,
    run: &PhaseRun,
    name: &str,
    missing: &[String],
    correlation: &str,
    attempt: u32,
) -> Result<Triggered, Error> {
    let ns = run.namespace().unwrap_or_default();
    let Some(processor) = run.spec.processors.iter().find(|p| p.name == name) else {
        return Ok(Triggered::Failed(format!("no processor named {name}")));
    };
    let date = run.spec.date.to_string();
    let subject = format!("{}-{date}-{name}", run.spec.phase);
    let id = healing_id(
        PHASE_RERUN,
        &subject,
        &[
            &run.uid().unwrap_or_default(),
            correlation,
            name,
            &attempt.to_string(),
        ],
    );
    let table = processor.table.as_str();
    let was_missing = missing.iter().any(|m| m == name);
    // Checked before the intent is recorded, so that a refusal is the record's root cause.
    let planned = rerun(&ctx.config.trust, run, processor, attempt);
    let (root_cause, reason) = match &planned {
        Err(RerunError::Refused(refusal)) => (
            refusal.root_cause().to_owned(),
            format!("{name}'s trigger is refused: {refusal}"),
        ),
        _ if was_missing => (
            format!("missing_rows:{table}"),
            format!(
                "{table} has fewer than {} rows for {date}",
                processor.min_rows
            ),
        ),
        _ => (
            format!("upstream_rerun:{table}"),
            format!("{table} depends on re-run processors for {date}"),
        ),
    };
    let how = match &planned {
        Ok(rerun) => rerun.how(),
        Err(RerunError::Refused(_)) => "refused, nothing sent or created",
        Err(RerunError::Invalid(_)) => "could not be run",
    };
    let spec = HealingEventSpec {
        healing_id: id.clone(),
        timestamp: MicroTime(Timestamp::now()),
        healing_type: PHASE_RERUN.into(),
        trigger_reason: reason,
        action_taken: format!("Re-ran {name} (attempt {attempt}): {how}"),
        root_cause,
        correlation_id: Some(correlation.to_owned()),
        target: TargetRef::of(run),
        dry_run: false,
        threshold_time: None,
        before_state: Some(
            json!({"phase": run.spec.phase, "date": date, "processor": name, "table": table, "missing_processors": missing}),
        ),
        details: Some(json!({"attempt": attempt})),
    };
    if !record_intent(ctx, &ns, &id, spec).await? {
        // This trigger was recorded already (a retried reconcile): do not run it twice.
        return Ok(Triggered::Earlier);
    }
    let refused = matches!(planned, Err(RerunError::Refused(_)));
    // Ok, or the failure as the outcome records it.
    let result = match planned {
        Ok(Rerun::Http(request)) => ctx
            .triggers
            .trigger(&request, name, &date, correlation)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string()),
        Ok(Rerun::Job(job)) => create_job(ctx, &job).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let (outcome, note) = match &result {
        Ok(()) => (
            Outcome::Succeeded,
            (
                EventType::Normal,
                "Triggered",
                format!("re-ran {name} ({how}; HealingEvent {id})"),
            ),
        ),
        Err(e) => (
            Outcome::Failed,
            (
                EventType::Warning,
                if refused {
                    "TriggerRefused"
                } else {
                    "TriggerFailed"
                },
                format!("re-running {name} failed: {e} (HealingEvent {id})"),
            ),
        ),
    };
    let after_state = json!({"triggered": result.is_ok()});
    record_outcome(ctx, &ns, &id, outcome, result.as_ref().err(), after_state).await?;
    info!(phase_run = %run.name_any(), processor = name, healing_id = %id, ?outcome, "processor re-run");
    publish(ctx, run, note.0, note.1, note.2).await;
    Ok(match result {
        Ok(()) => Triggered::Ran,
        Err(e) if refused => Triggered::Refused(e),
        Err(e) => Triggered::Failed(e),
    })
}

/// Creates the HealingEvent `id` (intent first). False: it exists already, so this action was
/// recorded (and taken) by an earlier reconcile.
async fn record_intent(
    ctx: &Context,
    ns: &str,
    id: &str,
    spec: HealingEventSpec,
) -> Result<bool, Error> {
    let mut event = HealingEvent::new(id, spec);
    event.metadata.namespace = Some(ns.to_owned());
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), ns);
    let created = events
        .create(&PostParams::default(), &event)
        .await
        .unless_conflict("recording the re-run's intent")?;
    Ok(created.is_some())
}

/// Makes the HealingEvent `id` final with `outcome` (a failure's message, when it failed).
async fn record_outcome(
    ctx: &Context,
    ns: &str,
    id: &str,
    outcome: Outcome,
    failure: Option<&String>,
    after_state: serde_json::Value,
) -> Result<(), Error> {
    let status = HealingEventStatus {
        outcome: Some(outcome),
        success: Some(failure.is_none()),
        message: Some(failure.cloned().unwrap_or_else(|| "triggered".into())),
        finished_at: Some(Time(Timestamp::now())),
        after_state: Some(after_state),
        ..Default::default()
    };
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), ns);
    events
        .patch_status(
            id,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .at("recording the re-run's outcome")?;
    ctx.metrics
        .healed(PHASE_RERUN, &format!("{outcome:?}"), None);
    Ok(())
}

/// A PhaseRun naming a table the controller may not query is refused before any query: state
/// `Invalid`, condition `TableRefused` naming the table, project and flag, one Failed
/// HealingEvent per spec generation (root cause `table_not_allowed`) and a Warning Event. It
/// waits for its spec to change. None: every table is allowed.
async fn refuse_tables(
    ctx: &Context,
    run: &PhaseRun,
    now: Timestamp,
) -> Result<Option<Action>, Error> {
    let tables = run
        .spec
        .schedule
        .iter()
        .map(|s| &s.table)
        .chain(run.spec.processors.iter().map(|p| &p.table));
    let refusals: Vec<Refusal> = tables
        .filter_map(|t| ctx.config.trust.check_table(t).err())
        .collect();
    let Some(first) = refusals.first() else {
        return Ok(None);
    };
    let ns = run.namespace().unwrap_or_default();
    let message = refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ");
    let generation = run.meta().generation.unwrap_or_default().to_string();
    let subject = format!("{}-{}-tables", run.spec.phase, run.spec.date);
    let id = healing_id(
        PHASE_RERUN,
        &subject,
        &[&run.uid().unwrap_or_default(), "table_refused", &generation],
    );
    let spec = HealingEventSpec {
        healing_id: id.clone(),
        timestamp: MicroTime(now),
        healing_type: PHASE_RERUN.into(),
        trigger_reason: message.clone(),
        action_taken: "Refused the PhaseRun before counting its rows: nothing was queried".into(),
        root_cause: first.root_cause().to_owned(),
        correlation_id: Some(fixed_correlation(run, &["table_refused", &generation])),
        target: TargetRef::of(run),
        dry_run: false,
        threshold_time: None,
        before_state: Some(json!({"phase": run.spec.phase, "date": run.spec.date.to_string()})),
        details: None,
    };
    if record_intent(ctx, &ns, &id, spec).await? {
        record_outcome(
            ctx,
            &ns,
            &id,
            Outcome::Failed,
            Some(&message),
            json!({"queried": false}),
        )
        .await?;
        warn!(phase_run = %run.name_any(), healing_id = %id, reason = %message, "PhaseRun refused: a table is outside the allowed projects");
        publish(
            ctx,
            run,
            EventType::Warning,
            "TableRefused",
            format!("{message} (HealingEvent {id})"),
        )
        .await;
    }
    let desired = [
        Desired::new("TableRefused", true, "ProjectNotAllowed", message),
        Desired::new(
            "Healing",
            false,
            "TableRefused",
            "a table is outside the allowed projects",
        ),
    ];
    let existing = run
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let status = json!({
        "state": PhaseState::Invalid,
        "lastObservedTime": Time(now),
        "observedGeneration": run.meta().generation,
        "conditions": conditions::merge(existing, &desired, run.meta().generation, now),
    });
    let api: Api<PhaseRun> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch_status(
        &run.name_any(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": status})),
    )
    .await
    .at("writing the refused PhaseRun's status")?;
    Ok(Some(Action::await_change()))
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

async fn publish(ctx: &Context, run: &PhaseRun, type_: EventType, reason: &str, note: String) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Heal".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &run.object_ref(&())).await {
        warn!(phase_run = %run.name_any(), error = %e, "publishing a Kubernetes Event failed");
    }
}

/// The original's `self_heal_history` document for `pass` (when a Firestore project is
/// configured). A failure is logged: the HealingEvents are the record that must not be lost.
async fn write_history(ctx: &Context, run: &PhaseRun, pass: PassHistory<'_>) {
    let Some(db) = &ctx.firestore else { return };
    if let Err(error) = firestore_history::write(db, &pass).await {
        warn!(phase_run = %run.name_any(), document = %pass.document_id(), %error, "writing self_heal_history failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(status: serde_json::Value) -> PhaseRun {
        serde_json::from_value(json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PhaseRun",
            "metadata": {"name": "p"},
            "spec": {"phase": "phase4", "date": "2026-11-24", "processors": [
                {"name": "a", "table": "d.a", "dateColumn": "game_date"}]},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_pass_survives_a_failed_observation_and_ends_when_settled() {
        let during =
            run_with(json!({"state": "ObservationFailed", "plan": [["a"]], "currentWave": 0}));
        assert_eq!(progress_of(&during).plan, [vec!["a".to_owned()]]);
        let after = run_with(json!({"state": "Complete", "plan": [["a"]]}));
        assert!(progress_of(&after).plan.is_empty());
    }
}
