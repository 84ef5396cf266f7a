//! Whether an action did what it was for, and how long the problem lasted. An action that
//! was carried out is recorded `Verifying` until its target is seen healthy (then
//! `Succeeded`, with the instant it was seen) or is not in time (`Failed`, with a root cause
//! that says so). Every final status carries times that run from the problem's onset, so the
//! records say how long the pipeline was broken, not how fast the controller answered a
//! threshold. Pure: the reconcilers read the targets and write what this builds.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::ResourceExt;
use serde_json::json;

use super::phase::{Count, Observation, Step};
use crate::api::HealingEvent;
use crate::api::event::{HealingEventSpec, HealingEventStatus, Outcome, PHASE_RERUN};
use crate::api::phase::PhaseRun;

/// Seconds from `from` to `to`, never negative (clocks of two writers may disagree).
fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.duration_since(from).as_secs_f64().max(0.0)
}

/// How late the problem was noticed: from the instant it became detectable (the threshold
/// instant where the intent has one, else its onset) to its detection. None for a record
/// without those times (an external producer's, or one written before they existed).
pub fn time_to_detect_seconds(spec: &HealingEventSpec) -> Option<f64> {
    let detected = spec.detected_time.as_ref()?.0;
    let detectable = spec.threshold_time.as_ref().or(spec.onset_time.as_ref())?.0;
    Some(seconds(detectable, detected))
}

/// The final status of the action `spec` records, ended at `now` with `outcome` (for a
/// success, see [`healed`], which adds when the target was seen healthy).
pub fn finished(
    spec: &HealingEventSpec,
    outcome: Outcome,
    message: &str,
    after: Option<serde_json::Value>,
    now: Timestamp,
) -> HealingEventStatus {
    HealingEventStatus {
        outcome: Some(outcome),
        success: Some(outcome == Outcome::Succeeded),
        after_state: after,
        message: Some(message.to_owned()),
        finished_at: Some(Time(now)),
        heal_latency_seconds: spec.threshold_time.as_ref().map(|t| seconds(t.0, now)),
        time_to_detect_seconds: time_to_detect_seconds(spec),
        ..Default::default()
    }
}

/// Succeeded: the target was seen healthy at `seen`; time to heal runs from the onset.
pub fn healed(
    spec: &HealingEventSpec,
    message: &str,
    after: Option<serde_json::Value>,
    seen: Timestamp,
) -> HealingEventStatus {
    HealingEventStatus {
        healed_time: Some(MicroTime(seen)),
        time_to_heal_seconds: spec.onset_time.as_ref().map(|t| seconds(t.0, seen)),
        ..finished(spec, Outcome::Succeeded, message, after, seen)
    }
}

/// Failed although the action was carried out: the target was not seen healthy, for the
/// reason `root_cause` names, which the record is grouped by from now on.
pub fn ineffective(
    spec: &HealingEventSpec,
    root_cause: String,
    message: &str,
    after: Option<serde_json::Value>,
    now: Timestamp,
) -> HealingEventStatus {
    HealingEventStatus {
        root_cause: Some(root_cause),
        ..finished(spec, Outcome::Failed, message, after, now)
    }
}

/// Carried out and not yet seen healthy: not final, and due to be judged by `verify_by`.
pub fn verifying(
    message: &str,
    after: serde_json::Value,
    verify_by: Timestamp,
) -> HealingEventStatus {
    HealingEventStatus {
        outcome: Some(Outcome::Verifying),
        after_state: Some(after),
        message: Some(message.to_owned()),
        verify_by: Some(MicroTime(verify_by)),
        ..Default::default()
    }
}

/// Whether `event` waits to be verified.
pub fn is_verifying(event: &HealingEvent) -> bool {
    event.status.as_ref().and_then(|s| s.outcome) == Some(Outcome::Verifying)
}

/// The root cause of a re-run whose processor's table still lacks its rows.
pub fn rerun_ineffective(table: &str) -> String {
    format!("rerun_ineffective:{table}")
}

/// How long a triggered re-run has to show its rows: the wave waits up to the policy's
/// longest backoff before triggering again, and is looked at up to one longest backoff
/// later; the bound is both.
pub fn rerun_verify_within(max_backoff: SignedDuration) -> SignedDuration {
    max_backoff.saturating_mul(2)
}

/// The processor an event of `run`'s re-runs is for (its `before_state.processor`).
fn processor_of(event: &HealingEvent) -> Option<&str> {
    event.spec.before_state.as_ref()?.get("processor")?.as_str()
}

/// Whether `event` is a re-run of `run` (this object, not an earlier one of the same name).
pub fn is_rerun_of(event: &HealingEvent, run: &PhaseRun) -> bool {
    event.spec.healing_type == PHASE_RERUN
        && event.namespace() == run.namespace()
        && event.spec.target.name == run.name_any()
        && (event.spec.target.uid.is_none() || event.spec.target.uid == run.uid())
}

/// The outcomes of `run`'s re-runs still `verifying`, from this observation and the step it
/// led to, by healing id; a re-run not yet judged is left out.
/// - its table has `minRows` rows: Succeeded, seen healthy now;
/// - it is triggered again or given up on, or its `verifyBy` has passed, without them:
///   Failed, `rerun_ineffective:<table>`;
/// - the schedule has no rows for the date any more: Superseded (nothing is required);
/// - a count that is unknown (the query failed) judges nothing.
///
/// `after_state` holds the rows seen before the trigger and now.
pub fn reruns(
    run: &PhaseRun,
    verifying: &[&HealingEvent],
    observation: &Observation,
    step: &Step,
    now: Timestamp,
) -> BTreeMap<String, HealingEventStatus> {
    let triggered_again = |name: &str| match step {
        Step::Trigger { processors, .. } => processors.iter().any(|p| p == name),
        Step::GaveUp { .. } => true,
        _ => false,
    };
    let mut outcomes = BTreeMap::new();
    for event in verifying {
        let Some(name) = processor_of(event) else {
            continue;
        };
        let Some(processor) = run.spec.processors.iter().find(|p| p.name == name) else {
            continue;
        };
        let status = event.status.as_ref();
        let before = status
            .and_then(|s| s.after_state.as_ref())
            .and_then(|a| a.get("rows_before"))
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let table = processor.table.as_str();
        let after =
            |rows: i64| json!({"triggered": true, "rows_before": before, "rows_after": rows});
        let date = &run.spec.date;
        let outcome = match observation.rows.get(name) {
            _ if step == &Step::NotRequired => Some(finished(
                &event.spec,
                Outcome::Superseded,
                "the schedule has no rows for the date any more: nothing is required",
                None,
                now,
            )),
            Some(Count::Rows(rows)) if *rows >= i64::from(processor.min_rows) => Some(healed(
                &event.spec,
                &format!("{table} has {rows} rows for {date}"),
                Some(after(*rows)),
                now,
            )),
            Some(Count::Rows(rows)) => {
                let overdue = status
                    .and_then(|s| s.verify_by.as_ref())
                    .is_some_and(|by| now >= by.0);
                (overdue || triggered_again(name)).then(|| {
                    let message = format!(
                        "the re-run was carried out, but {table} has {rows} of its {} rows for {date}",
                        processor.min_rows
                    );
                    ineffective(
                        &event.spec,
                        rerun_ineffective(table),
                        &message,
                        Some(after(*rows)),
                        now,
                    )
                })
            }
            Some(Count::Unknown(_)) | None => None,
        };
        if let Some(outcome) = outcome {
            outcomes.insert(event.name_any(), outcome);
        }
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::phase_status::rerun_intent;
    use crate::decide::rerun::RerunError;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A PhaseRun of one processor `a` (table `d.a`, at least 10 rows), first seen missing
    /// its rows at 10:00.
    fn run() -> PhaseRun {
        serde_json::from_value(json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PhaseRun",
            "metadata": {"name": "p", "namespace": "pipeline", "uid": "u-1"},
            "spec": {"phase": "phase4", "date": "2026-11-24", "processors": [
                {"name": "a", "table": "d.a", "dateColumn": "game_date", "minRows": 10}]},
            "status": {"missingSince": {"a": "2026-11-24T10:00:00Z"}},
        }))
        .unwrap()
    }

    /// The re-run of `a` triggered at 10:01, Verifying until 10:31 with 0 rows before.
    fn triggered(run: &PhaseRun) -> HealingEvent {
        let processor = &run.spec.processors[0];
        let planned = Err(RerunError::Invalid("unused".into()));
        let missing = ["a".to_owned()];
        let mut event = rerun_intent(
            run,
            processor,
            &planned,
            &missing,
            "c",
            1,
            t("2026-11-24T10:01:00Z"),
        );
        event.status = Some(verifying(
            "triggered",
            json!({"triggered": true, "rows_before": 0}),
            t("2026-11-24T10:31:00Z"),
        ));
        event
    }

    fn rows(n: i64) -> Observation {
        Observation {
            rows: BTreeMap::from([("a".into(), Count::Rows(n))]),
            ..Default::default()
        }
    }

    fn wait() -> Step {
        Step::Wait {
            until: t("2026-11-24T10:10:00Z"),
        }
    }

    #[test]
    fn a_rerun_succeeds_once_its_table_has_its_rows_timed_from_the_first_sight_of_them_missing() {
        let run = run();
        let event = triggered(&run);
        assert_eq!(
            event.spec.onset_time,
            Some(MicroTime(t("2026-11-24T10:00:00Z")))
        );
        let now = t("2026-11-24T10:05:30Z");
        let judged = reruns(&run, &[&event], &rows(12), &wait(), now);
        let status = &judged[&event.name_any()];
        assert_eq!(status.outcome, Some(Outcome::Succeeded));
        assert_eq!(status.healed_time, Some(MicroTime(now)));
        assert_eq!(status.time_to_heal_seconds, Some(330.0));
        assert_eq!(status.time_to_detect_seconds, Some(60.0));
        assert_eq!(
            status.after_state,
            Some(json!({"triggered": true, "rows_before": 0, "rows_after": 12}))
        );
        assert_eq!(status.root_cause, None);
    }

    #[test]
    fn a_rerun_that_writes_nothing_fails_when_its_wave_gives_it_up_or_its_time_is_up() {
        let run = run();
        let event = triggered(&run);
        let early = t("2026-11-24T10:05:00Z");
        assert!(
            reruns(&run, &[&event], &rows(3), &wait(), early).is_empty(),
            "still within its wave's wait: not judged yet"
        );
        let again = Step::Trigger {
            processors: vec!["a".into()],
            plan: vec![vec!["a".into()]],
            wave: 0,
            new_pass: false,
            blocked: BTreeMap::new(),
        };
        let gave_up = Step::GaveUp {
            reason: "a still has no rows after 3 attempts".into(),
        };
        let late = t("2026-11-24T10:31:00Z");
        for (step, now) in [(again, early), (gave_up, early), (wait(), late)] {
            let judged = reruns(&run, &[&event], &rows(3), &step, now);
            let status = &judged[&event.name_any()];
            assert_eq!(status.outcome, Some(Outcome::Failed), "{step:?}");
            assert_eq!(status.success, Some(false));
            assert_eq!(status.root_cause.as_deref(), Some("rerun_ineffective:d.a"));
            assert_eq!(status.healed_time, None);
            assert_eq!(status.after_state.as_ref().unwrap()["rows_after"], 3);
            assert!(
                status
                    .message
                    .as_deref()
                    .unwrap()
                    .contains("3 of its 10 rows")
            );
        }
    }

    #[test]
    fn an_unknown_count_judges_nothing_and_a_date_without_games_supersedes() {
        let run = run();
        let event = triggered(&run);
        let late = t("2026-11-24T11:00:00Z");
        let unknown = Observation {
            rows: BTreeMap::from([("a".into(), Count::Unknown("timeout".into()))]),
            ..Default::default()
        };
        assert!(reruns(&run, &[&event], &unknown, &wait(), late).is_empty());
        let judged = reruns(&run, &[&event], &rows(0), &Step::NotRequired, late);
        assert_eq!(judged[&event.name_any()].outcome, Some(Outcome::Superseded));
    }

    #[test]
    fn only_this_runs_reruns_are_its_own() {
        let run = run();
        let event = triggered(&run);
        assert!(is_rerun_of(&event, &run));
        let mut successor = run.clone();
        successor.metadata.uid = Some("u-2".into());
        assert!(
            !is_rerun_of(&event, &successor),
            "a new object of the same name"
        );
        let mut elsewhere = run.clone();
        elsewhere.metadata.namespace = Some("other".into());
        assert!(!is_rerun_of(&event, &elsewhere));
    }

    #[test]
    fn time_to_detect_runs_from_the_threshold_where_there_is_one() {
        let mut event = triggered(&run());
        assert_eq!(time_to_detect_seconds(&event.spec), Some(60.0));
        event.spec.threshold_time = Some(MicroTime(t("2026-11-24T10:00:59.5Z")));
        assert_eq!(time_to_detect_seconds(&event.spec), Some(0.5));
        event.spec.detected_time = None;
        assert_eq!(time_to_detect_seconds(&event.spec), None);
    }
}
