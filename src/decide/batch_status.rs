//! What a PredictionBatch's status should say for a verdict: the summary `kubectl get pb`
//! shows and the conditions. Pure; the reconciler writes it.

use jiff::{SignedDuration, Timestamp};

use super::conditions::Desired;
use super::heal::HealRetry;
use super::stall::Verdict;
use crate::api::PredictionBatch;
use crate::api::batch::{BatchSource, BatchState};

/// Which heal completed the batch: recorded on the object (status source) or in the
/// document (Firestore source, mirrored into the report).
pub fn healed_by(batch: &PredictionBatch) -> Option<String> {
    let status = batch.status.as_ref()?;
    status.last_healing_event.clone().or_else(|| {
        status
            .report
            .as_ref()
            .and_then(|r| r.auto_completed_by.clone())
    })
}

/// The controller-owned part of a batch's status, before conditions are merged.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub state: BatchState,
    pub expected: Option<u64>,
    pub completed: Option<u64>,
    pub percent: Option<f64>,
    pub stall_at: Option<Timestamp>,
    pub conditions: Vec<Desired>,
}

const PROGRESSING: &str = "Progressing";
const STALLED: &str = "Stalled";
const COMPLETE: &str = "Complete";
const AUTO_COMPLETED: &str = "AutoCompleted";
/// True while a stall's heal waits to try again after failed attempts.
pub const HEAL_FAILED: &str = "HealFailed";

/// The HealFailed condition: true with the failures and the next attempt's time while
/// `retry` waits; false once nothing waits, when the batch shows it (`shown`); None for a
/// batch that never had a failed heal.
pub fn heal_failed(retry: Option<&HealRetry>, shown: bool) -> Option<Desired> {
    match retry {
        Some(r) => Some(Desired::new(
            HEAL_FAILED,
            true,
            "ActionFailed",
            format!(
                "{} attempt(s) failed, the last: {}; the next attempt is at {}",
                r.failures, r.last_error, r.due
            ),
        )),
        None if shown => Some(Desired::new(HEAL_FAILED, false, "NoRetryWaiting", "")),
        None => None,
    }
}

/// When a batch in `state` finished: kept from an earlier reconcile, else now; None while
/// it has not finished.
pub fn finished_at(
    state: BatchState,
    previous: Option<Timestamp>,
    now: Timestamp,
) -> Option<Timestamp> {
    match state {
        BatchState::Complete | BatchState::AutoCompleted | BatchState::Expired => {
            Some(previous.unwrap_or(now))
        }
        BatchState::Pending
        | BatchState::Progressing
        | BatchState::Stalled
        | BatchState::Invalid => None,
    }
}

/// How a batch finished, as its outcome record says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finished {
    /// Its workers finished every player.
    Completed,
    /// A heal of ours completed it.
    AutoCompleted,
    /// It grew older than the policy's maxAge unfinished.
    Expired,
    /// It was deleted while its source made no sense.
    Invalid,
}

impl Finished {
    pub fn as_str(self) -> &'static str {
        match self {
            Finished::Completed => "completed",
            Finished::AutoCompleted => "auto_completed",
            Finished::Expired => "expired",
            Finished::Invalid => "invalid",
        }
    }
}

/// How a batch in `state` finished; None while it has not. A batch deleted (`deleting`)
/// while invalid ends so; one deleted while still running did not finish and has no record.
pub fn finished_how(state: Option<BatchState>, deleting: bool) -> Option<Finished> {
    match state? {
        BatchState::Complete => Some(Finished::Completed),
        BatchState::AutoCompleted => Some(Finished::AutoCompleted),
        BatchState::Expired => Some(Finished::Expired),
        BatchState::Invalid if deleting => Some(Finished::Invalid),
        BatchState::Invalid
        | BatchState::Pending
        | BatchState::Progressing
        | BatchState::Stalled => None,
    }
}

/// When a finished batch's object is deleted: mirrored (Firestore) batches only, one
/// retention period after they finished. Batches that people or workers created stay theirs.
pub fn cleanup_at(
    source: BatchSource,
    finished_at: Option<Timestamp>,
    retention: SignedDuration,
) -> Option<Timestamp> {
    match source {
        BatchSource::Firestore => finished_at.map(|f| f + retention),
        BatchSource::Status => None,
    }
}

/// A batch whose source has not reported yet.
pub fn awaiting_report(source: BatchSource) -> Summary {
    let message = match source {
        BatchSource::Status => "no progress reported by the workers yet (status.report)",
        BatchSource::Firestore => "no observation of the Firestore document yet",
    };
    Summary {
        state: BatchState::Pending,
        expected: None,
        completed: None,
        percent: None,
        stall_at: None,
        conditions: vec![Desired::new(PROGRESSING, false, "AwaitingReport", message)],
    }
}

/// `healed`: the batch was completed by the controller (it carries the healing id).
pub fn summarize(verdict: &Verdict, healed: Option<&str>) -> Summary {
    let progress = verdict.progress();
    let round = |p: f64| (p * 10.0).round() / 10.0;
    let mut summary = Summary {
        state: BatchState::Pending,
        expected: progress.map(|p| p.expected),
        completed: progress.map(|p| p.completed),
        percent: progress.map(|p| round(p.percent)),
        stall_at: None,
        conditions: Vec::new(),
    };
    match verdict {
        Verdict::Complete { .. } => {
            let (state, reason, message) = match healed {
                Some(id) => (
                    BatchState::AutoCompleted,
                    "StallHealed",
                    format!("completed by the controller; see HealingEvent {id}"),
                ),
                None => (
                    BatchState::Complete,
                    "AllPlayersDone",
                    "every expected player finished".to_owned(),
                ),
            };
            summary.state = state;
            summary.conditions = vec![
                Desired::new(PROGRESSING, false, reason, message.clone()),
                Desired::new(STALLED, false, reason, ""),
                Desired::new(COMPLETE, true, reason, message.clone()),
                Desired::new(
                    AUTO_COMPLETED,
                    healed.is_some(),
                    reason,
                    if healed.is_some() {
                        message
                    } else {
                        String::new()
                    },
                ),
            ];
        }
        Verdict::Progressing {
            progress, stall_at, ..
        } => {
            summary.state = BatchState::Progressing;
            summary.stall_at = *stall_at;
            let message = match stall_at {
                Some(at) => format!(
                    "{:.1}% done; stalled at {at} without progress",
                    progress.percent
                ),
                None => format!(
                    "{:.1}% done; below the minimum completion for auto-completion",
                    progress.percent
                ),
            };
            summary.conditions = vec![
                Desired::new(PROGRESSING, true, "PlayersFinishing", message),
                Desired::new(STALLED, false, "PlayersFinishing", ""),
                Desired::new(COMPLETE, false, "PlayersOutstanding", ""),
            ];
        }
        Verdict::StuckBelowMinimum {
            progress, since, ..
        } => {
            summary.state = BatchState::Stalled;
            let message = format!(
                "no progress since {since} at {:.1}%, below the minimum completion: not auto-completed",
                progress.percent
            );
            summary.conditions = vec![
                Desired::new(PROGRESSING, false, "NoProgress", message.clone()),
                Desired::new(STALLED, true, "BelowMinimumCompletion", message),
                Desired::new(COMPLETE, false, "PlayersOutstanding", ""),
            ];
        }
        Verdict::Stalled(stall) => {
            summary.state = BatchState::Stalled;
            summary.stall_at = Some(stall.threshold_at);
            summary.conditions = vec![
                Desired::new(
                    PROGRESSING,
                    false,
                    "NoProgress",
                    stall.trigger_reason.clone(),
                ),
                Desired::new(STALLED, true, "NoProgress", stall.trigger_reason.clone()),
                Desired::new(COMPLETE, false, "PlayersOutstanding", ""),
            ];
        }
        Verdict::Expired { age } => {
            summary.state = BatchState::Expired;
            let message = format!(
                "incomplete after {}h: older than the policy's maximum age, left alone",
                age.as_secs() / 3600
            );
            summary.conditions = vec![
                Desired::new(PROGRESSING, false, "Expired", message.clone()),
                Desired::new(STALLED, false, "Expired", message),
            ];
        }
        Verdict::Invalid { reason } => {
            summary.state = BatchState::Invalid;
            summary.conditions = vec![Desired::new(
                PROGRESSING,
                false,
                "InvalidSource",
                reason.clone(),
            )];
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::HealingPolicySpec;
    use crate::decide::stall::{BatchObservation, StallPolicy, decide};

    fn verdict(done: u64, minutes_since_progress: i64) -> Verdict {
        let last: Timestamp = "2026-11-24T20:00:00Z".parse().unwrap();
        let obs = BatchObservation {
            expected: Some(450),
            completed: done,
            created_at: Some(last - SignedDuration::from_hours(1)),
            last_progress: Some(last),
            ..Default::default()
        };
        let policy = StallPolicy::from(&HealingPolicySpec::default());
        decide(
            &obs,
            &policy,
            last + SignedDuration::from_mins(minutes_since_progress),
        )
    }

    fn condition<'a>(s: &'a Summary, type_: &str) -> &'a Desired {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("no {type_}"))
    }

    #[test]
    fn progressing_shows_when_it_will_stall() {
        let s = summarize(&verdict(414, 5), None);
        assert_eq!(s.state, BatchState::Progressing);
        assert_eq!(s.percent, Some(92.0));
        assert_eq!(s.stall_at, Some("2026-11-24T20:15:00Z".parse().unwrap()));
        assert!(condition(&s, PROGRESSING).status);
        assert!(!condition(&s, STALLED).status);
    }

    #[test]
    fn stalled_carries_the_reason_in_its_condition() {
        let s = summarize(&verdict(414, 16), None);
        assert_eq!(s.state, BatchState::Stalled);
        assert!(condition(&s, STALLED).status);
        assert!(condition(&s, STALLED).message.contains("92.0%"));
    }

    #[test]
    fn healed_is_auto_completed_and_names_the_event() {
        let s = summarize(&verdict(450, 0), Some("batch-cleanup-x-1"));
        assert_eq!(s.state, BatchState::AutoCompleted);
        assert!(condition(&s, AUTO_COMPLETED).status);
        assert!(
            condition(&s, COMPLETE)
                .message
                .contains("batch-cleanup-x-1")
        );
        let s = summarize(&verdict(450, 0), None);
        assert_eq!(s.state, BatchState::Complete);
        assert!(!condition(&s, AUTO_COMPLETED).status);
    }

    #[test]
    fn stuck_below_minimum_is_shown_as_stalled_but_says_why_not_healed() {
        let s = summarize(&verdict(300, 30), None);
        assert_eq!(s.state, BatchState::Stalled);
        assert_eq!(condition(&s, STALLED).reason, "BelowMinimumCompletion");
    }

    #[test]
    fn finished_batches_keep_their_finish_time_and_only_mirrors_are_cleaned_up() {
        let t0: Timestamp = "2026-11-24T20:00:00Z".parse().unwrap();
        let later = t0 + SignedDuration::from_hours(1);
        assert_eq!(finished_at(BatchState::AutoCompleted, None, t0), Some(t0));
        assert_eq!(finished_at(BatchState::Complete, Some(t0), later), Some(t0));
        assert_eq!(finished_at(BatchState::Expired, None, later), Some(later));
        for live in [
            BatchState::Pending,
            BatchState::Progressing,
            BatchState::Stalled,
            BatchState::Invalid,
        ] {
            assert_eq!(finished_at(live, Some(t0), later), None, "{live:?}");
        }
        let retention = SignedDuration::from_hours(720);
        assert_eq!(
            cleanup_at(BatchSource::Firestore, Some(t0), retention),
            Some(t0 + retention)
        );
        assert_eq!(cleanup_at(BatchSource::Firestore, None, retention), None);
        assert_eq!(cleanup_at(BatchSource::Status, Some(t0), retention), None);
    }

    #[test]
    fn invalid_and_awaiting_have_no_numbers() {
        let s = summarize(
            &Verdict::Invalid {
                reason: "expected_players is 0".into(),
            },
            None,
        );
        assert_eq!(s.state, BatchState::Invalid);
        assert_eq!(s.percent, None);
        assert_eq!(condition(&s, PROGRESSING).message, "expected_players is 0");
        let s = awaiting_report(BatchSource::Firestore);
        assert_eq!(s.state, BatchState::Pending);
        assert_eq!(condition(&s, PROGRESSING).reason, "AwaitingReport");
    }

    #[test]
    fn heal_failed_says_when_the_next_attempt_is_and_clears_once_shown() {
        let retry = HealRetry {
            failures: 2,
            last_error: "completing the batch failed: unavailable".into(),
            due: "2026-11-24T10:21:00Z".parse().unwrap(),
        };
        let shown = heal_failed(Some(&retry), false).unwrap();
        assert!(shown.status);
        assert_eq!(shown.type_, HEAL_FAILED);
        assert!(
            shown.message.contains("2 attempt(s) failed"),
            "{}",
            shown.message
        );
        assert!(
            shown.message.contains("2026-11-24T10:21:00Z"),
            "{}",
            shown.message
        );
        let cleared = heal_failed(None, true).unwrap();
        assert!(!cleared.status);
        assert_eq!(heal_failed(None, false), None, "never failed: no condition");
    }
}
