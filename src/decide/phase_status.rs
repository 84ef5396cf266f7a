//! What a PhaseRun's status and records say for a step: the state, the conditions, the
//! pass's bookkeeping and when to look again; and the HealingEvents that record a re-run or a
//! refusal. Pure; the PhaseRun reconciler (`controller::phase`) writes them.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::{Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, Desired};
use super::naming::{fnv1a, healing_id};
use super::phase::{Count, JobState, Limits, Observation, ProcessorSpec, Progress, Step};
use super::plan::Node;
use super::rerun::{ATTEMPT_LABEL, PROCESSOR_LABEL, Rerun, RerunError};
use super::trust::Refusal;
use crate::api::event::{HealingEventSpec, PHASE_RERUN, TargetRef};
use crate::api::phase::{PhaseRun, PhaseRunStatus, PhaseState, Processor};
use crate::api::{HealingEvent, HealingPolicySpec};

/// The processors as the step sees them.
pub fn specs(processors: &[Processor]) -> Vec<ProcessorSpec> {
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

/// The policy's phase-healing limits.
pub fn limits(policy: &HealingPolicySpec) -> Limits {
    let p = &policy.phase_healing;
    Limits {
        max_attempts: p.max_attempts,
        initial_backoff: p.initial_backoff.as_span(),
        max_backoff: p.max_backoff.as_span(),
    }
}

/// The healing pass so far, as the status keeps it.
pub fn progress_of(run: &PhaseRun) -> Progress {
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

/// The rows counted per table (known counts only).
pub fn counts(run: &PhaseRun, observation: &Observation) -> BTreeMap<String, i64> {
    run.spec
        .processors
        .iter()
        .filter_map(|p| match observation.rows.get(&p.name)? {
            Count::Rows(n) => Some((p.table.as_str().to_owned(), *n)),
            Count::Unknown(_) => None,
        })
        .collect()
}

/// A fixed correlation id for the PhaseRun (its uid) and `parts`.
fn fixed_correlation(run: &PhaseRun, parts: &[&str]) -> String {
    let uid = run.uid().unwrap_or_default();
    let mut all = vec![uid.as_str()];
    all.extend_from_slice(parts);
    format!("{:016x}", fnv1a(&all))
}

/// The correlation id of a new healing pass: fixed by the triggers made before it, so a
/// reconcile that reads a stale PhaseRun (its own status write not yet seen) starts the same
/// pass again, whose HealingEvents exist already, instead of a second one.
pub fn pass_correlation(run: &PhaseRun, progress: &Progress) -> String {
    let earlier: u32 = progress.attempts.values().sum();
    fixed_correlation(run, &["pass", &earlier.to_string()])
}

/// The pass a wave belongs to: the current one, or a new one.
pub fn wave_correlation(run: &PhaseRun, progress: &Progress, new_pass: bool) -> String {
    match (
        new_pass,
        run.status.as_ref().and_then(|s| s.correlation_id.clone()),
    ) {
        (false, Some(current)) => current,
        _ => pass_correlation(run, progress),
    }
}

/// A fixed correlation id for "nothing could be triggered" records, so re-observing the
/// same phase rewrites one history document instead of adding one each time.
pub fn skip_correlation(run: &PhaseRun) -> String {
    fixed_correlation(run, &["skipped"])
}

/// What triggering a wave came to, for its status.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WaveTriggered {
    pub correlation_id: String,
    /// Triggers per processor, this wave's included.
    pub attempts: BTreeMap<String, u32>,
    /// The wave's triggers the allowlists refused, as `name: why`.
    pub refused: Vec<String>,
}

/// The status after `step` (and, for a trigger step, `wave`), from the run's current status;
/// and when to look again (None: on a change). Fields the step does not speak to keep their
/// values.
pub fn status_after(
    run: &PhaseRun,
    step: &Step,
    wave: Option<&WaveTriggered>,
    observation: &Observation,
    missing: &[String],
    limits: &Limits,
    now: Timestamp,
) -> (PhaseRunStatus, Option<Timestamp>) {
    let previous = run.status.clone().unwrap_or_default();
    let mut status = previous.clone();
    status.record_counts.extend(counts(run, observation));
    status.missing_since = missing_since(run, observation, missing, now);
    status.missing_processors = missing.to_vec();
    status.last_observed_time = Some(Time(now));
    status.observed_generation = run.meta().generation;
    let counted = || Desired::new("ObservationFailed", false, "Counted", "rows counted");
    let (state, desired, wake_at) = match step {
        Step::Invalid(message) => (
            PhaseState::Invalid,
            vec![Desired::new(
                "Healing",
                false,
                "InvalidSpec",
                message.clone(),
            )],
            None,
        ),
        Step::ObservationFailed { message, retry_at } => {
            // Each failure waits longer before the next query.
            status.checks = previous.checks.saturating_add(1);
            (
                PhaseState::ObservationFailed,
                vec![Desired::new(
                    "ObservationFailed",
                    true,
                    "QueryFailed",
                    message.clone(),
                )],
                Some(*retry_at),
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
                counted(),
            ],
            None,
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
                counted(),
            ],
            None,
        ),
        Step::Wait { until } => {
            status.checks = previous.checks.saturating_add(1);
            (PhaseState::Healing, Vec::new(), Some(*until))
        }
        Step::NothingTriggerable { reason } => (
            PhaseState::Skipped,
            vec![
                Desired::new("Complete", false, "RowsMissing", reason.clone()),
                Desired::new("Healing", false, "NothingTriggerable", reason.clone()),
            ],
            Some(now + limits.max_backoff),
        ),
        Step::GaveUp { reason } => (
            PhaseState::GaveUp,
            vec![
                Desired::new("GaveUp", true, "AttemptsExhausted", reason.clone()),
                Desired::new("Healing", false, "GaveUp", reason.clone()),
            ],
            None,
        ),
        Step::Trigger {
            processors,
            plan,
            wave: index,
            blocked,
            ..
        } => {
            let wave = wave.cloned().unwrap_or_default();
            status.plan = plan.clone();
            status.current_wave = u32::try_from(*index).ok();
            status.wave_triggered_at = Some(Time(now));
            status.checks = 0;
            status.attempts = wave.attempts;
            status.correlation_id = Some(wave.correlation_id);
            status.blocked.extend(blocked.clone());
            let message = format!(
                "wave {} of {}: {}",
                index + 1,
                plan.len(),
                processors.join(", ")
            );
            let trigger_refused = if wave.refused.is_empty() {
                Desired::new(
                    "TriggerRefused",
                    false,
                    "TriggersAllowed",
                    "every trigger of the wave is allowed",
                )
            } else {
                Desired::new(
                    "TriggerRefused",
                    true,
                    "NotAllowed",
                    wave.refused.join("; "),
                )
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
                    counted(),
                ],
                Some(now + limits.initial_backoff),
            )
        }
    };
    if is_settled(state) {
        // The pass is over; its plan stays on show.
        status.current_wave = None;
    }
    status.state = Some(state);
    status.conditions =
        conditions::merge(&previous.conditions, &desired, run.meta().generation, now);
    (status, wake_at)
}

/// When each processor missing rows was first seen missing: kept from the status, `now` for
/// one missing since this observation; a processor whose count is unknown keeps its entry
/// (a failed query says nothing of the rows).
fn missing_since(
    run: &PhaseRun,
    observation: &Observation,
    missing: &[String],
    now: Timestamp,
) -> BTreeMap<String, Time> {
    let previous = run.status.as_ref().map(|s| &s.missing_since);
    let earlier = |name: &str| previous.and_then(|p| p.get(name)).cloned();
    let unknown = observation
        .rows
        .iter()
        .filter(|(_, c)| matches!(c, Count::Unknown(_)))
        .filter_map(|(name, _)| Some((name.clone(), earlier(name)?)));
    missing
        .iter()
        .map(|name| (name.clone(), earlier(name).unwrap_or(Time(now))))
        .chain(unknown)
        .collect()
}

/// The onset a re-run of `processor` heals: when its rows were first seen missing; for a
/// processor re-run because what it depends on was (its own rows are there), the earliest
/// such instant; `now` for a problem first seen now.
pub fn onset_of(run: &PhaseRun, processor: &str, missing: &[String], now: Timestamp) -> Timestamp {
    let since = run.status.as_ref().map(|s| &s.missing_since);
    let seen = |name: &str| since.and_then(|m| m.get(name)).map(|t| t.0);
    if missing.iter().any(|m| m == processor) {
        return seen(processor).unwrap_or(now);
    }
    missing
        .iter()
        .filter_map(|m| seen(m))
        .min()
        .unwrap_or(now)
        .min(now)
}

/// States that end a pass: nothing is triggered until the spec (or the rows) change.
fn is_settled(state: PhaseState) -> bool {
    matches!(
        state,
        PhaseState::Complete
            | PhaseState::NotRequired
            | PhaseState::GaveUp
            | PhaseState::Skipped
            | PhaseState::Invalid
    )
}

/// The HealingEvent recording the re-run of `processor` (attempt `attempt`, in the pass
/// `correlation`), as `planned`: what it fixes and how, or why it is refused.
pub fn rerun_intent(
    run: &PhaseRun,
    processor: &Processor,
    planned: &Result<Rerun, RerunError>,
    missing: &[String],
    correlation: &str,
    attempt: u32,
    now: Timestamp,
) -> HealingEvent {
    let name = processor.name.as_str();
    let onset = onset_of(run, name, missing, now);
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
    // A refusal is the record's root cause, whatever the rows.
    let (root_cause, reason) = match planned {
        Err(RerunError::Refused(refusal)) => (
            refusal.root_cause().to_owned(),
            format!("{name}'s trigger is refused: {refusal}"),
        ),
        _ if missing.iter().any(|m| m == name) => (
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
    let spec = HealingEventSpec {
        healing_id: id.clone(),
        timestamp: MicroTime(now),
        healing_type: PHASE_RERUN.into(),
        trigger_reason: reason,
        action_taken: format!("Re-ran {name} (attempt {attempt}): {}", how(planned)),
        root_cause,
        correlation_id: Some(correlation.to_owned()),
        target: TargetRef::of(run),
        dry_run: false,
        threshold_time: None,
        onset_time: Some(MicroTime(onset)),
        detected_time: Some(MicroTime(now)),
        before_state: Some(
            json!({"phase": run.spec.phase, "date": date, "processor": name, "table": table, "missing_processors": missing}),
        ),
        details: Some(json!({"attempt": attempt})),
    };
    let mut event = HealingEvent::new(&id, spec);
    event.metadata.namespace = run.namespace();
    event
}

/// How a re-run is carried out, in a few words.
pub fn how(planned: &Result<Rerun, RerunError>) -> &'static str {
    match planned {
        Ok(rerun) => rerun.how(),
        Err(RerunError::Refused(_)) => "refused, nothing sent or created",
        Err(RerunError::Invalid(_)) => "could not be run",
    }
}

/// The HealingEvent recording that the run was refused for `refusals` (tables outside the
/// allowed projects): one per spec generation.
pub fn refusal_intent(
    run: &PhaseRun,
    refusals: &[Refusal],
    now: Timestamp,
) -> Option<HealingEvent> {
    let first = refusals.first()?;
    let message = refusal_message(refusals);
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
        trigger_reason: message,
        action_taken: "Refused the PhaseRun before counting its rows: nothing was queried".into(),
        root_cause: first.root_cause().to_owned(),
        correlation_id: Some(fixed_correlation(run, &["table_refused", &generation])),
        target: TargetRef::of(run),
        dry_run: false,
        threshold_time: None,
        onset_time: Some(MicroTime(now)),
        detected_time: Some(MicroTime(now)),
        before_state: Some(json!({"phase": run.spec.phase, "date": run.spec.date.to_string()})),
        details: None,
    };
    let mut event = HealingEvent::new(&id, spec);
    event.metadata.namespace = run.namespace();
    Some(event)
}

/// Every refusal, in one line.
pub fn refusal_message(refusals: &[Refusal]) -> String {
    refusals
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The status of a run refused for `message`: state Invalid, `TableRefused`; nothing else
/// changes.
pub fn refused_status(run: &PhaseRun, message: &str, now: Timestamp) -> PhaseRunStatus {
    let mut status = run.status.clone().unwrap_or_default();
    let desired = [
        Desired::new("TableRefused", true, "ProjectNotAllowed", message),
        Desired::new(
            "Healing",
            false,
            "TableRefused",
            "a table is outside the allowed projects",
        ),
    ];
    status.state = Some(PhaseState::Invalid);
    status.last_observed_time = Some(Time(now));
    status.observed_generation = run.meta().generation;
    status.conditions = conditions::merge(&status.conditions, &desired, run.meta().generation, now);
    status
}

/// The state of each processor's latest Job (by the attempt label) among `jobs`, the Jobs
/// labelled for the PhaseRun.
pub fn latest_jobs(jobs: &[Job]) -> BTreeMap<String, JobState> {
    let mut latest: BTreeMap<String, (i64, JobState)> = BTreeMap::new();
    for job in jobs {
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
    latest.into_iter().map(|(p, (_, s))| (p, s)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const NOW: &str = "2026-11-24T12:00:00Z";

    fn run_with(status: serde_json::Value) -> PhaseRun {
        serde_json::from_value(json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PhaseRun",
            "metadata": {"name": "p", "namespace": "pipeline", "uid": "u-1", "generation": 3},
            "spec": {"phase": "phase4", "date": "2026-11-24", "processors": [
                {"name": "a", "table": "d.a", "dateColumn": "game_date"},
                {"name": "b", "table": "d.b", "dateColumn": "game_date", "dependsOn": ["a"]}]},
            "status": status,
        }))
        .unwrap()
    }

    fn limits() -> Limits {
        Limits {
            max_attempts: 3,
            initial_backoff: SignedDuration::from_mins(5),
            max_backoff: SignedDuration::from_mins(30),
        }
    }

    fn observed(a: i64, b: Count) -> Observation {
        Observation {
            rows: BTreeMap::from([("a".into(), Count::Rows(a)), ("b".into(), b)]),
            ..Default::default()
        }
    }

    fn condition(status: &PhaseRunStatus, type_: &str) -> Option<(String, String)> {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
    }

    #[test]
    fn a_pass_survives_a_failed_observation_and_ends_when_settled() {
        let during =
            run_with(json!({"state": "ObservationFailed", "plan": [["a"]], "currentWave": 0}));
        assert_eq!(progress_of(&during).plan, [vec!["a".to_owned()]]);
        let after = run_with(json!({"state": "Complete", "plan": [["a"]]}));
        assert!(progress_of(&after).plan.is_empty());
    }

    #[test]
    fn each_step_has_its_state_conditions_and_wake() {
        let now = t(NOW);
        let run = run_with(
            json!({"plan": [["a"], ["b"]], "currentWave": 1, "checks": 2,
                                  "recordCounts": {"d.a": 1}}),
        );
        let obs = observed(10, Count::Rows(0));
        let missing = ["b".to_owned()];
        let reason = "no trigger".to_owned();
        let cases: Vec<(Step, PhaseState, Option<Timestamp>, &str, &str)> = vec![
            (
                Step::Invalid("cycle".into()),
                PhaseState::Invalid,
                None,
                "Healing",
                "InvalidSpec",
            ),
            (
                Step::ObservationFailed {
                    message: "boom".into(),
                    retry_at: now + SignedDuration::from_mins(1),
                },
                PhaseState::ObservationFailed,
                Some(now + SignedDuration::from_mins(1)),
                "ObservationFailed",
                "QueryFailed",
            ),
            (
                Step::NotRequired,
                PhaseState::NotRequired,
                None,
                "NotRequired",
                "NoGames",
            ),
            (
                Step::Complete,
                PhaseState::Complete,
                None,
                "Complete",
                "AllTablesFilled",
            ),
            (
                Step::NothingTriggerable {
                    reason: reason.clone(),
                },
                PhaseState::Skipped,
                Some(now + SignedDuration::from_mins(30)),
                "Healing",
                "NothingTriggerable",
            ),
            (
                Step::GaveUp { reason },
                PhaseState::GaveUp,
                None,
                "GaveUp",
                "AttemptsExhausted",
            ),
        ];
        for (step, state, wake, type_, reason) in cases {
            let (status, wake_at) = status_after(&run, &step, None, &obs, &missing, &limits(), now);
            assert_eq!(status.state, Some(state), "{step:?}");
            assert_eq!(wake_at, wake, "{step:?}");
            assert_eq!(
                condition(&status, type_).map(|c| c.1),
                Some(reason.to_owned()),
                "{step:?}"
            );
            // Settled states end the pass; its plan stays on show.
            let settled = state != PhaseState::ObservationFailed;
            assert_eq!(status.current_wave.is_none(), settled, "{step:?}");
            assert_eq!(status.plan.len(), 2, "{step:?}");
            assert_eq!(status.missing_processors, missing, "{step:?}");
            assert_eq!(status.observed_generation, Some(3), "{step:?}");
            assert_eq!(status.record_counts.get("d.b"), Some(&0), "{step:?}");
        }
        let failed = Step::ObservationFailed {
            message: "boom".into(),
            retry_at: now,
        };
        let (status, _) = status_after(&run, &failed, None, &obs, &missing, &limits(), now);
        assert_eq!(status.checks, 3, "each failure waits longer");
        let (status, wake) = status_after(
            &run,
            &Step::Wait { until: now },
            None,
            &obs,
            &missing,
            &limits(),
            now,
        );
        assert_eq!(
            (status.checks, status.state, wake),
            (3, Some(PhaseState::Healing), Some(now))
        );
        assert_eq!(status.current_wave, Some(1), "a wait keeps the pass");
    }

    #[test]
    fn a_table_missing_rows_keeps_the_instant_it_was_first_seen_missing() {
        let first = t("2026-11-24T10:00:00Z");
        let now = t("2026-11-24T10:30:00Z");
        let run = run_with(json!({"missingSince": {"a": first.to_string()}}));
        let since = |obs: &Observation| {
            let missing = super::super::phase::missing(&specs(&run.spec.processors), obs);
            let step = Step::Wait { until: now };
            let (status, _) = status_after(&run, &step, None, obs, &missing, &limits(), now);
            status.missing_since
        };
        let both = since(&observed(0, Count::Rows(0)));
        assert_eq!(both["a"], Time(first), "kept from the first sight");
        assert_eq!(both["b"], Time(now), "newly missing");
        let filled = since(&observed(5, Count::Rows(0)));
        assert!(!filled.contains_key("a"), "filled: its problem is over");
        let unknown = since(&observed(0, Count::Unknown("timeout".into())));
        assert_eq!(unknown.len(), 1, "an unknown count adds nothing");
        let run_b_known = run_with(json!({"missingSince": {"b": first.to_string()}}));
        let missing_a = ["a".to_owned()];
        assert_eq!(
            onset_of(&run_b_known, "b", &missing_a, now),
            now,
            "a first seen now"
        );
        assert_eq!(
            onset_of(&run, "b", &missing_a, now),
            first,
            "re-run for a: a's onset"
        );
        assert_eq!(onset_of(&run, "a", &missing_a, now), first);
    }

    #[test]
    fn a_triggered_wave_records_its_pass_and_a_refusal_in_its_condition() {
        let now = t(NOW);
        let run = run_with(json!({"checks": 4}));
        // A count that failed keeps the last known one.
        let obs = observed(0, Count::Unknown("down".into()));
        let step = Step::Trigger {
            processors: vec!["a".into()],
            plan: vec![vec!["a".into()], vec!["b".into()]],
            wave: 0,
            new_pass: true,
            blocked: BTreeMap::from([("b".into(), "waits for a".into())]),
        };
        let wave = WaveTriggered {
            correlation_id: "c-1".into(),
            attempts: BTreeMap::from([("a".into(), 1)]),
            refused: vec!["a: not allowed".into()],
        };
        let missing = ["a".to_owned()];
        let (status, wake) = status_after(&run, &step, Some(&wave), &obs, &missing, &limits(), now);
        assert_eq!(wake, Some(now + SignedDuration::from_mins(5)));
        assert_eq!(status.state, Some(PhaseState::Healing));
        assert_eq!((status.current_wave, status.checks), (Some(0), 0));
        assert_eq!(status.wave_triggered_at, Some(Time(now)));
        assert_eq!(status.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(status.attempts["a"], 1);
        assert_eq!(status.blocked["b"], "waits for a");
        assert_eq!(status.record_counts, BTreeMap::from([("d.a".into(), 0)]));
        assert_eq!(
            condition(&status, "TriggerRefused"),
            Some(("True".into(), "NotAllowed".into()))
        );
        assert_eq!(
            condition(&status, "Healing"),
            Some(("True".into(), "WaveTriggered".into()))
        );
        let allowed = WaveTriggered {
            refused: Vec::new(),
            ..wave
        };
        let (status, _) = status_after(&run, &step, Some(&allowed), &obs, &missing, &limits(), now);
        assert_eq!(
            condition(&status, "TriggerRefused"),
            Some(("False".into(), "TriggersAllowed".into()))
        );
    }

    #[test]
    fn a_pass_keeps_its_correlation_and_a_new_pass_gets_one_fixed_by_earlier_triggers() {
        let run = run_with(json!({"correlationId": "current"}));
        let mut progress = Progress::default();
        assert_eq!(wave_correlation(&run, &progress, false), "current");
        let first = wave_correlation(&run, &progress, true);
        assert_ne!(first, "current");
        assert_eq!(
            first,
            pass_correlation(&run, &progress),
            "fixed: a stale read starts the same pass"
        );
        progress.attempts.insert("a".into(), 1);
        assert_ne!(wave_correlation(&run, &progress, true), first);
        assert_ne!(skip_correlation(&run), first);
    }

    #[test]
    fn a_rerun_record_names_its_cause_and_a_refusal_comes_first() {
        let run = run_with(json!(null));
        let processor = &run.spec.processors[1];
        let now = t(NOW);
        let planned: Result<Rerun, RerunError> =
            Err(RerunError::Invalid("no trigger is configured".into()));
        let missing_b = ["b".to_owned()];
        let event = rerun_intent(&run, processor, &planned, &missing_b, "c-1", 2, now);
        assert_eq!(event.spec.root_cause, "missing_rows:d.b");
        assert_eq!(
            event.spec.action_taken,
            "Re-ran b (attempt 2): could not be run"
        );
        assert_eq!(event.metadata.namespace.as_deref(), Some("pipeline"));
        assert_eq!(event.spec.healing_type, PHASE_RERUN);
        let upstream = rerun_intent(&run, processor, &planned, &[], "c-1", 2, now);
        assert_eq!(upstream.spec.root_cause, "upstream_rerun:d.b");
        assert_eq!(
            upstream.name_any(),
            event.name_any(),
            "one id per trigger, whatever it records"
        );
        let again = rerun_intent(&run, processor, &planned, &missing_b, "c-1", 3, now);
        assert_ne!(again.name_any(), event.name_any());
        let refused: Result<Rerun, RerunError> =
            Err(RerunError::Refused(Refusal::TableNotAllowed {
                table: "other.d.b".into(),
                project: "other".into(),
            }));
        let event = rerun_intent(&run, processor, &refused, &missing_b, "c-1", 2, now);
        assert_eq!(event.spec.root_cause, "table_not_allowed");
        assert!(
            event
                .spec
                .action_taken
                .ends_with("refused, nothing sent or created")
        );
    }

    #[test]
    fn the_latest_job_per_processor_decides_its_state() {
        let job = |processor: &str, attempt: &str, status: serde_json::Value| -> Job {
            serde_json::from_value(json!({
                "metadata": {"name": format!("{processor}-{attempt}"), "labels": {
                    PROCESSOR_LABEL: processor, ATTEMPT_LABEL: attempt}},
                "status": status,
            }))
            .unwrap()
        };
        let failed = json!({"conditions": [{"type": "Failed", "status": "True"}]});
        let jobs = [
            job("a", "1", failed.clone()),
            job("a", "2", json!({"succeeded": 1})),
            job("b", "2", failed),
            job("b", "1", json!({"succeeded": 1})),
            job("c", "1", json!({})),
        ];
        let states = latest_jobs(&jobs);
        assert_eq!(states["a"], JobState::Succeeded);
        assert_eq!(states["b"], JobState::Failed, "attempt 2 is the latest");
        assert_eq!(states["c"], JobState::Running);
    }
}
