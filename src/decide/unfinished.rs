//! When an action's record is settled without its actor, and what it then says. Every intent
//! ends in a final outcome within a bound: its actor's answer, or, once the actor's time is
//! up, what the target shows when read again, or `Abandoned` with the reason. The outbox
//! (`controller::event`) holds each unfinished event to its bound, since only it sees every
//! event whatever became of the reconcile that recorded it.

use jiff::{SignedDuration, Timestamp};
use kube::ResourceExt;

use crate::api::HealingEvent;
use crate::api::event::{BATCH_CLEANUP, HealingEventStatus, Outcome, PHASE_RERUN};

/// An external producer (a worker's retry, a fallback) records its own outcome; one that has
/// not within an hour has stopped, and its record is closed as abandoned.
pub const EXTERNAL_OUTCOME_WITHIN: SignedDuration = SignedDuration::from_hours(1);

/// How long each kind of actor may take before its intent counts as abandoned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// The controller's heal of a batch (`--abandoned-heal-after`).
    pub abandoned_heal_after: SignedDuration,
    /// The longest a processor's trigger may take to answer (its ID token and the request).
    pub trigger_request: SignedDuration,
}

impl Bounds {
    /// How long an intent of `healing_type` may stay without an outcome: twice the time
    /// after which a heal is taken over, so a take-over (or a slow actor) finishes first and
    /// settling finds the batch as it left it; a re-run's trigger may take its whole timeout
    /// to answer, so its actor is given that on top.
    pub fn settle_after(&self, healing_type: &str) -> SignedDuration {
        let twice = self.abandoned_heal_after * 2;
        match healing_type {
            BATCH_CLEANUP => twice,
            PHASE_RERUN => twice.saturating_add(self.trigger_request),
            _ => EXTERNAL_OUTCOME_WITHIN,
        }
    }

    /// When the outbox settles `event` if it is still without a final outcome then. An
    /// action carried out and Verifying is judged by its reconciler until its `verifyBy`;
    /// the outbox gives that reconciler twice the abandonment time more.
    pub fn settle_at(&self, event: &HealingEvent) -> Timestamp {
        if let Some(by) = verify_by(event) {
            return by
                .saturating_add(self.abandoned_heal_after * 2)
                .unwrap_or(Timestamp::MAX);
        }
        let recorded = event
            .creation_timestamp()
            .map_or(event.spec.timestamp.0, |t| t.0);
        recorded
            .saturating_add(self.settle_after(&event.spec.healing_type))
            .unwrap_or(Timestamp::MAX)
    }
}

/// The `verifyBy` of an event Verifying.
fn verify_by(event: &HealingEvent) -> Option<Timestamp> {
    let status = event.status.as_ref()?;
    (status.outcome == Some(Outcome::Verifying))
        .then(|| status.verify_by.as_ref().map(|t| t.0))
        .flatten()
}

/// Why an unfinished event is closed as abandoned, when nothing can tell what its action did
/// (a batch's heal is judged by its batch instead, with the reasons of `decide::heal`).
pub fn abandoned_reason(event: &HealingEvent, bounds: &Bounds) -> String {
    let healing_type = event.spec.healing_type.as_str();
    if verify_by(event).is_some() {
        return "it was carried out, but its target was not looked at again in time to verify \
                it (its object was deleted, or could not be observed)"
            .to_owned();
    }
    match healing_type {
        PHASE_RERUN => "its actor stopped before recording the trigger's answer (the trigger \
                        may or may not have been sent); the phase's own observation decides \
                        whether the processor runs again"
            .to_owned(),
        _ => format!(
            "no outcome from its producer within {}",
            jiff::fmt::friendly::SpanPrinter::new()
                .duration_to_string(&bounds.settle_after(healing_type))
        ),
    }
}

/// The status that closes an unfinished event as abandoned for `reason`.
/// What the action recorded of itself so far (a Verifying one's after_state) stays.
pub fn abandoned(event: &HealingEvent, reason: &str, now: Timestamp) -> HealingEventStatus {
    let after = event.status.as_ref().and_then(|s| s.after_state.clone());
    let message = format!("abandoned: {reason}");
    super::verify::finished(&event.spec, Outcome::Abandoned, &message, after, now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::event::{HealingEventSpec, TargetRef};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn event(healing_type: &str, created: &str) -> HealingEvent {
        let mut event = HealingEvent::new(
            "x",
            HealingEventSpec {
                healing_id: "x".into(),
                timestamp: MicroTime("2026-11-24T09:00:00Z".parse().unwrap()),
                healing_type: healing_type.into(),
                trigger_reason: "r".into(),
                action_taken: "a".into(),
                root_cause: "no_progress".into(),
                correlation_id: None,
                target: TargetRef {
                    api_version: None,
                    kind: "PredictionBatch".into(),
                    namespace: None,
                    name: "b".into(),
                    uid: None,
                },
                dry_run: false,
                threshold_time: None,
                onset_time: None,
                detected_time: None,
                before_state: None,
                details: None,
            },
        );
        event.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        event
    }

    #[test]
    fn each_actor_gets_its_bound_counted_from_the_record() {
        let bounds = Bounds {
            abandoned_heal_after: SignedDuration::from_secs(30),
            trigger_request: SignedDuration::from_secs(300),
        };
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        let created = "2026-11-24T10:00:00Z";
        assert_eq!(
            bounds.settle_at(&event(BATCH_CLEANUP, created)),
            at("2026-11-24T10:01:00Z")
        );
        assert_eq!(
            bounds.settle_at(&event(PHASE_RERUN, created)),
            at("2026-11-24T10:06:00Z")
        );
        assert_eq!(
            bounds.settle_at(&event("retry", created)),
            at("2026-11-24T11:00:00Z")
        );
        let mut undated = event(BATCH_CLEANUP, created);
        undated.metadata.creation_timestamp = None;
        assert_eq!(bounds.settle_at(&undated), at("2026-11-24T09:01:00Z"));
    }

    #[test]
    fn an_abandoned_record_is_final_failed_and_says_why() {
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let bounds = Bounds {
            abandoned_heal_after: SignedDuration::from_secs(30),
            trigger_request: SignedDuration::from_secs(300),
        };
        let retry = event("retry", "2026-11-24T09:00:00Z");
        let reason = abandoned_reason(&retry, &bounds);
        assert_eq!(reason, "no outcome from its producer within 1h");
        let status = abandoned(&retry, &reason, now);
        assert_eq!(status.outcome, Some(Outcome::Abandoned));
        assert_eq!(status.success, Some(false));
        assert!(status.message.unwrap().contains("within 1h"));
        assert!(crate::decide::export::is_final(Some(&abandoned(
            &retry, "x", now
        ))));
    }

    #[test]
    fn a_verifying_action_is_settled_after_its_verify_by_and_keeps_what_it_recorded() {
        let bounds = Bounds {
            abandoned_heal_after: SignedDuration::from_secs(30),
            trigger_request: SignedDuration::from_secs(300),
        };
        let at = |t: &str| t.parse::<Timestamp>().unwrap();
        let mut rerun = event(PHASE_RERUN, "2026-11-24T10:00:00Z");
        let after = serde_json::json!({"triggered": true, "rows_before": 0});
        rerun.status = Some(crate::decide::verify::verifying(
            "triggered",
            after.clone(),
            at("2026-11-24T10:20:00Z"),
        ));
        assert_eq!(bounds.settle_at(&rerun), at("2026-11-24T10:21:00Z"));
        let reason = abandoned_reason(&rerun, &bounds);
        assert!(reason.contains("not looked at again in time"), "{reason}");
        let status = abandoned(&rerun, &reason, at("2026-11-24T10:21:00Z"));
        assert_eq!(status.after_state, Some(after));
    }
}
