//! Is a prediction batch progressing, stalled, complete or expired?
//!
//! The original checked every 15 minutes whether `updated_at` was more than 15 minutes old at
//! 90 % or more. Here the verdict also says *when* a progressing batch will cross the
//! threshold if nothing changes, so the reconciler wakes exactly then instead of polling.
//! Thresholds are inclusive: a batch at exactly 90 % whose last progress was exactly 15 minutes
//! ago is stalled, and one exactly 24 hours old is expired.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use crate::api::HealingPolicySpec;
use crate::api::schema::{is_dns_subdomain, is_snake_case};

/// Clocks disagree a little; a source timestamp this far ahead of ours is still believed.
const CLOCK_SKEW_TOLERANCE: SignedDuration = SignedDuration::from_secs(5 * 60);

/// What the controller knows of a batch, from Firestore or from the workers' report.
// Serialised into a heal's record (see [`RecordedDecision`]); a record missing a field reads
// as the default.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BatchObservation {
    /// Players the batch must cover (`expected_players`); signed because sources can be wrong.
    pub expected: Option<i64>,
    /// Players finished with predictions.
    pub completed: u64,
    /// Players finished without predictions, by reason.
    pub skipped: BTreeMap<String, u64>,
    /// Outstanding players by their last failure reason.
    pub failing: BTreeMap<String, u64>,
    /// When the batch was created at its source.
    pub created_at: Option<Timestamp>,
    /// When a player last finished (or the source last changed).
    pub last_progress: Option<Timestamp>,
    /// The source already marks the batch complete (`is_complete`).
    pub marked_complete: bool,
}

impl BatchObservation {
    /// Players skipped for a reason `policy` does not count as permanent, by reason: finished
    /// at their source without predictions, yet outstanding here.
    pub fn outstanding_skips<'a>(
        &'a self,
        policy: &'a StallPolicy,
    ) -> impl Iterator<Item = (&'a str, u64)> + 'a {
        self.skipped
            .iter()
            .filter(|(reason, n)| **n > 0 && !policy.permanent_skip_reasons.contains(*reason))
            .map(|(reason, n)| (reason.as_str(), *n))
    }
}

/// The thresholds this decision needs, taken from a HealingPolicy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StallPolicy {
    pub stall_after: SignedDuration,
    /// A batch without progress this long (at or above the minimum) is watched as paused.
    pub watch_after: SignedDuration,
    pub min_completion_percent: f64,
    pub max_age: SignedDuration,
    pub permanent_skip_reasons: BTreeSet<String>,
}

impl From<&HealingPolicySpec> for StallPolicy {
    fn from(p: &HealingPolicySpec) -> Self {
        let stall_after = p.stall_after.as_span();
        Self {
            stall_after,
            // Half by default, and never past the stall (where a pause is healed instead).
            watch_after: p
                .watch_after
                .as_ref()
                .map_or(stall_after / 2, |w| w.as_span())
                .min(stall_after),
            min_completion_percent: p.min_completion_percent,
            max_age: p.max_age.as_span(),
            permanent_skip_reasons: p.permanent_skip_reasons.iter().cloned().collect(),
        }
    }
}

/// A stall decision as a heal records it (`details.decision` of a `batch_cleanup` event): what
/// was observed, the thresholds, and when. `analyze --propose` replays it through [`decide`]
/// with a changed policy, so a proposal's effect is this code's, not a copy's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecordedDecision {
    /// The HealingPolicy the thresholds came from; None: the built-in defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_name: Option<String>,
    pub policy: StallPolicy,
    pub observation: BatchObservation,
    pub at: Timestamp,
}

impl RecordedDecision {
    /// Whether a decision read back from a record (which anyone who can write the events
    /// could have forged) is one this controller could have made: instants between 2000 and
    /// 2200, durations positive and at most a century, a percentage, at most 64 snake-case
    /// skip reasons, a Kubernetes name. Only such a decision is replayed (no arithmetic
    /// overflows) or carried into a proposed policy.
    pub fn plausible(&self) -> bool {
        let earliest = Timestamp::constant(946_684_800, 0); // 2000-01-01
        let latest = Timestamp::constant(7_258_118_400, 0); // 2200-01-01
        let instant = |t: Timestamp| (earliest..latest).contains(&t);
        let century = SignedDuration::from_hours(
            i64::try_from(crate::api::schema::MAX_DURATION_HOURS).unwrap_or(i64::MAX),
        );
        let duration = |d: SignedDuration| d > SignedDuration::ZERO && d <= century;
        let p = &self.policy;
        let o = &self.observation;
        instant(self.at)
            && o.created_at.is_none_or(instant)
            && o.last_progress.is_none_or(instant)
            && duration(p.stall_after)
            && duration(p.watch_after)
            && duration(p.max_age)
            && (0.0..=100.0).contains(&p.min_completion_percent)
            && p.permanent_skip_reasons.len() <= 64
            && p.permanent_skip_reasons.iter().all(|r| is_snake_case(r))
            && self.policy_name.as_deref().is_none_or(is_dns_subdomain)
    }

    /// The verdict under the recorded policy: the reconciler's decision.
    pub fn verdict(&self) -> Verdict {
        decide(&self.observation, &self.policy, self.at)
    }

    /// The verdict the same observation gets under `policy` at the same instant.
    pub fn replay(&self, policy: &StallPolicy) -> Verdict {
        decide(&self.observation, policy, self.at)
    }
}

/// Counts derived from an observation under a policy.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    pub expected: u64,
    /// Finished with predictions, plus skipped for a permanent reason.
    pub completed: u64,
    pub percent: f64,
    pub last_progress: Timestamp,
}

/// The verdict on a batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Verdict {
    /// Every expected player is done (or the source says so).
    Complete { progress: Option<Progress> },
    /// Still moving. `stall_at`: when it becomes stalled if nothing changes (None below the
    /// minimum completion, where a stall is not healed). `expires_at`: when it ages out.
    Progressing {
        progress: Progress,
        stall_at: Option<Timestamp>,
        expires_at: Timestamp,
    },
    /// No progress for the stall period at or above the minimum completion: heal it.
    Stalled(Stall),
    /// No progress for the stall period but below the minimum completion: left alone, shown.
    StuckBelowMinimum {
        progress: Progress,
        since: Timestamp,
        expires_at: Timestamp,
    },
    /// Older than the maximum age and not complete: left alone.
    Expired { age: SignedDuration },
    /// The observation makes no sense; the reason is for a condition message.
    Invalid { reason: String },
}

/// A stall to heal.
#[derive(Clone, Debug, PartialEq)]
pub struct Stall {
    pub progress: Progress,
    /// The instant the threshold was crossed: `last_progress + stall_after`.
    pub threshold_at: Timestamp,
    pub stalled_for: SignedDuration,
    /// Stable key for grouping: the most common reason of the outstanding players (their last
    /// failure, or a skip the policy does not count as permanent), or `no_progress` when they
    /// reported none.
    pub root_cause: String,
    /// The same in words, with the numbers.
    pub trigger_reason: String,
    /// Outstanding players not accounted for by a failure or skip reason.
    pub silent_players: u64,
}

impl Verdict {
    /// The counts the verdict was reached on; None for an expired or invalid batch.
    pub fn progress(&self) -> Option<&Progress> {
        match self {
            Verdict::Complete { progress } => progress.as_ref(),
            Verdict::Progressing { progress, .. } | Verdict::StuckBelowMinimum { progress, .. } => {
                Some(progress)
            }
            Verdict::Stalled(s) => Some(&s.progress),
            Verdict::Expired { .. } | Verdict::Invalid { .. } => None,
        }
    }

    /// When the verdict may change with no new observation: the reconciler requeues for
    /// exactly this instant. None: only a change at the source can change it.
    pub fn next_check(&self) -> Option<Timestamp> {
        match self {
            Verdict::Progressing {
                stall_at,
                expires_at,
                ..
            } => Some(stall_at.map_or(*expires_at, |s| s.min(*expires_at))),
            Verdict::StuckBelowMinimum { expires_at, .. } => Some(*expires_at),
            Verdict::Complete { .. }
            | Verdict::Stalled(_)
            | Verdict::Expired { .. }
            | Verdict::Invalid { .. } => None,
        }
    }
}

/// Decides what a batch is, from what was observed, the policy, and the time now.
pub fn decide(obs: &BatchObservation, policy: &StallPolicy, now: Timestamp) -> Verdict {
    let invalid = |reason: String| Verdict::Invalid { reason };
    let expected = match obs.expected {
        None => return invalid("expected_players is missing".into()),
        Some(e) if e <= 0 => {
            return invalid(format!("expected_players is {e}; it must be at least 1"));
        }
        Some(e) => e.unsigned_abs(),
    };
    let permanently_skipped: u64 = obs
        .skipped
        .iter()
        .filter(|(reason, _)| policy.permanent_skip_reasons.contains(*reason))
        .map(|(_, n)| n)
        .fold(0u64, |a, n| a.saturating_add(*n));
    let completed = obs.completed.saturating_add(permanently_skipped);
    let percent = (completed as f64 * 100.0 / expected as f64).min(100.0);

    for (name, ts) in [
        ("created_at", obs.created_at),
        ("last progress time", obs.last_progress),
    ] {
        if let Some(ts) = ts
            && ts > now + CLOCK_SKEW_TOLERANCE
        {
            return invalid(format!("{name} {ts} is in the future"));
        }
    }
    let Some(last_progress) = obs.last_progress.or(obs.created_at) else {
        return invalid("the batch has neither a creation nor a last progress time".into());
    };
    let progress = Progress {
        expected,
        completed,
        percent,
        last_progress,
    };

    if obs.marked_complete || completed >= expected {
        return Verdict::Complete {
            progress: Some(progress),
        };
    }

    let created_at = obs.created_at.unwrap_or(last_progress);
    let expires_at = created_at + policy.max_age;
    if now >= expires_at {
        return Verdict::Expired {
            age: now.duration_since(created_at),
        };
    }

    let threshold_at = last_progress + policy.stall_after;
    let eligible = percent >= policy.min_completion_percent;
    if now < threshold_at {
        let stall_at = eligible.then_some(threshold_at);
        return Verdict::Progressing {
            progress,
            stall_at,
            expires_at,
        };
    }
    if !eligible {
        return Verdict::StuckBelowMinimum {
            progress,
            since: threshold_at,
            expires_at,
        };
    }

    let stalled_for = now.duration_since(last_progress);
    let outstanding = expected - completed;
    // A player skipped for a reason the policy does not count is as outstanding as a failing
    // one, and its reason as much a cause (the policy may be what lacks it).
    let mut by_reason = obs.failing.clone();
    for (reason, n) in obs.outstanding_skips(policy) {
        let count = by_reason.entry(reason.to_owned()).or_default();
        *count = count.saturating_add(n);
    }
    let reported: u64 = by_reason.values().fold(0u64, |a, n| a.saturating_add(*n));
    let silent_players = outstanding.saturating_sub(reported);
    Verdict::Stalled(Stall {
        root_cause: root_cause(&by_reason),
        trigger_reason: trigger_reason(&progress, stalled_for, &by_reason, silent_players),
        progress,
        threshold_at,
        stalled_for,
        silent_players,
    })
}

/// The most common failure reason (ties: alphabetical, so the key is deterministic).
fn root_cause(failing: &BTreeMap<String, u64>) -> String {
    failing
        .iter()
        .filter(|(_, n)| **n > 0)
        // max_by_key keeps the last maximum; iterate in reverse so ties go to the first name.
        .rev()
        .max_by_key(|(_, n)| **n)
        .map(|(reason, _)| sanitize_key(reason))
        .unwrap_or_else(|| "no_progress".to_owned())
}

/// A reason as reported may be anything; a root-cause key is lower snake case.
fn sanitize_key(reason: &str) -> String {
    let key: String = reason
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    match key.chars().next() {
        Some(c) if c.is_ascii_lowercase() => key,
        _ => format!("r_{}", key.chars().take(61).collect::<String>()),
    }
}

/// Reasons a trigger reason names, and how much of each: the workers choose them, and the
/// event takes at most 2048 characters, so a long or numerous report must not block the
/// record of its heal.
const REASONS_NAMED: usize = 10;
const REASON_CHARS: usize = 64;

fn trigger_reason(
    p: &Progress,
    stalled_for: SignedDuration,
    failing: &BTreeMap<String, u64>,
    silent: u64,
) -> String {
    let minutes = stalled_for.as_secs() / 60;
    let reported: Vec<(&String, &u64)> = failing.iter().filter(|(_, n)| **n > 0).collect();
    let mut outstanding: Vec<String> = reported
        .iter()
        .take(REASONS_NAMED)
        .map(|(reason, n)| {
            let shown: String = reason
                .chars()
                .filter(|c| !c.is_control())
                .take(REASON_CHARS)
                .collect();
            format!("{n} {shown}")
        })
        .collect();
    if reported.len() > REASONS_NAMED {
        outstanding.push(format!("{} more reasons", reported.len() - REASONS_NAMED));
    }
    if silent > 0 {
        outstanding.push(format!("{silent} without a reported reason"));
    }
    format!(
        "Stalled at {:.1}% ({}/{}) for {} minutes; outstanding: {}",
        p.percent,
        p.completed,
        p.expected,
        minutes,
        outstanding.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::ORIGINAL_PERMANENT_SKIP_REASONS;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn mins(m: i64) -> SignedDuration {
        SignedDuration::from_mins(m)
    }
    fn policy() -> StallPolicy {
        StallPolicy::from(&HealingPolicySpec::default())
    }
    const CREATED: &str = "2026-11-24T18:00:00Z";
    const LAST: &str = "2026-11-24T20:00:00Z";

    /// 450 expected, `done` completed, created at CREATED, last progress at LAST.
    fn batch(done: u64) -> BatchObservation {
        BatchObservation {
            expected: Some(450),
            completed: done,
            created_at: Some(t(CREATED)),
            last_progress: Some(t(LAST)),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_the_originals() {
        let p = policy();
        assert_eq!(p.stall_after, mins(15));
        assert_eq!(p.min_completion_percent, 90.0);
        assert_eq!(p.max_age, SignedDuration::from_hours(24));
    }

    #[test]
    fn exactly_ninety_percent_and_exactly_fifteen_minutes_is_stalled() {
        // 405/450 = 90.0 %
        let v = decide(&batch(405), &policy(), t(LAST) + mins(15));
        let Verdict::Stalled(s) = v else {
            panic!("{v:?}")
        };
        assert_eq!(s.progress.percent, 90.0);
        assert_eq!(s.threshold_at, t(LAST) + mins(15));
        assert_eq!(s.stalled_for, mins(15));
    }

    #[test]
    fn one_second_before_the_threshold_it_is_progressing_and_says_when() {
        let now = t(LAST) + mins(15) - SignedDuration::from_secs(1);
        let v = decide(&batch(405), &policy(), now);
        assert_eq!(v.next_check(), Some(t(LAST) + mins(15)));
        assert!(
            matches!(
                v,
                Verdict::Progressing {
                    stall_at: Some(_),
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn just_below_ninety_percent_is_stuck_not_stalled() {
        // 404/450 = 89.8 %
        let v = decide(&batch(404), &policy(), t(LAST) + mins(40));
        assert!(
            matches!(v, Verdict::StuckBelowMinimum { since, .. } if since == t(LAST) + mins(15)),
            "{v:?}"
        );
        // It is only re-checked when it would expire.
        assert_eq!(
            v.next_check(),
            Some(t(CREATED) + SignedDuration::from_hours(24))
        );
        // While below the minimum and still moving, no stall instant is scheduled.
        let v = decide(&batch(404), &policy(), t(LAST) + mins(1));
        assert!(
            matches!(v, Verdict::Progressing { stall_at: None, .. }),
            "{v:?}"
        );
        assert_eq!(
            v.next_check(),
            Some(t(CREATED) + SignedDuration::from_hours(24))
        );
    }

    #[test]
    fn exactly_twenty_four_hours_old_is_expired() {
        let created = t(CREATED);
        let mut b = batch(420);
        b.last_progress = Some(created + SignedDuration::from_hours(23) + mins(59));
        let v = decide(&b, &policy(), created + SignedDuration::from_hours(24));
        assert_eq!(
            v,
            Verdict::Expired {
                age: SignedDuration::from_hours(24)
            }
        );
        let v = decide(
            &b,
            &policy(),
            created + SignedDuration::from_hours(24) - SignedDuration::from_secs(1),
        );
        assert!(matches!(v, Verdict::Progressing { .. }), "{v:?}");
    }

    #[test]
    fn a_complete_batch_is_complete_even_when_old() {
        let v = decide(
            &batch(450),
            &policy(),
            t(CREATED) + SignedDuration::from_hours(48),
        );
        assert!(matches!(v, Verdict::Complete { .. }), "{v:?}");
        let mut marked = batch(10);
        marked.marked_complete = true;
        assert!(matches!(
            decide(&marked, &policy(), t(LAST)),
            Verdict::Complete { .. }
        ));
    }

    #[test]
    fn more_completed_than_expected_is_complete_at_one_hundred_percent() {
        let v = decide(&batch(470), &policy(), t(LAST));
        let Verdict::Complete { progress: Some(p) } = v else {
            panic!("{v:?}")
        };
        assert_eq!(p.percent, 100.0);
    }

    #[test]
    fn zero_negative_or_missing_expectations_are_invalid() {
        for expected in [Some(0), Some(-3), None] {
            let mut b = batch(0);
            b.expected = expected;
            let v = decide(&b, &policy(), t(LAST));
            assert!(
                matches!(&v, Verdict::Invalid { reason } if reason.contains("expected_players")),
                "{v:?}"
            );
            assert_eq!(v.next_check(), None);
        }
    }

    #[test]
    fn missing_last_progress_falls_back_to_creation() {
        let mut b = batch(420);
        b.last_progress = None;
        let v = decide(&b, &policy(), t(CREATED) + mins(15));
        assert!(
            matches!(&v, Verdict::Stalled(s) if s.threshold_at == t(CREATED) + mins(15)),
            "{v:?}"
        );
    }

    #[test]
    fn missing_creation_uses_last_progress_for_age() {
        let mut b = batch(420);
        b.created_at = None;
        let v = decide(&b, &policy(), t(LAST) + SignedDuration::from_hours(24));
        assert!(matches!(v, Verdict::Expired { .. }), "{v:?}");
    }

    #[test]
    fn no_timestamps_at_all_is_invalid() {
        let mut b = batch(420);
        b.created_at = None;
        b.last_progress = None;
        assert!(matches!(
            decide(&b, &policy(), t(LAST)),
            Verdict::Invalid { .. }
        ));
    }

    #[test]
    fn future_timestamps_beyond_clock_skew_are_invalid() {
        let now = t(LAST);
        let mut b = batch(420);
        b.last_progress = Some(now + mins(6));
        let v = decide(&b, &policy(), now);
        assert!(
            matches!(&v, Verdict::Invalid { reason } if reason.contains("future")),
            "{v:?}"
        );
        // A little skew is believed: the stall is simply further away.
        b.last_progress = Some(now + mins(2));
        let v = decide(&b, &policy(), now);
        assert_eq!(v.next_check(), Some(now + mins(17)));
        // A creation time in the future is as wrong.
        let mut b = batch(420);
        b.created_at = Some(now + SignedDuration::from_hours(1));
        assert!(matches!(
            decide(&b, &policy(), now),
            Verdict::Invalid { .. }
        ));
    }

    #[test]
    fn every_permanent_skip_reason_counts_as_completed() {
        for reason in ORIGINAL_PERMANENT_SKIP_REASONS {
            let mut b = batch(400);
            b.skipped.insert(reason.to_owned(), 10);
            let v = decide(&b, &policy(), t(LAST) + mins(15));
            let Verdict::Stalled(s) = &v else {
                panic!("{reason}: {v:?}")
            };
            assert_eq!(s.progress.completed, 410, "{reason}");
        }
    }

    #[test]
    fn transient_and_unknown_reasons_do_not_count() {
        for reason in [
            "feature_store_timeout",
            "model_load_error",
            "bigquery_timeout",
            "rate_limited",
            "circuit_breaker_open",
            "something_new",
        ] {
            let mut b = batch(400);
            b.skipped.insert(reason.to_owned(), 10);
            let v = decide(&b, &policy(), t(LAST) + mins(15));
            // 400/450 = 88.9 %: below the minimum without the skips.
            assert!(
                matches!(v, Verdict::StuckBelowMinimum { .. }),
                "{reason}: {v:?}"
            );
        }
    }

    #[test]
    fn a_policy_without_a_reason_stops_counting_it() {
        let mut p = policy();
        p.permanent_skip_reasons.remove("player_injury_out");
        let mut b = batch(400);
        b.skipped.insert("player_injury_out".into(), 10);
        assert!(matches!(
            decide(&b, &p, t(LAST) + mins(15)),
            Verdict::StuckBelowMinimum { .. }
        ));
    }

    #[test]
    fn root_cause_is_the_most_common_failure_reason() {
        let mut b = batch(414);
        b.failing.insert("feature_store_timeout".into(), 30);
        b.failing.insert("model_load_error".into(), 4);
        let Verdict::Stalled(s) = decide(&b, &policy(), t(LAST) + mins(16)) else {
            panic!()
        };
        assert_eq!(s.root_cause, "feature_store_timeout");
        assert_eq!(s.silent_players, 2);
        assert_eq!(
            s.trigger_reason,
            "Stalled at 92.0% (414/450) for 16 minutes; outstanding: 30 feature_store_timeout, 4 model_load_error, 2 without a reported reason"
        );
    }

    #[test]
    fn a_skip_the_policy_does_not_count_is_an_outstanding_reason() {
        let mut p = policy();
        p.permanent_skip_reasons.remove("player_injury_out");
        let mut b = batch(414);
        b.skipped.insert("player_injury_out".into(), 30);
        b.skipped.insert("no_features".into(), 2);
        b.failing.insert("rate_limited".into(), 3);
        let Verdict::Stalled(s) = decide(&b, &p, t(LAST) + mins(16)) else {
            panic!()
        };
        // 414 + 2 permanently skipped of 450: 34 outstanding, 33 of them with a reason.
        assert_eq!(s.root_cause, "player_injury_out");
        assert_eq!(s.silent_players, 1);
        assert_eq!(
            s.trigger_reason,
            "Stalled at 92.4% (416/450) for 16 minutes; outstanding: 30 player_injury_out, 3 rate_limited, 1 without a reported reason"
        );
    }

    #[test]
    fn root_cause_ties_go_alphabetically_and_silence_is_no_progress() {
        let mut b = batch(414);
        b.failing.insert("rate_limited".into(), 3);
        b.failing.insert("bigquery_timeout".into(), 3);
        let Verdict::Stalled(s) = decide(&b, &policy(), t(LAST) + mins(16)) else {
            panic!()
        };
        assert_eq!(s.root_cause, "bigquery_timeout");
        let Verdict::Stalled(s) = decide(&batch(414), &policy(), t(LAST) + mins(16)) else {
            panic!()
        };
        assert_eq!(s.root_cause, "no_progress");
    }

    #[test]
    fn root_cause_keys_are_safe_whatever_the_workers_report() {
        let mut b = batch(414);
        b.failing.insert("Timeout: feature store (30s)".into(), 5);
        let Verdict::Stalled(s) = decide(&b, &policy(), t(LAST) + mins(16)) else {
            panic!()
        };
        assert_eq!(s.root_cause, "timeout__feature_store__30s_");
        b.failing.clear();
        b.failing.insert("503".into(), 5);
        let Verdict::Stalled(s) = decide(&b, &policy(), t(LAST) + mins(16)) else {
            panic!()
        };
        assert_eq!(s.root_cause, "r_503");
    }

    #[test]
    fn a_trigger_reason_fits_its_event_whatever_the_workers_report() {
        let mut b = batch(414);
        for i in 0..500 {
            b.failing.insert(format!("{i:03}{}\n", "x".repeat(5000)), 1);
        }
        let Verdict::Stalled(s) = decide(&b, &policy(), t(LAST) + mins(16)) else {
            panic!()
        };
        assert!(
            s.trigger_reason.chars().count() <= 2048,
            "{}",
            s.trigger_reason.len()
        );
        assert!(!s.trigger_reason.contains('\n'));
        assert!(
            s.trigger_reason.ends_with("490 more reasons"),
            "{}",
            s.trigger_reason
        );
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let mut b = batch(u64::MAX);
        b.skipped.insert("no_features".into(), u64::MAX);
        assert!(matches!(
            decide(&b, &policy(), t(LAST)),
            Verdict::Complete { .. }
        ));
        let mut b = batch(405);
        b.failing.insert("a".into(), u64::MAX);
        b.failing.insert("b".into(), u64::MAX);
        let Verdict::Stalled(s) = decide(&b, &policy(), t(LAST) + mins(15)) else {
            panic!()
        };
        assert_eq!(s.silent_players, 0);
    }

    #[test]
    fn a_policy_change_moves_the_threshold() {
        let mut p = policy();
        p.stall_after = mins(5);
        p.min_completion_percent = 80.0;
        // 370/450 = 82.2 %
        let v = decide(&batch(370), &p, t(LAST) + mins(5));
        assert!(matches!(v, Verdict::Stalled(_)), "{v:?}");
    }
}
