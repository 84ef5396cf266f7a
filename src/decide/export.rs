//! When a healing event goes to each sink, when a failed export is retried, and when the
//! event may be deleted. The HealingEvent object is the outbox: its status holds each sink's
//! export state, and these functions turn (that state, the sinks configured, now) into the
//! next step.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

use super::naming::fnv1a;
use crate::api::event::{ExportState, HealingEventStatus, Outcome, SinkExport};

/// Capped exponential backoff for failed exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 5 min: a short blip costs a second, an outage a few calls an hour.
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait after the `attempts`-th failure in a row: `initial * 2^(attempts-1)`, capped
    /// at `max`, then scaled into [50 %, 100 %] by a jitter derived from `key` and `attempts`.
    /// Deterministic, so it can be tested, yet spread across events, so a thousand events
    /// that failed together do not retry together.
    pub fn delay(&self, attempts: u32, key: &str) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        let base = self.initial.saturating_mul(1u32 << doublings).min(self.max);
        let attempt = attempts.to_string();
        let fraction = (fnv1a(&[key, &attempt]) % 1024) as f64 / 2048.0; // [0, 0.5)
        base.mul_f64(0.5 + fraction)
    }
}

/// Whether the event's action has finished, so what it records is final. Exporting earlier
/// would put a row without the outcome into an append-only table.
pub fn is_final(status: Option<&HealingEventStatus>) -> bool {
    status
        .and_then(|s| s.outcome)
        .is_some_and(Outcome::is_final)
}

/// Whether `sink` should be tried now.
pub fn is_due(export: Option<&SinkExport>, now: Timestamp) -> bool {
    match export {
        None => true,
        Some(e) => match e.state {
            ExportState::Exported => false,
            // Configured again (the plan only asks about configured sinks).
            ExportState::Pending | ExportState::Unconfigured => true,
            ExportState::Failing => e.next_attempt_at.as_ref().is_none_or(|t| t.0 <= now),
        },
    }
}

/// Why a sink did not take an event: the message its export state keeps (`lastError`).
/// Cloneable, since one failed request fails every event it carried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExportFailure(pub String);

impl From<String> for ExportFailure {
    fn from(message: String) -> Self {
        Self(message)
    }
}

impl From<&str> for ExportFailure {
    fn from(message: &str) -> Self {
        Self(message.to_owned())
    }
}

/// The export state after one attempt: exported, or failing with the attempt counted, the
/// error kept and the next attempt scheduled.
pub fn after_attempt(
    previous: Option<&SinkExport>,
    result: Result<(), ExportFailure>,
    now: Timestamp,
    backoff: &Backoff,
    key: &str,
) -> SinkExport {
    let attempts = previous.map_or(0, |p| p.attempts).saturating_add(1);
    match result {
        Ok(()) => SinkExport {
            state: ExportState::Exported,
            attempts,
            exported_at: Some(Time(now)),
            last_error: None,
            next_attempt_at: None,
        },
        Err(error) => {
            let failures = match previous {
                Some(p) if p.state == ExportState::Failing => p.attempts.saturating_add(1),
                _ => 1,
            };
            let wait = SignedDuration::try_from(backoff.delay(failures, key))
                .unwrap_or(SignedDuration::MAX);
            SinkExport {
                state: ExportState::Failing,
                attempts,
                exported_at: None,
                last_error: Some(error.0),
                next_attempt_at: Some(MicroTime(now.saturating_add(wait).unwrap_or(now))),
            }
        }
    }
}

/// How long an event whose sink was removed on purpose is kept past its retention, for
/// the sink to be configured again (or someone to copy the events) before they are deleted.
pub const REMOVED_SINK_GRACE: SignedDuration = SignedDuration::from_hours(7 * 24);

/// The operator's settings the outbox works by.
#[derive(Clone, Copy, Debug)]
pub struct Outbox<'a> {
    /// The sinks configured now.
    pub sinks: &'a [&'a str],
    /// How long an exported event is kept (the namespace's policy).
    pub retention: SignedDuration,
    /// How long a deleted event that has not reached its sinks is held back
    /// (`--export-finalizer-timeout`).
    pub release_after: SignedDuration,
}

/// Why the outbox lets a deleted event go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Every sink it must reach has it (or a removed sink's grace period is over).
    Exported,
    /// `--export-finalizer-timeout` passed first: it goes without reaching every sink (its
    /// whole record is logged).
    TimedOut,
}

/// What to do with one event now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportPlan {
    /// Sinks to export to now.
    pub due: Vec<String>,
    /// The sinks the event must reach, as its status should list them.
    pub required: Vec<String>,
    /// Of those, the ones this process runs without and that do not have the event yet
    /// (shown as Unconfigured).
    pub removed: Vec<String>,
    /// With sinks removed: how long the event is kept for them (retention plus the grace).
    pub kept_until: Option<Timestamp>,
    /// Delete the event: it is past retention and every sink it must reach has it (a
    /// removed sink: past retention and the grace period).
    pub delete: bool,
    /// The event is being deleted and may go now.
    pub release: Option<Release>,
    /// When to look again (the earliest retry, the retention instant, the release
    /// deadline), if ever.
    pub wake_at: Option<Timestamp>,
}

/// The plan for an event recorded at `recorded`, deleted at `deleting` (None: not deleted).
/// An event whose action has not finished exports nothing (its outcome arrives as a change,
/// and `decide::unfinished` bounds the wait); deleted, it waits at most `release_after`.
pub fn plan(
    status: Option<&HealingEventStatus>,
    outbox: &Outbox,
    recorded: Timestamp,
    deleting: Option<Timestamp>,
    now: Timestamp,
) -> ExportPlan {
    let deadline = deleting.map(|d| {
        d.saturating_add(outbox.release_after)
            .unwrap_or(Timestamp::MAX)
    });
    let timed_out = deadline.is_some_and(|d| now >= d);
    let export_of = |sink: &str| status.and_then(|s| s.exports.get(sink));
    if !is_final(status) {
        return ExportPlan {
            due: Vec::new(),
            required: Vec::new(),
            removed: Vec::new(),
            kept_until: None,
            delete: false,
            release: timed_out.then_some(Release::TimedOut),
            wake_at: deadline,
        };
    }
    let configured = |sink: &str| outbox.sinks.contains(&sink);
    // Fixed when the outcome became final (an event final before the list existed gets it
    // now). Not the keys of `exports`: a producer may write those, and a sink name it made up
    // would hold its event for ever.
    let mut required: Vec<String> = status.map(|s| s.required_sinks.clone()).unwrap_or_default();
    required.extend(outbox.sinks.iter().map(|s| (*s).to_owned()));
    required.sort();
    required.dedup();
    let exported = |sink: &str| export_of(sink).is_some_and(|e| e.state == ExportState::Exported);
    let removed: Vec<String> = required
        .iter()
        .filter(|s| !configured(s) && !exported(s))
        .cloned()
        .collect();
    let due: Vec<String> = outbox
        .sinks
        .iter()
        .filter(|s| is_due(export_of(s), now))
        .map(|s| (*s).to_owned())
        .collect();
    let configured_done = outbox.sinks.iter().all(|s| exported(s));
    let all_done = configured_done && removed.is_empty();
    let grace = if all_done {
        SignedDuration::ZERO
    } else {
        REMOVED_SINK_GRACE
    };
    let expires = recorded
        .saturating_add(outbox.retention)
        .and_then(|t| t.checked_add(grace))
        .unwrap_or(Timestamp::MAX);
    let may_go = configured_done && (all_done || now >= expires);
    let next_retry = outbox
        .sinks
        .iter()
        .filter_map(|s| export_of(s))
        .filter(|e| e.state == ExportState::Failing)
        .filter_map(|e| e.next_attempt_at.as_ref().map(|t| t.0))
        .filter(|t| *t > now)
        .min();
    let release = match deleting {
        Some(_) if may_go => Some(Release::Exported),
        Some(_) if timed_out => Some(Release::TimedOut),
        _ => None,
    };
    let wake_at = [configured_done.then_some(expires), next_retry, deadline]
        .into_iter()
        .flatten()
        .min();
    ExportPlan {
        delete: deleting.is_none() && configured_done && now >= expires,
        due,
        required,
        kept_until: (!removed.is_empty()).then_some(expires),
        removed,
        release,
        wake_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn status(outcome: Outcome, exports: &[(&str, SinkExport)]) -> HealingEventStatus {
        HealingEventStatus {
            outcome: Some(outcome),
            exports: exports
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<BTreeMap<_, _>>(),
            ..Default::default()
        }
    }

    fn exported(at_: &str) -> SinkExport {
        SinkExport {
            state: ExportState::Exported,
            attempts: 1,
            exported_at: Some(Time(at(at_))),
            last_error: None,
            next_attempt_at: None,
        }
    }

    fn failing(attempts: u32, next: &str) -> SinkExport {
        SinkExport {
            state: ExportState::Failing,
            attempts,
            exported_at: None,
            last_error: Some("unavailable".into()),
            next_attempt_at: Some(MicroTime(at(next))),
        }
    }

    const SINKS: [&str; 2] = ["bigquery", "firestore"];
    const DAY: SignedDuration = SignedDuration::from_hours(24);

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() {
        let b = Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
        };
        for (attempts, base) in [(1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (40, 60.0)] {
            for key in ["a", "b", "c", "batch-cleanup-x-0123"] {
                let d = b.delay(attempts, key).as_secs_f64();
                assert!(
                    d >= base * 0.5 && d < base,
                    "attempt {attempts} key {key}: {d} not in [{}, {base})",
                    base * 0.5
                );
            }
        }
        // Jitter spreads keys that failed together.
        let spread: std::collections::BTreeSet<u128> = (0..50)
            .map(|i| b.delay(3, &format!("event-{i}")).as_millis())
            .collect();
        assert!(spread.len() > 25, "only {} distinct delays", spread.len());
        // And is stable for one key.
        assert_eq!(b.delay(3, "k"), b.delay(3, "k"));
    }

    const HOUR: SignedDuration = SignedDuration::from_hours(1);

    fn outbox<'a>(sinks: &'a [&'a str]) -> Outbox<'a> {
        Outbox {
            sinks,
            retention: DAY,
            release_after: HOUR,
        }
    }

    fn due(p: &ExportPlan) -> Vec<&str> {
        p.due.iter().map(String::as_str).collect()
    }

    #[test]
    fn nothing_is_exported_before_the_outcome() {
        let now = at("2026-11-25T10:00:00Z");
        for st in [None, Some(status(Outcome::Pending, &[]))] {
            let p = plan(st.as_ref(), &outbox(&SINKS), now, None, now);
            assert!(p.due.is_empty());
            assert!(!p.delete);
            assert_eq!(p.wake_at, None);
        }
        for outcome in [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::Superseded,
            Outcome::Skipped,
            Outcome::Abandoned,
        ] {
            let p = plan(Some(&status(outcome, &[])), &outbox(&SINKS), now, None, now);
            assert_eq!(due(&p), SINKS.to_vec(), "{outcome:?}");
            assert_eq!(p.required, SINKS.to_vec(), "{outcome:?}");
        }
    }

    #[test]
    fn a_failing_sink_waits_for_its_next_attempt_and_the_other_goes_on() {
        let now = at("2026-11-25T10:00:00Z");
        let st = status(
            Outcome::Succeeded,
            &[("bigquery", failing(3, "2026-11-25T10:00:08Z"))],
        );
        let p = plan(Some(&st), &outbox(&SINKS), now, None, now);
        assert_eq!(due(&p), vec!["firestore"]);
        assert_eq!(p.wake_at, Some(at("2026-11-25T10:00:08Z")));
        assert!(!p.delete);
        let later = at("2026-11-25T10:00:08Z");
        let p = plan(Some(&st), &outbox(&SINKS), now, None, later);
        assert_eq!(due(&p), SINKS.to_vec());
    }

    fn both_exported() -> HealingEventStatus {
        status(
            Outcome::Succeeded,
            &[
                ("bigquery", exported("2026-11-24T10:00:01Z")),
                ("firestore", exported("2026-11-24T10:00:01Z")),
            ],
        )
    }

    #[test]
    fn deleted_after_retention_only_once_every_sink_has_it() {
        let recorded = at("2026-11-24T10:00:00Z");
        let both = both_exported();
        let before = at("2026-11-25T09:59:59Z");
        let p = plan(Some(&both), &outbox(&SINKS), recorded, None, before);
        assert!(p.due.is_empty() && !p.delete);
        assert_eq!(p.wake_at, Some(at("2026-11-25T10:00:00Z")));
        let expired = at("2026-11-25T10:00:00Z");
        assert!(plan(Some(&both), &outbox(&SINKS), recorded, None, expired).delete);

        let one = status(
            Outcome::Succeeded,
            &[
                ("bigquery", failing(9, "2026-11-25T10:05:00Z")),
                ("firestore", exported("2026-11-24T10:00:01Z")),
            ],
        );
        let p = plan(Some(&one), &outbox(&SINKS), recorded, None, expired);
        assert!(!p.delete, "deleted before BigQuery had it");
        assert_eq!(p.wake_at, Some(at("2026-11-25T10:05:00Z")));
        // With no sinks configured ever, events live in Kubernetes only, for the retention.
        let failed = status(Outcome::Failed, &[]);
        let p = plan(Some(&failed), &outbox(&[]), recorded, None, expired);
        assert!(p.delete && p.due.is_empty() && p.required.is_empty());
    }

    #[test]
    fn a_sink_removed_from_the_flags_is_still_required_and_waited_for_past_a_grace_period() {
        let recorded = at("2026-11-24T10:00:00Z");
        // Final while both were configured; BigQuery never got it; restarted without BigQuery.
        let mut st = status(
            Outcome::Succeeded,
            &[("firestore", exported("2026-11-24T10:00:01Z"))],
        );
        st.required_sinks = SINKS.iter().map(|s| (*s).to_owned()).collect();
        let firestore_only = ["firestore"];
        let expired = at("2026-11-25T10:00:00Z");
        let p = plan(Some(&st), &outbox(&firestore_only), recorded, None, expired);
        assert_eq!(
            p.required,
            SINKS.to_vec(),
            "the flags do not shorten the list"
        );
        assert_eq!(p.removed, vec!["bigquery"]);
        assert!(!p.delete, "deleted though BigQuery never had it");
        let kept_until = expired + REMOVED_SINK_GRACE;
        assert_eq!(p.wake_at, Some(kept_until));
        assert!(
            plan(
                Some(&st),
                &outbox(&firestore_only),
                recorded,
                None,
                kept_until
            )
            .delete
        );
        assert_eq!(p.kept_until, Some(kept_until));
        // A removed sink that has the event already is neither waited for nor flagged.
        let mut had_it = st.clone();
        had_it
            .exports
            .insert("bigquery".into(), exported("2026-11-24T10:00:02Z"));
        let p = plan(
            Some(&had_it),
            &outbox(&firestore_only),
            recorded,
            None,
            expired,
        );
        assert_eq!(
            (p.removed.is_empty(), p.kept_until, p.delete),
            (true, None, true)
        );
        // A sink name only `exports` mentions (a producer may write it) is not required.
        let mut made_up = st.clone();
        made_up.required_sinks = vec!["firestore".into()];
        made_up
            .exports
            .insert("elsewhere".into(), failing(2, "2026-11-24T10:00:09Z"));
        let p = plan(
            Some(&made_up),
            &outbox(&firestore_only),
            recorded,
            None,
            expired,
        );
        assert_eq!(
            (p.required.clone(), p.delete),
            (vec!["firestore".to_owned()], true)
        );
        // Configured again, it is due again.
        let p = plan(Some(&st), &outbox(&SINKS), recorded, None, expired);
        assert_eq!((due(&p), p.removed.is_empty()), (vec!["bigquery"], true));
    }

    #[test]
    fn a_deleted_event_goes_once_exported_or_when_its_wait_is_over() {
        let recorded = at("2026-11-24T10:00:00Z");
        let deleted = at("2026-11-24T11:00:00Z");
        let now = at("2026-11-24T11:00:05Z");
        let p = plan(
            Some(&both_exported()),
            &outbox(&SINKS),
            recorded,
            Some(deleted),
            now,
        );
        assert_eq!((p.release, p.delete), (Some(Release::Exported), false));

        let one = status(
            Outcome::Succeeded,
            &[
                ("bigquery", failing(4, "2026-11-24T11:00:30Z")),
                ("firestore", exported("2026-11-24T10:00:01Z")),
            ],
        );
        let p = plan(Some(&one), &outbox(&SINKS), recorded, Some(deleted), now);
        assert_eq!(p.release, None, "released before BigQuery had it");
        assert_eq!(p.wake_at, Some(at("2026-11-24T11:00:30Z")));
        let later = at("2026-11-24T11:59:00Z");
        let p = plan(Some(&one), &outbox(&SINKS), recorded, Some(deleted), later);
        assert_eq!(p.wake_at, Some(at("2026-11-24T12:00:00Z")), "the deadline");
        let over = at("2026-11-24T12:00:00Z");
        let p = plan(Some(&one), &outbox(&SINKS), recorded, Some(deleted), over);
        assert_eq!(p.release, Some(Release::TimedOut));
        // An event without an outcome is held to the same deadline.
        let pending = status(Outcome::Pending, &[]);
        let p = plan(
            Some(&pending),
            &outbox(&SINKS),
            recorded,
            Some(deleted),
            now,
        );
        assert_eq!((p.release, p.wake_at), (None, Some(over)));
        let p = plan(
            Some(&pending),
            &outbox(&SINKS),
            recorded,
            Some(deleted),
            over,
        );
        assert_eq!(p.release, Some(Release::TimedOut));
    }

    #[test]
    fn an_attempt_records_success_or_schedules_the_next_one() {
        let now = at("2026-11-25T10:00:00Z");
        let b = Backoff::default();
        let first = after_attempt(None, Err("connection refused".into()), now, &b, "k");
        assert_eq!(first.state, ExportState::Failing);
        assert_eq!(first.attempts, 1);
        assert_eq!(first.last_error.as_deref(), Some("connection refused"));
        let wait = first
            .next_attempt_at
            .as_ref()
            .unwrap()
            .0
            .duration_since(now);
        assert!(wait >= SignedDuration::from_millis(500) && wait < SignedDuration::from_secs(1));

        let second = after_attempt(Some(&first), Err("again".into()), now, &b, "k");
        assert_eq!(second.attempts, 2);
        let wait = second
            .next_attempt_at
            .as_ref()
            .unwrap()
            .0
            .duration_since(now);
        assert!(wait >= SignedDuration::from_secs(1) && wait < SignedDuration::from_secs(2));

        let done = after_attempt(Some(&second), Ok(()), now, &b, "k");
        assert_eq!(done.state, ExportState::Exported);
        assert_eq!(done.attempts, 3);
        assert_eq!(done.exported_at, Some(Time(now)));
        assert_eq!(done.last_error, None);
        assert!(!is_due(Some(&done), now));
    }
}
