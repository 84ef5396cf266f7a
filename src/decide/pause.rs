//! Pauses, and the batches that recovered by themselves.
//!
//! A batch that has made no progress for the policy's `watchAfter` (half of `stallAfter` by
//! default) at or above the minimum completion is paused. If it then progresses or
//! completes without a heal of ours, it recovered by itself: the pause is counted, and its
//! length (last progress before it to the progress that ended it) may be the longest. A
//! heal that completes it ends the pause uncounted. These counts tell whether `stallAfter`
//! heals batches that would have finished a minute later.

use jiff::{SignedDuration, Timestamp};

use super::stall::{StallPolicy, Verdict};
use crate::api::batch::{BatchSummary, PredictionBatchStatus};
use crate::api::schema::PositiveDuration;

/// A batch's pauses as its status keeps them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pauses {
    /// The last progress before the open pause; None: not paused.
    pub open_since: Option<Timestamp>,
    /// Pauses that ended by themselves.
    pub recovered: u32,
    /// The longest of those.
    pub longest: Option<SignedDuration>,
}

impl Pauses {
    pub fn of(status: Option<&PredictionBatchStatus>) -> Self {
        let Some(status) = status else {
            return Self::default();
        };
        Self {
            open_since: status.paused_since.as_ref().map(|t| t.0),
            recovered: status.pauses,
            longest: status.longest_pause.as_ref().map(PositiveDuration::as_span),
        }
    }

    /// Sets the summary's pause fields to these.
    pub fn write_into(&self, summary: &mut BatchSummary) {
        summary.paused_since = self
            .open_since
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime);
        summary.pauses = self.recovered;
        summary.longest_pause = self.longest.and_then(PositiveDuration::from_span);
    }
}

/// The pauses after a verdict, and what changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Tracked {
    pub pauses: Pauses,
    /// A pause that ended by itself on this verdict: its length.
    pub self_recovered: Option<SignedDuration>,
    /// When the batch counts as paused if nothing changes (the reconciler wakes then).
    pub watch_at: Option<Timestamp>,
}

/// Follows `previous` through `verdict`. `healed`: the batch carries the id of our heal.
pub fn track(
    previous: &Pauses,
    verdict: &Verdict,
    healed: bool,
    policy: &StallPolicy,
    now: Timestamp,
) -> Tracked {
    let mut pauses = previous.clone();
    let mut self_recovered = None;
    if let Some(since) = previous.open_since {
        let last_progress = verdict.progress().map(|p| p.last_progress);
        let ended = match verdict {
            // Our heal ended it: not a recovery by itself.
            Verdict::Complete { .. } if healed => Some(None),
            // Completed at its source without a new progress time: it ended when seen.
            Verdict::Complete { .. } => {
                let end = last_progress.filter(|t| *t > since).unwrap_or(now);
                Some(Some(end.duration_since(since)))
            }
            Verdict::Progressing { .. }
            | Verdict::Stalled(_)
            | Verdict::StuckBelowMinimum { .. } => last_progress
                .filter(|t| *t > since)
                .map(|t| Some(t.duration_since(since))),
            // Aged out while paused: it never recovered.
            Verdict::Expired { .. } => Some(None),
            // A source that cannot be read says nothing about the pause: it stays open.
            Verdict::Invalid { .. } => None,
        };
        if let Some(length) = ended {
            pauses.open_since = None;
            if let Some(length) = length {
                pauses.recovered = pauses.recovered.saturating_add(1);
                pauses.longest = Some(pauses.longest.map_or(length, |l| l.max(length)));
                self_recovered = Some(length);
            }
        }
    }
    let mut watch_at = None;
    if pauses.open_since.is_none()
        && let Some(p) = verdict.progress()
        && !matches!(verdict, Verdict::Complete { .. })
        && p.percent >= policy.min_completion_percent
    {
        let paused_at = p.last_progress + policy.watch_after;
        if now >= paused_at {
            pauses.open_since = Some(p.last_progress);
        } else {
            watch_at = Some(paused_at);
        }
    }
    Tracked {
        pauses,
        self_recovered,
        watch_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::HealingPolicySpec;
    use crate::decide::stall::{BatchObservation, decide};

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn policy() -> StallPolicy {
        // stallAfter 15m: watched as paused after 7m30s.
        StallPolicy::from(&HealingPolicySpec::default())
    }
    fn verdict(completed: u64, last_progress: &str, now: &str) -> Verdict {
        let observation = BatchObservation {
            expected: Some(100),
            completed,
            created_at: Some(t("2026-11-24T09:00:00Z")),
            last_progress: Some(t(last_progress)),
            ..Default::default()
        };
        decide(&observation, &policy(), t(now))
    }
    fn track_at(previous: &Pauses, v: &Verdict, healed: bool, now: &str) -> Tracked {
        track(previous, v, healed, &policy(), t(now))
    }

    #[test]
    fn the_default_watch_is_half_the_stall_and_never_past_it() {
        assert_eq!(policy().watch_after, SignedDuration::from_secs(450));
        let spec: HealingPolicySpec =
            serde_json::from_value(serde_json::json!({"stallAfter": "10m", "watchAfter": "1h"}))
                .unwrap();
        assert_eq!(
            StallPolicy::from(&spec).watch_after,
            SignedDuration::from_mins(10)
        );
    }

    #[test]
    fn a_pause_opens_at_watch_after_and_closes_as_a_self_recovery_on_progress() {
        let none = Pauses::default();
        let before = track_at(
            &none,
            &verdict(95, "2026-11-24T10:00:00Z", "2026-11-24T10:07:29Z"),
            false,
            "2026-11-24T10:07:29Z",
        );
        assert_eq!(before.pauses, none, "not paused before watchAfter");
        assert_eq!(before.watch_at, Some(t("2026-11-24T10:07:30Z")));

        let paused = track_at(
            &none,
            &verdict(95, "2026-11-24T10:00:00Z", "2026-11-24T10:07:30Z"),
            false,
            "2026-11-24T10:07:30Z",
        );
        assert_eq!(paused.pauses.open_since, Some(t("2026-11-24T10:00:00Z")));
        assert_eq!((paused.self_recovered, paused.watch_at), (None, None));

        let resumed = track_at(
            &paused.pauses,
            &verdict(96, "2026-11-24T10:09:15.5Z", "2026-11-24T10:09:16Z"),
            false,
            "2026-11-24T10:09:16Z",
        );
        let length = SignedDuration::from_millis(555_500);
        assert_eq!(resumed.self_recovered, Some(length));
        assert_eq!(
            resumed.pauses,
            Pauses {
                open_since: None,
                recovered: 1,
                longest: Some(length)
            }
        );
        assert_eq!(
            resumed.watch_at,
            Some(t("2026-11-24T10:16:45.5Z")),
            "watched again"
        );
        // A shorter second pause counts, and the longest stays.
        let again = Pauses {
            open_since: Some(t("2026-11-24T10:09:15.5Z")),
            ..resumed.pauses.clone()
        };
        let done = track_at(
            &again,
            &verdict(100, "2026-11-24T10:18:00Z", "2026-11-24T10:18:01Z"),
            false,
            "2026-11-24T10:18:01Z",
        );
        assert_eq!(done.pauses.recovered, 2);
        assert_eq!(done.pauses.longest, Some(length));
        assert_eq!((done.pauses.open_since, done.watch_at), (None, None));
    }

    #[test]
    fn a_pause_our_heal_ends_or_that_expires_is_not_counted_and_an_unreadable_source_keeps_it() {
        let open = Pauses {
            open_since: Some(t("2026-11-24T10:00:00Z")),
            ..Default::default()
        };
        let healed = track_at(
            &open,
            &verdict(100, "2026-11-24T10:00:00Z", "2026-11-24T10:15:01Z"),
            true,
            "2026-11-24T10:15:01Z",
        );
        assert_eq!(
            (healed.pauses.clone(), healed.self_recovered),
            (Pauses::default(), None)
        );
        // Completed by someone else without a new progress time: ended when seen.
        let elsewhere = track_at(
            &open,
            &verdict(100, "2026-11-24T10:00:00Z", "2026-11-24T10:12:00Z"),
            false,
            "2026-11-24T10:12:00Z",
        );
        assert_eq!(
            elsewhere.self_recovered,
            Some(SignedDuration::from_mins(12))
        );
        let expired = track_at(
            &open,
            &verdict(95, "2026-11-24T10:00:00Z", "2026-11-25T09:00:00Z"),
            false,
            "2026-11-25T09:00:00Z",
        );
        assert_eq!(
            (expired.pauses.clone(), expired.self_recovered),
            (Pauses::default(), None)
        );
        let invalid = Verdict::Invalid {
            reason: "bad".into(),
        };
        assert_eq!(
            track_at(&open, &invalid, false, "2026-11-24T10:12:00Z").pauses,
            open
        );
        // Still no progress (stalled, even): the pause stays open.
        let stalled = track_at(
            &open,
            &verdict(95, "2026-11-24T10:00:00Z", "2026-11-24T10:15:00Z"),
            false,
            "2026-11-24T10:15:00Z",
        );
        assert_eq!((stalled.pauses, stalled.self_recovered), (open, None));
    }

    #[test]
    fn below_the_minimum_completion_nothing_is_watched() {
        let low = track_at(
            &Pauses::default(),
            &verdict(50, "2026-11-24T10:00:00Z", "2026-11-24T10:10:00Z"),
            false,
            "2026-11-24T10:10:00Z",
        );
        assert_eq!((low.pauses, low.watch_at), (Pauses::default(), None));
    }

    #[test]
    fn pauses_read_back_from_the_status_they_are_written_into() {
        let pauses = Pauses {
            open_since: Some(t("2026-11-24T10:00:00.25Z")),
            recovered: 3,
            longest: Some(SignedDuration::from_millis(3_723_250)),
        };
        let mut summary = BatchSummary::default();
        pauses.write_into(&mut summary);
        assert_eq!(
            summary.longest_pause.as_ref().map(|d| d.as_str()),
            Some("1h2m3.25s")
        );
        let status: PredictionBatchStatus =
            serde_json::from_value(serde_json::to_value(&summary).unwrap()).unwrap();
        assert_eq!(Pauses::of(Some(&status)), pauses);
        assert_eq!(
            PositiveDuration::from_span(SignedDuration::from_secs(120))
                .unwrap()
                .as_str(),
            "2m"
        );
        assert_eq!(
            PositiveDuration::from_span(SignedDuration::from_micros(400)),
            None
        );
    }
}
