//! The heal of a stalled batch, as decisions: which HealingEvent records it (its healing id,
//! its attempt, what it says), and what outcome each way the action can end records. The
//! batch reconciler (`controller::batch`) carries these out: intent first, then the action,
//! then the outcome.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::ResourceExt;
use serde_json::json;

use super::health::Gate;
use super::naming::healing_id;
use super::stall::{BatchObservation, RecordedDecision, Stall, StallPolicy, Verdict, decide};
use super::verify;
use crate::api::batch::BatchSource;
use crate::api::event::{BATCH_CLEANUP, HealingEventSpec, HealingEventStatus, Outcome, TargetRef};
use crate::api::{HealingEvent, PredictionBatch};

/// Attempts in a round at healing one stall whose action fails (Firestore or the API server
/// unreachable), each recorded under its own healing id. After a round the batch waits its
/// policy's `stallAfter` and a new round begins, so a stall is never left for good.
pub const HEAL_ATTEMPTS: u32 = 3;

/// The wait after a round's first failed attempt; it doubles after the second, so a round's
/// three attempts span a minute (20 s, then 40 s) and a blip of seconds does not spend them.
pub const HEAL_RETRY_FIRST: SignedDuration = SignedDuration::from_secs(20);

/// The most attempts counted at one stall (about 3,000 rounds: years at any `stallAfter`).
const ATTEMPTS_COUNTED: u32 = 10_000;

/// The wait after the `failures`-th failed attempt in a row at one stall: within a round
/// [`HEAL_RETRY_FIRST`] doubling, after a round's last attempt `stall_after`.
pub fn retry_after(failures: u32, stall_after: SignedDuration) -> SignedDuration {
    let in_round = failures.saturating_sub(1) % HEAL_ATTEMPTS;
    if in_round + 1 == HEAL_ATTEMPTS {
        stall_after
    } else {
        HEAL_RETRY_FIRST * (1i32 << in_round)
    }
}

/// A heal waiting to try again after failed attempts: shown as the batch's HealFailed
/// condition, and when the batch reconciler looks again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealRetry {
    /// Attempts that failed so far.
    pub failures: u32,
    /// What the last one recorded.
    pub last_error: String,
    /// When the next attempt is due.
    pub due: Timestamp,
}

/// Whether `attempt` must wait: `previous` is attempt `attempt - 1`'s event (failed, as
/// [`next_attempt`] found it). None: it may go now (a first attempt, or its time has come).
pub fn retry_wait(
    attempt: u32,
    previous: Option<&HealingEvent>,
    stall_after: SignedDuration,
    now: Timestamp,
) -> Option<HealRetry> {
    let failures = attempt.checked_sub(1).filter(|f| *f > 0)?;
    let status = previous?.status.as_ref()?;
    let failed_at = status.finished_at.as_ref()?.0;
    let due = failed_at
        .saturating_add(retry_after(failures, stall_after))
        .unwrap_or(Timestamp::MAX);
    (now < due).then(|| HealRetry {
        failures,
        last_error: status.message.clone().unwrap_or_default(),
        due,
    })
}

/// What a HealingEvent records of a stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recording<'a> {
    /// The heal itself.
    Act,
    /// What the heal would do (the policy is dry-run).
    DryRun,
    /// A heal not carried out: its type is paused, or its circuit is open (`episode`
    /// names the circuit's opening, so each open period records the batch once).
    Skip { reason: &'a str, episode: &'a str },
}

/// What the heal records, by the gate and the policy's dry-run: a dry-run records what it
/// would do whatever the gate says.
pub fn recording_for(gate: &Gate, dry_run: bool) -> Recording<'_> {
    match (gate, dry_run) {
        (_, true) => Recording::DryRun,
        (
            Gate::Skip {
                reason, episode, ..
            },
            false,
        ) => Recording::Skip { reason, episode },
        (Gate::Act | Gate::Trial, false) => Recording::Act,
    }
}

/// The identity a heal is keyed by: the Firestore document, or the object's uid.
fn identity(batch: &PredictionBatch) -> String {
    match (&batch.spec.source, &batch.spec.document_path) {
        (BatchSource::Firestore, Some(path)) => path.clone(),
        _ => batch.uid().unwrap_or_else(|| batch.name_any()),
    }
}

/// The healing id of `recording` of `stall`: the batch's identity and stall episode, and the
/// attempt (a heal whose action failed is tried again under a new id). Dry-runs and skips
/// have ids of their own, so the heal that follows once the policy or the circuit allows it
/// is not mistaken for one that already happened.
pub fn healing_id_of(
    batch: &PredictionBatch,
    stall: &Stall,
    recording: Recording,
    attempt: u32,
) -> String {
    let episode = stall.progress.last_progress.as_millisecond().to_string();
    let identity = identity(batch);
    let attempt_part = format!("attempt-{attempt}");
    let mut parts = vec![identity.as_str(), episode.as_str()];
    match recording {
        // The first attempt's id is the one heals had before attempts were counted.
        Recording::Act if attempt > 1 => parts.push(&attempt_part),
        Recording::Act => {}
        Recording::DryRun => parts.push("dry_run"),
        Recording::Skip { reason, episode } => parts.extend([reason, episode]),
    }
    healing_id(BATCH_CLEANUP, &batch.spec.batch_id, &parts)
}

/// The attempt to make now: after attempts whose action failed (as `known` shows the
/// events, by healing id), the next one ([`retry_wait`] says when). Dry-runs and skips are
/// recorded once.
pub fn next_attempt(
    batch: &PredictionBatch,
    stall: &Stall,
    recording: Recording,
    known: impl Fn(&str) -> Option<Outcome>,
) -> u32 {
    if recording != Recording::Act {
        return 1;
    }
    (1..ATTEMPTS_COUNTED)
        .find(|attempt| {
            known(&healing_id_of(batch, stall, recording, *attempt)) != Some(Outcome::Failed)
        })
        .unwrap_or(ATTEMPTS_COUNTED)
}

/// The HealingEvent recording `recording` of `stall` (reached by `decision`), at `attempt`
/// (from 1).
pub fn intent(
    batch: &PredictionBatch,
    stall: &Stall,
    decision: &RecordedDecision,
    recording: Recording,
    attempt: u32,
) -> HealingEvent {
    let now = decision.at;
    let id = healing_id_of(batch, stall, recording, attempt);
    let report = batch.status.as_ref().and_then(|s| s.report.as_ref());
    let spec = HealingEventSpec {
        healing_id: id.clone(),
        timestamp: MicroTime(now),
        healing_type: BATCH_CLEANUP.into(),
        trigger_reason: stall.trigger_reason.clone(),
        action_taken: match recording {
            Recording::Act => format!(
                "Marked the batch complete at {:.1}%",
                stall.progress.percent
            ),
            Recording::DryRun => "Would mark the batch complete (dry-run; nothing changed)".into(),
            Recording::Skip { reason, .. } => {
                format!("Skipped: {reason}; the batch was left as it was")
            }
        },
        root_cause: stall.root_cause.clone(),
        correlation_id: batch.spec.correlation_id.clone(),
        target: TargetRef::of(batch),
        dry_run: recording == Recording::DryRun,
        threshold_time: Some(MicroTime(stall.threshold_at)),
        onset_time: Some(MicroTime(stall.progress.last_progress)),
        detected_time: Some(MicroTime(now)),
        before_state: Some(json!({
            "batch_id": batch.spec.batch_id,
            "game_date": batch.spec.game_date,
            "expected_players": stall.progress.expected,
            "completed_players": stall.progress.completed,
            "completion_percent": stall.progress.percent,
            "stall_minutes": stall.stalled_for.as_secs() / 60,
            "last_progress_time": stall.progress.last_progress,
        })),
        details: Some(json!({
            "missing_players": report.map(|r| r.missing_players.clone()).unwrap_or_default(),
            "failing_by_reason": report.map(|r| r.failing.clone()).unwrap_or_default(),
            "silent_players": stall.silent_players,
            "attempt": attempt,
            // The decision's inputs, for `analyze --propose` to replay with another policy.
            "decision": decision,
        })),
    };
    let mut event = HealingEvent::new(&id, spec);
    event.metadata.namespace = batch.namespace();
    event
}

/// The outcome an event records so far (Pending when it has none).
pub fn outcome_of(event: &HealingEvent) -> Outcome {
    event
        .status
        .as_ref()
        .and_then(|s| s.outcome)
        .unwrap_or(Outcome::Pending)
}

/// A Pending event younger than `abandoned_after` belongs to an actor still at work
/// (acting, or recording its outcome); an older one lost its actor to a crash.
pub fn has_live_actor(
    event: &HealingEvent,
    abandoned_after: SignedDuration,
    now: Timestamp,
) -> bool {
    let age = event
        .creation_timestamp()
        .map(|t| now.duration_since(t.0))
        .unwrap_or_default();
    age < abandoned_after
}

/// What to do about a heal whose intent was recorded before (the create found it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// The attempt failed before the cache showed it: the next attempt is due.
    RetryAfterFailure,
    /// It has an outcome: nothing more to do.
    Finished,
    /// Another actor recorded it recently and is presumably acting.
    InProgressElsewhere,
    /// Its actor stopped before recording the outcome: carry the heal through.
    TakeOver,
}

/// What to do about `existing`, the HealingEvent this heal would create.
pub fn existing_heal(
    existing: &HealingEvent,
    recording: Recording,
    abandoned_after: SignedDuration,
    now: Timestamp,
) -> Existing {
    match outcome_of(existing) {
        Outcome::Failed if recording == Recording::Act => Existing::RetryAfterFailure,
        Outcome::Pending if has_live_actor(existing, abandoned_after, now) => {
            Existing::InProgressElsewhere
        }
        Outcome::Pending => Existing::TakeOver,
        _ => Existing::Finished,
    }
}

/// Whether `fresh` (the batch as it is now, observed as `observed`) still calls for the heal
/// named `id` (its attempt `attempt`): it is still stalled in the episode that id names.
pub fn still_calls_for(
    fresh: &PredictionBatch,
    observed: Option<&BatchObservation>,
    policy: &StallPolicy,
    id: &str,
    attempt: u32,
    now: Timestamp,
) -> bool {
    match observed.map(|o| decide(o, policy, now)) {
        Some(Verdict::Stalled(stall)) => {
            healing_id_of(fresh, &stall, Recording::Act, attempt) == id
        }
        _ => false,
    }
}

/// The attempt an event of this module's intent records (`details.attempt`; 1 for events
/// recorded before attempts were counted).
pub fn attempt_of(event: &HealingEvent) -> u32 {
    event
        .spec
        .details
        .as_ref()
        .and_then(|d| d.get("attempt"))
        .and_then(serde_json::Value::as_u64)
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(1)
}

/// How the action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Acted {
    /// The batch carries this heal's id: applied by this call, or by an earlier one whose
    /// answer was lost (a Commit reply that never came). Only the actor holding the intent
    /// acts under an id, so either way the heal is this actor's, with all that follows it.
    Applied,
    /// The batch changed in a way that no longer calls for this heal.
    Superseded,
}

/// A Kubernetes Event to publish on the batch with an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub warning: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: false,
            reason,
            message: message.into(),
        }
    }

    fn warning(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            warning: true,
            reason,
            message: message.into(),
        }
    }
}

/// An outcome to record: the event's status, and the Event that tells it (None: another
/// actor tells it).
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeRecord {
    pub status: HealingEventStatus,
    pub note: Option<Note>,
}

/// What the batch looks like after the heal (the original's fields).
pub fn after_state(stall: &Stall) -> serde_json::Value {
    after_state_with(completion_reason(stall))
}

fn after_state_with(reason: String) -> serde_json::Value {
    json!({
        "is_complete": true,
        "auto_completed": true,
        "auto_completion_reason": reason,
    })
}

/// The reason written into a healed batch (and its after_state).
pub fn completion_reason(stall: &Stall) -> String {
    reason_text(stall.progress.percent, stall.stalled_for.as_secs() / 60)
}

fn reason_text(percent: f64, minutes: i64) -> String {
    format!("Stalled at {percent:.1}% for {minutes} minutes")
}

/// The root cause of a heal whose batch was completed but whose consolidation request
/// failed: the predictions were not consolidated.
pub const CONSOLIDATION_FAILED: &str = "consolidation_failed";

/// The outcome of a heal that does not act (dry-run, skipped); None for [`Recording::Act`].
pub fn not_acting(
    recording: Recording,
    spec: &HealingEventSpec,
    now: Timestamp,
) -> Option<OutcomeRecord> {
    let (message, note) = match recording {
        Recording::Act => return None,
        Recording::DryRun => ("dry-run: nothing changed".to_owned(), None),
        Recording::Skip { reason, .. } => (
            format!("skipped: {reason}"),
            Some(Note::warning(
                "HealSkipped",
                format!("the batch is stalled, but {BATCH_CLEANUP} heals are skipped: {reason}"),
            )),
        ),
    };
    Some(OutcomeRecord {
        status: verify::finished(spec, Outcome::Skipped, &message, None, now),
        note,
    })
}

/// The status of a heal whose action applied, until the batch is read back: `after` is its
/// after_state (with the consolidation request's answer, when one was made), kept for the
/// verified outcome.
pub fn applied(after: serde_json::Value, verify_by: Timestamp) -> HealingEventStatus {
    verify::verifying("batch marked complete; reading it back", after, verify_by)
}

/// The outcome of a heal whose batch read back complete with its healing id at `seen`:
/// Succeeded, unless the consolidation request that followed it failed (`after` says), which
/// is the heal's failure: the batch is complete, its predictions are not consolidated.
pub fn verified(
    spec: &HealingEventSpec,
    message: &str,
    after: Option<serde_json::Value>,
    seen: Timestamp,
) -> OutcomeRecord {
    let consolidation = after.as_ref().and_then(|a| a.get("consolidation"));
    let refused = consolidation
        .and_then(|c| c.get("requested"))
        .and_then(serde_json::Value::as_bool)
        == Some(false);
    if refused {
        let error = consolidation
            .and_then(|c| c.get("error"))
            .and_then(serde_json::Value::as_str)
            .unwrap_or("no answer");
        let message =
            format!("the batch was completed, but consolidating its predictions failed: {error}");
        return OutcomeRecord {
            status: verify::ineffective(
                spec,
                CONSOLIDATION_FAILED.to_owned(),
                &message,
                after,
                seen,
            ),
            note: Some(Note::warning("ConsolidationFailed", message)),
        };
    }
    OutcomeRecord {
        status: verify::healed(spec, message, after, seen),
        note: Some(Note::normal("AutoCompleted", spec.trigger_reason.clone())),
    }
}

/// The message of a heal verified by its own actor.
pub const READ_BACK: &str = "batch marked complete, and read back complete with this heal's id";

/// The outcome of an action the batch's own progress overtook.
pub fn superseded(spec: &HealingEventSpec, now: Timestamp) -> OutcomeRecord {
    let message = "the batch progressed before the heal (a late completion wins); nothing was done";
    OutcomeRecord {
        status: verify::finished(spec, Outcome::Superseded, message, None, now),
        note: Some(Note::normal("HealSuperseded", message)),
    }
}

/// The outcome of a heal that applied, whose batch read back without it: its workers wrote
/// over the completion (their report wins), so the heal did not hold.
pub fn not_held(spec: &HealingEventSpec, now: Timestamp) -> OutcomeRecord {
    let message = "the batch was marked complete, but read back without this heal (its workers \
                   wrote over it); their report stands";
    OutcomeRecord {
        status: verify::finished(spec, Outcome::Superseded, message, None, now),
        note: Some(Note::normal("HealSuperseded", message)),
    }
}

/// The outcome of an action that failed with `error`.
pub fn action_failed(error: &str, spec: &HealingEventSpec, now: Timestamp) -> OutcomeRecord {
    let message = format!("completing the batch failed: {error}");
    OutcomeRecord {
        status: verify::finished(spec, Outcome::Failed, &message, None, now),
        note: Some(Note::warning("HealFailed", message)),
    }
}

/// What the batch, read again, says of a heal whose intent is still without an outcome when
/// its actor's time is up ([`super::unfinished`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unfinished {
    /// The batch carries the heal's id: the action applied, and its actor stopped before
    /// recording it (or before what follows a heal: consolidation, the AutoCompleted Event).
    Applied,
    /// The batch is still stalled in the episode the heal names: the action did not apply,
    /// and the batch reconciler takes the heal over (one event for the stall).
    StillCalledFor,
    /// The batch moved on (progressed, completed by its workers) without the heal's id:
    /// the action never applied, and nothing calls for it now.
    Superseded,
    /// The batch is gone, or its name belongs to a new object: nothing can tell.
    Gone,
    /// The batch still calls for the heal, but no take-over came within
    /// [`TAKE_OVER_WAIT`] bounds (the policy turned dry-run, the type was paused or its
    /// circuit opened since): the intent is closed, and the next heal records its own.
    NotTakenOver,
}

/// Why a heal judged [`Unfinished::Gone`] is closed as abandoned.
pub const BATCH_GONE: &str =
    "its actor stopped before recording the outcome, and the batch is gone";

/// Why a heal judged [`Unfinished::NotTakenOver`] is closed as abandoned.
pub const NOT_TAKEN_OVER: &str = "its actor stopped before acting, and no take-over came (the \
    policy turned dry-run, the type was paused or its circuit opened since)";

/// How many abandonment periods an intent whose batch still calls for it waits for the
/// batch reconciler to take it over before it is closed as abandoned.
pub const TAKE_OVER_WAIT: i32 = 6;

/// What `batch` (the object named by the event's target, read now, and `observed` of it)
/// says of the unfinished heal `event`, whose actor counts as stopped after
/// `abandoned_after`.
pub fn unfinished_heal(
    event: &HealingEvent,
    batch: Option<&PredictionBatch>,
    observed: Option<&BatchObservation>,
    policy: &StallPolicy,
    abandoned_after: SignedDuration,
    running_since: Timestamp,
    now: Timestamp,
) -> Unfinished {
    let id = event.name_any();
    let Some(batch) =
        batch.filter(|b| event.spec.target.uid.is_none() || b.uid() == event.spec.target.uid)
    else {
        return Unfinished::Gone;
    };
    if super::batch_status::healed_by(batch).as_deref() == Some(id.as_str()) {
        Unfinished::Applied
    } else if still_calls_for(batch, observed, policy, &id, attempt_of(event), now) {
        // Counted from this controller's start when that is later: the time no controller ran
        // (a crash loop, a rollout) is not a take-over that failed to come.
        // (An object not yet stored has no creation time: it counts as just created.)
        let waiting_since = event
            .creation_timestamp()
            .map_or(now, |c| c.0)
            .max(running_since);
        let waited = now.duration_since(waiting_since) >= abandoned_after * TAKE_OVER_WAIT;
        if !waited {
            Unfinished::StillCalledFor
        } else {
            Unfinished::NotTakenOver
        }
    } else {
        Unfinished::Superseded
    }
}

/// The after_state of a heal whose actor stopped after acting: what it recorded while
/// verifying, else what its intent saw (the batch as healed: the stall it had is in
/// `before_state`). Whether consolidation still has to be asked for: only when the actor
/// recorded no after_state (it stopped before asking, or before recording the answer).
pub fn recovered_after_state(event: &HealingEvent) -> (serde_json::Value, bool) {
    if let Some(after) = event.status.as_ref().and_then(|s| s.after_state.clone()) {
        return (after, false);
    }
    let before = event.spec.before_state.as_ref();
    let field = |name: &str| before.and_then(|b| b.get(name));
    let percent = field("completion_percent")
        .and_then(|v| v.as_f64())
        .unwrap_or_default();
    let minutes = field("stall_minutes")
        .and_then(|v| v.as_i64())
        .unwrap_or_default();
    (after_state_with(reason_text(percent, minutes)), true)
}

/// The message of a heal verified by the outbox's settling (its actor stopped first).
pub const RECOVERED: &str = "batch marked complete (its actor stopped before recording it)";

/// The outcome of a heal whose actor stopped before acting, on a batch that then moved on
/// without it.
pub fn superseded_unfinished(event: &HealingEvent, now: Timestamp) -> OutcomeRecord {
    let message = "its actor stopped before acting, and the batch then moved on without the \
                   heal (progressed or completed by its workers); nothing was done";
    OutcomeRecord {
        status: verify::finished(&event.spec, Outcome::Superseded, message, None, now),
        note: Some(Note::normal("HealSuperseded", message)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::HealingPolicySpec;
    use crate::decide::stall::BatchObservation;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// A status-source batch, 46 of 50 done, last progress at 10:00.
    fn batch() -> PredictionBatch {
        serde_json::from_value(json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
            "metadata": {"name": "b1", "namespace": "pipeline", "uid": "u-1",
                         "creationTimestamp": "2026-11-24T09:00:00Z"},
            "spec": {"batchId": "batch_1", "gameDate": "2026-11-24", "source": "status",
                     "expectedPlayers": 50},
            "status": {"report": {"completed": 46, "lastProgressTime": "2026-11-24T10:00:00Z",
                                  "failing": {"feature_store_timeout": 4}}},
        }))
        .unwrap()
    }

    fn policy() -> StallPolicy {
        StallPolicy::from(&HealingPolicySpec::default())
    }

    /// `batch` with every player done.
    fn completed(batch: &PredictionBatch) -> PredictionBatch {
        let mut done = batch.clone();
        let status = done.status.as_mut().unwrap();
        status.report.as_mut().unwrap().completed = 50;
        done
    }

    fn observation(batch: &PredictionBatch) -> BatchObservation {
        crate::source::report::observe(batch).unwrap()
    }

    fn decision(batch: &PredictionBatch, now: Timestamp) -> RecordedDecision {
        RecordedDecision {
            policy_name: None,
            policy: policy(),
            observation: observation(batch),
            at: now,
        }
    }

    fn stall(batch: &PredictionBatch, now: Timestamp) -> Stall {
        match decide(&observation(batch), &policy(), now) {
            Verdict::Stalled(stall) => stall,
            other => panic!("not stalled: {other:?}"),
        }
    }

    const NOW: &str = "2026-11-24T10:20:00Z";

    #[test]
    fn each_recording_and_attempt_has_an_id_of_its_own() {
        let b = batch();
        let s = stall(&b, t(NOW));
        let skip = Recording::Skip {
            reason: "circuit_open",
            episode: "1",
        };
        let ids = [
            healing_id_of(&b, &s, Recording::Act, 1),
            healing_id_of(&b, &s, Recording::Act, 2),
            healing_id_of(&b, &s, Recording::DryRun, 1),
            healing_id_of(&b, &s, skip, 1),
            healing_id_of(
                &b,
                &s,
                Recording::Skip {
                    reason: "circuit_open",
                    episode: "2",
                },
                1,
            ),
        ];
        let distinct: std::collections::BTreeSet<_> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{ids:?}");
        // The same stall decided again later names the same heal.
        let later = stall(&b, t("2026-11-24T10:25:00Z"));
        assert_eq!(healing_id_of(&b, &later, Recording::Act, 1), ids[0]);
    }

    #[test]
    fn the_gate_and_dry_run_choose_the_recording() {
        let skip = Gate::Skip {
            reason: "paused",
            episode: "e".into(),
            until: None,
        };
        let cases = [
            (Gate::Act, false, Recording::Act),
            (Gate::Trial, false, Recording::Act),
            (
                skip.clone(),
                false,
                Recording::Skip {
                    reason: "paused",
                    episode: "e",
                },
            ),
            (Gate::Act, true, Recording::DryRun),
            (skip.clone(), true, Recording::DryRun),
        ];
        for (gate, dry_run, expected) in &cases {
            assert_eq!(
                recording_for(gate, *dry_run),
                *expected,
                "{gate:?} {dry_run}"
            );
        }
    }

    #[test]
    fn attempts_follow_failures_round_after_round() {
        let b = batch();
        let s = stall(&b, t(NOW));
        let ids: Vec<String> = (1..=5)
            .map(|a| healing_id_of(&b, &s, Recording::Act, a))
            .collect();
        // The first `failed` attempts are known to have failed.
        let known = |failed: usize| {
            let ids = &ids;
            move |candidate: &str| {
                ids[..failed]
                    .iter()
                    .any(|id| id == candidate)
                    .then_some(Outcome::Failed)
            }
        };
        assert_eq!(next_attempt(&b, &s, Recording::Act, known(0)), 1);
        assert_eq!(next_attempt(&b, &s, Recording::Act, known(1)), 2);
        assert_eq!(
            next_attempt(&b, &s, Recording::Act, known(4)),
            5,
            "a second round"
        );
        // A succeeded first attempt is the heal: no second.
        let succeeded = |c: &str| (c == ids[0]).then_some(Outcome::Succeeded);
        assert_eq!(next_attempt(&b, &s, Recording::Act, succeeded), 1);
        assert_eq!(next_attempt(&b, &s, Recording::DryRun, known(2)), 1);
    }

    #[test]
    fn the_intent_records_the_stall_and_what_will_be_done() {
        let b = batch();
        let s = stall(&b, t(NOW));
        let event = intent(&b, &s, &decision(&b, t(NOW)), Recording::Act, 2);
        assert_eq!(event.name_any(), healing_id_of(&b, &s, Recording::Act, 2));
        assert_eq!(event.spec.healing_id, event.name_any());
        assert_eq!(event.metadata.namespace.as_deref(), Some("pipeline"));
        assert_eq!(event.spec.healing_type, BATCH_CLEANUP);
        assert_eq!(event.spec.root_cause, "feature_store_timeout");
        assert_eq!(
            event.spec.action_taken,
            "Marked the batch complete at 92.0%"
        );
        assert!(!event.spec.dry_run);
        assert_eq!(
            event.spec.threshold_time.as_ref().map(|t| t.0),
            Some(t("2026-11-24T10:15:00Z"))
        );
        let before = event.spec.before_state.unwrap();
        assert_eq!(before["completed_players"], 46);
        assert_eq!(before["stall_minutes"], 20);
        let details = event.spec.details.unwrap();
        assert_eq!(details["attempt"], 2);
        // The decision is recorded whole, so it can be replayed with another policy.
        let recorded: RecordedDecision = serde_json::from_value(details["decision"].clone())
            .expect("the recorded decision reads back");
        assert_eq!(recorded, decision(&b, t(NOW)));
        assert_eq!(recorded.verdict(), Verdict::Stalled(s.clone()));
        let dry = intent(&b, &s, &decision(&b, t(NOW)), Recording::DryRun, 1);
        assert!(dry.spec.dry_run);
        assert!(dry.spec.action_taken.contains("dry-run"));
    }

    fn event_with(outcome: Option<Outcome>, created: &str) -> HealingEvent {
        let b = batch();
        let mut event = intent(
            &b,
            &stall(&b, t(NOW)),
            &decision(&b, t(NOW)),
            Recording::Act,
            1,
        );
        event.metadata.creation_timestamp = Some(Time(t(created)));
        event.status = outcome.map(|o| HealingEventStatus {
            outcome: Some(o),
            ..Default::default()
        });
        event
    }

    #[test]
    fn an_existing_intent_is_finished_retried_left_to_its_actor_or_taken_over() {
        let abandoned = SignedDuration::from_secs(30);
        let now = t(NOW);
        let cases = [
            (Some(Outcome::Succeeded), NOW, Existing::Finished),
            (Some(Outcome::Skipped), NOW, Existing::Finished),
            (Some(Outcome::Abandoned), NOW, Existing::Finished),
            // Every failed attempt is followed by another (rounds never end for good).
            (Some(Outcome::Failed), NOW, Existing::RetryAfterFailure),
            (None, "2026-11-24T10:19:50Z", Existing::InProgressElsewhere),
            (
                Some(Outcome::Pending),
                "2026-11-24T10:19:50Z",
                Existing::InProgressElsewhere,
            ),
            (None, "2026-11-24T10:19:00Z", Existing::TakeOver),
        ];
        for (outcome, created, expected) in cases {
            let event = event_with(outcome, created);
            let got = existing_heal(&event, Recording::Act, abandoned, now);
            assert_eq!(got, expected, "{outcome:?} created {created}");
        }
        // A failed dry-run is not retried.
        let failed = event_with(Some(Outcome::Failed), NOW);
        assert_eq!(
            existing_heal(&failed, Recording::DryRun, abandoned, now),
            Existing::Finished
        );
    }

    #[test]
    fn three_attempts_span_a_minute_and_a_new_round_waits_the_stall_threshold() {
        let stall_after = SignedDuration::from_mins(15);
        let waits: Vec<i64> = (1..=7)
            .map(|f| retry_after(f, stall_after).as_secs())
            .collect();
        assert_eq!(waits, [20, 40, 900, 20, 40, 900, 20]);
        assert!(
            waits[..2].iter().sum::<i64>() >= 60,
            "a round spans a minute"
        );

        let failed_at = t("2026-11-24T10:20:00Z");
        let mut previous = event_with(Some(Outcome::Failed), NOW);
        let status = previous.status.as_mut().unwrap();
        status.finished_at = Some(Time(failed_at));
        status.message = Some("completing the batch failed: unavailable".into());
        let wait = |attempt, now: &str| retry_wait(attempt, Some(&previous), stall_after, t(now));
        let retry = wait(2, "2026-11-24T10:20:05Z").unwrap();
        assert_eq!(retry.due, t("2026-11-24T10:20:20Z"));
        assert_eq!(retry.failures, 1);
        assert!(retry.last_error.ends_with("unavailable"));
        assert_eq!(wait(2, "2026-11-24T10:20:20Z"), None, "due");
        assert_eq!(
            wait(4, "2026-11-24T10:21:00Z").map(|r| r.due),
            Some(t("2026-11-24T10:35:00Z")),
            "after a round, the stall threshold"
        );
        assert_eq!(retry_wait(1, None, stall_after, failed_at), None);
    }

    #[test]
    fn each_way_an_action_ends_records_its_outcome_and_its_event() {
        let b = batch();
        let s = stall(&b, t(NOW));
        let spec = intent(&b, &s, &decision(&b, t(NOW)), Recording::Act, 1).spec;
        let seen = t("2026-11-24T10:20:02Z");
        let after = after_state(&s);

        let verifying = applied(after.clone(), t("2026-11-24T10:20:30Z"));
        assert_eq!(verifying.outcome, Some(Outcome::Verifying));
        assert!(!Outcome::Verifying.is_final(), "verifying is not an end");
        assert_eq!((verifying.success, verifying.finished_at), (None, None));
        assert_eq!(
            verifying.after_state.as_ref(),
            Some(&after),
            "kept for the end"
        );

        let ok = verified(&spec, READ_BACK, Some(after.clone()), seen);
        assert_eq!(ok.status.outcome, Some(Outcome::Succeeded));
        assert_eq!(ok.status.success, Some(true));
        assert_eq!(ok.note.as_ref().map(|n| n.reason), Some("AutoCompleted"));
        assert_eq!(ok.status.healed_time, Some(MicroTime(seen)));
        // Last progress 10:00, threshold 10:15, detected 10:20, seen healthy 10:20:02.
        assert_eq!(ok.status.time_to_heal_seconds, Some(1202.0));
        assert_eq!(ok.status.time_to_detect_seconds, Some(300.0));
        assert_eq!(ok.status.heal_latency_seconds, Some(302.0));
        assert_eq!(ok.status.root_cause, None, "the intent's cause stands");

        let mut unconsolidated = after.clone();
        unconsolidated["consolidation"] = json!({"requested": false, "error": "HTTP 503"});
        let failed = verified(&spec, READ_BACK, Some(unconsolidated), seen);
        assert_eq!(failed.status.outcome, Some(Outcome::Failed));
        assert_eq!(
            failed.status.root_cause.as_deref(),
            Some(CONSOLIDATION_FAILED)
        );
        assert_eq!(failed.status.healed_time, None);
        assert!(
            failed
                .status
                .message
                .as_deref()
                .unwrap()
                .ends_with("HTTP 503")
        );
        assert_eq!(
            failed.note.as_ref().map(|n| (n.warning, n.reason)),
            Some((true, "ConsolidationFailed"))
        );
        let mut consolidated = after.clone();
        consolidated["consolidation"] = json!({"requested": true, "status": 200});
        let ok = verified(&spec, READ_BACK, Some(consolidated), seen);
        assert_eq!(ok.status.outcome, Some(Outcome::Succeeded));

        for record in [superseded(&spec, seen), not_held(&spec, seen)] {
            assert_eq!(record.status.outcome, Some(Outcome::Superseded));
            assert_eq!(record.status.success, Some(false));
            assert_eq!(
                record.note.as_ref().map(|n| n.reason),
                Some("HealSuperseded")
            );
            assert_eq!(
                record.status.time_to_heal_seconds, None,
                "nothing was healed"
            );
            assert_eq!(record.status.time_to_detect_seconds, Some(300.0));
        }
        let failed = action_failed("firestore: unavailable", &spec, seen);
        assert_eq!(failed.status.outcome, Some(Outcome::Failed));
        assert_eq!(
            failed.note.as_ref().map(|n| (n.warning, n.reason)),
            Some((true, "HealFailed"))
        );
        assert!(
            failed
                .status
                .message
                .unwrap()
                .ends_with("firestore: unavailable")
        );

        assert!(not_acting(Recording::Act, &spec, seen).is_none());
        let dry = not_acting(Recording::DryRun, &spec, seen).unwrap();
        assert_eq!(
            (dry.status.outcome, dry.note),
            (Some(Outcome::Skipped), None)
        );
        let skipped = Recording::Skip {
            reason: "circuit_open",
            episode: "1",
        };
        let skip = not_acting(skipped, &spec, seen).unwrap();
        assert_eq!(skip.status.outcome, Some(Outcome::Skipped));
        assert_eq!(skip.note.map(|n| n.reason), Some("HealSkipped"));
    }

    #[test]
    fn a_batch_that_progressed_or_finished_no_longer_calls_for_the_heal() {
        let b = batch();
        let now = t(NOW);
        let id = healing_id_of(&b, &stall(&b, now), Recording::Act, 1);
        let calls_at = |attempt: u32| {
            let observed = crate::source::report::observe(&b);
            still_calls_for(&b, observed.as_ref(), &policy(), &id, attempt, now)
        };
        assert!(calls_at(1));
        let calls = |fresh: &PredictionBatch| {
            still_calls_for(
                fresh,
                crate::source::report::observe(fresh).as_ref(),
                &policy(),
                &id,
                1,
                now,
            )
        };
        assert!(calls(&b), "the same stall still calls for it");
        let mut progressed = b.clone();
        let report = progressed.status.as_mut().unwrap().report.as_mut().unwrap();
        report.completed = 47;
        report.last_progress_time = Some(MicroTime(t("2026-11-24T10:19:00Z")));
        assert!(
            !calls(&progressed),
            "a new episode (or no stall) is another heal"
        );
        let done = completed(&b);
        assert!(!calls(&done));
        assert!(!still_calls_for(&b, None, &policy(), &id, 1, now));
        assert!(!calls_at(2), "another attempt's id is another heal");
    }

    #[test]
    fn an_outcome_recovered_after_a_restart_is_verified_from_what_its_actor_recorded() {
        let event = event_with(None, "2026-11-24T10:15:01Z");
        let (after, consolidate) = recovered_after_state(&event);
        assert!(
            consolidate,
            "its actor recorded nothing: consolidation is still to ask"
        );
        assert_eq!(
            after["auto_completion_reason"],
            "Stalled at 92.0% for 20 minutes"
        );
        let record = verified(
            &event.spec,
            RECOVERED,
            Some(after),
            t("2026-11-24T10:21:00Z"),
        );
        assert_eq!(record.status.outcome, Some(Outcome::Succeeded));
        assert_eq!(record.status.heal_latency_seconds, Some(360.0));
        assert_eq!(record.status.time_to_heal_seconds, Some(1260.0));
        assert_eq!(record.note.map(|n| n.reason), Some("AutoCompleted"));

        // An actor that stopped while verifying recorded the after_state, consolidation's
        // answer included: that is what the outcome says, and nothing is asked again.
        let mut verifying = event.clone();
        let recorded = json!({"is_complete": true, "consolidation": {"requested": false, "error": "HTTP 500"}});
        verifying.status = Some(applied(recorded.clone(), t("2026-11-24T10:20:30Z")));
        assert_eq!(recovered_after_state(&verifying), (recorded.clone(), false));
        let record = verified(
            &verifying.spec,
            RECOVERED,
            Some(recorded),
            t("2026-11-24T10:21:00Z"),
        );
        assert_eq!(
            record.status.root_cause.as_deref(),
            Some(CONSOLIDATION_FAILED)
        );

        let gave_up = superseded_unfinished(&event, t("2026-11-24T10:16:00Z"));
        assert_eq!(gave_up.status.outcome, Some(Outcome::Superseded));
        assert_eq!(gave_up.status.success, Some(false));
    }

    #[test]
    fn an_unfinished_heal_is_judged_by_the_batch_as_it_is_now() {
        let b = batch();
        let now = t(NOW);
        let intent_of =
            |b: &PredictionBatch| intent(b, &stall(b, now), &decision(b, now), Recording::Act, 1);
        let event = intent_of(&b);
        let abandoned = SignedDuration::from_secs(30);
        let judge_at = |fresh: Option<&PredictionBatch>, at: Timestamp| {
            let observed = fresh.and_then(crate::source::report::observe);
            unfinished_heal(
                &event,
                fresh,
                observed.as_ref(),
                &policy(),
                abandoned,
                Timestamp::MIN,
                at,
            )
        };
        let judge = |fresh: Option<&PredictionBatch>| judge_at(fresh, now);
        assert_eq!(judge(Some(&b)), Unfinished::StillCalledFor);
        // Not taken over within six abandonment periods of its creation: closed.
        let created = t("2026-11-24T10:20:00Z");
        let mut event = event.clone();
        event.metadata.creation_timestamp = Some(Time(created));
        let late = created + SignedDuration::from_secs(180);
        let observed = crate::source::report::observe(&b);
        let judged_since = |running_since, at| {
            unfinished_heal(
                &event,
                Some(&b),
                observed.as_ref(),
                &policy(),
                abandoned,
                running_since,
                at,
            )
        };
        let judged = |at| judged_since(Timestamp::MIN, at);
        assert_eq!(
            judged(late - SignedDuration::from_secs(1)),
            Unfinished::StillCalledFor
        );
        assert_eq!(judged(late), Unfinished::NotTakenOver);
        // A controller that started later waits its own six periods before closing it.
        let restarted = late - SignedDuration::from_secs(10);
        assert_eq!(judged_since(restarted, late), Unfinished::StillCalledFor);
        assert_eq!(
            judged_since(restarted, restarted + SignedDuration::from_secs(180)),
            Unfinished::NotTakenOver
        );
        let mut healed = b.clone();
        healed.status.as_mut().unwrap().last_healing_event = Some(event.name_any());
        assert_eq!(judge(Some(&healed)), Unfinished::Applied);
        let done = completed(&b);
        assert_eq!(judge(Some(&done)), Unfinished::Superseded);
        assert_eq!(judge(None), Unfinished::Gone);
        let mut replaced = b.clone();
        replaced.metadata.uid = Some("u-2".into());
        assert_eq!(judge(Some(&replaced)), Unfinished::Gone);
    }
}
