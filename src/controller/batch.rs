//! The PredictionBatch reconciler: observe -> decide -> (record intent -> act -> record
//! outcome) -> write status -> requeue for the exact instant the verdict can next change.
//!
//! Healing is safe against crashes, retries and a second replica:
//! - the HealingEvent is created first, named by a deterministic healing id, so a second
//!   attempt at the same heal finds it instead of recording again;
//! - the action carries a precondition (the batch's resourceVersion), and it writes the
//!   healing id into the batch along with the completion, so a conflict can tell "a worker
//!   reported progress first" (the heal is superseded) from "this heal already happened";
//! - a batch healed by an event whose outcome was never recorded (a crash between action and
//!   record) has the outcome recorded on the next reconcile.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{debug, info, warn};

use super::Context;
use super::health::{self, Gate};
use crate::api::batch::{BatchSource, BatchState};
use crate::api::event::{BATCH_CLEANUP, HealingEventSpec, HealingEventStatus, Outcome, TargetRef};
use crate::api::{HealingEvent, PredictionBatch};
use crate::decide::batch_status::{Summary, awaiting_report, cleanup_at, finished_at, summarize};
use crate::decide::conditions;
use crate::decide::naming::healing_id;
use crate::decide::stall::{Stall, StallPolicy, Verdict, decide};
use crate::error::{Error, KubeResultExt};
use crate::sink::consolidation::Consolidation;
use crate::sink::firestore_heal::{AutoCompletion, HealWrite};
use crate::source::firestore_doc::{fields_of, parse as parse_doc, proto_time};
use crate::source::report::observe;
use firestore::errors::FirestoreError;

pub async fn reconcile(batch: Arc<PredictionBatch>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(&PredictionBatch::kind(&()));
    ctx.policies.synced().await?;
    let ns = batch.namespace().unwrap_or_default();
    let policy_spec = ctx.policies.spec_for(&ns);
    let policy = StallPolicy::from(&policy_spec);
    let now = Timestamp::now();
    let status = batch.status.as_ref();
    // Which heal completed the batch: recorded on the object (status source) or in the
    // document (Firestore source, mirrored into the report).
    let healed_by = status
        .and_then(|s| s.last_healing_event.clone())
        .or_else(|| {
            status
                .and_then(|s| s.report.as_ref())
                .and_then(|r| r.auto_completed_by.clone())
        });
    if let Some(problems) = status.and_then(|s| s.source_error.clone()) {
        let verdict = Verdict::Invalid { reason: problems };
        write_status(&ctx, &batch, &summarize(&verdict, None), None, now).await?;
        return Ok(Action::await_change());
    }
    let Some(observation) = observe(&batch) else {
        // The mirror writes a Firestore batch's first report right after creating it (and
        // retries until it has): showing "awaiting" in between would only race that write.
        if batch.spec.source == BatchSource::Status {
            write_status(&ctx, &batch, &awaiting_report(batch.spec.source), None, now).await?;
        }
        return Ok(Action::await_change());
    };
    let verdict = decide(&observation, &policy, now);

    if let Some(id) = &healed_by {
        // Recover from a crash between the action and the record of its outcome.
        finish_pending_event(&ctx, &ns, id, &batch).await?;
    }
    let mut look_again_at = None;
    if let Verdict::Stalled(stall) = &verdict {
        match heal(&ctx, &batch, stall, &policy, policy_spec.dry_run, now).await? {
            // The batch changed (completed, or progressed first): its watch event reconciles.
            HealProgress::Finished(Outcome::Succeeded | Outcome::Superseded) => {
                return Ok(Action::await_change());
            }
            // Another actor is mid-heal: look again once it would count as abandoned.
            HealProgress::InProgressElsewhere => {
                return Ok(Action::requeue(ctx.config.abandoned_heal_after));
            }
            HealProgress::RetryAfterFailure => return Ok(Action::requeue(HEAL_RETRY_AFTER)),
            HealProgress::Skipped { until } => look_again_at = until,
            // Dry-run, or a heal that ended earlier: show the stall.
            HealProgress::Finished(_) | HealProgress::FinishedEarlier => {}
        }
    }
    let summary = summarize(&verdict, healed_by.as_deref());
    let previous_finish = status.and_then(|s| s.finished_at.as_ref()).map(|t| t.0);
    let finished = finished_at(summary.state, previous_finish, now);
    let cleanup = cleanup_at(batch.spec.source, finished, policy_spec.retention.as_span());
    if cleanup.is_some_and(|at| now >= at) {
        remove_mirror(&ctx, &batch).await?;
        return Ok(Action::await_change());
    }
    write_status(&ctx, &batch, &summary, finished, now).await?;
    let next = [verdict.next_check(), cleanup, look_again_at]
        .into_iter()
        .flatten()
        .min();
    Ok(requeue_for(next, now))
}

/// Whether the batch's status has these reconciler-owned fields already, and no other
/// reconciler-owned field: writing them again would change nothing.
fn shows_already(batch: &PredictionBatch, fields: &serde_json::Value) -> bool {
    const OWNED: [&str; 8] = [
        "state",
        "expected",
        "completed",
        "completionPercent",
        "stallAt",
        "finishedAt",
        "observedGeneration",
        "conditions",
    ];
    let Ok(current) = serde_json::to_value(&batch.status) else {
        return false;
    };
    OWNED
        .iter()
        .all(|key| current.get(key).filter(|v| !v.is_null()) == fields.get(key))
}

/// Deletes a finished mirrored batch (only the object it decided on: uid precondition).
async fn remove_mirror(ctx: &Context, batch: &PredictionBatch) -> Result<(), Error> {
    let batches: Api<PredictionBatch> =
        Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: batch.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    // Gone already, or replaced by a new object of the same name: nothing to remove.
    let deleted = batches
        .delete(&batch.name_any(), &params)
        .await
        .unless_gone("removing the finished mirrored batch")?;
    if deleted.is_some() {
        info!(batch = %batch.name_any(), "finished mirrored batch removed after the retention period");
    }
    Ok(())
}

/// Wake exactly when the verdict can next change (plus a hair, so the decision sees the
/// threshold crossed); otherwise only on a change to the batch or its policy.
fn requeue_for(next: Option<Timestamp>, now: Timestamp) -> Action {
    match next {
        Some(at) => {
            let wait = at.duration_since(now).max(jiff::SignedDuration::ZERO);
            let wait = Duration::try_from(wait).unwrap_or_default() + Duration::from_millis(5);
            Action::requeue(wait)
        }
        None => Action::await_change(),
    }
}

/// The identity a heal is keyed by: the Firestore document, or the object's uid.
fn identity(batch: &PredictionBatch) -> String {
    match (&batch.spec.source, &batch.spec.document_path) {
        (BatchSource::Firestore, Some(path)) => path.clone(),
        _ => batch.uid().unwrap_or_else(|| batch.name_any()),
    }
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

/// The healing id of `recording` of `stall`: the batch's identity and stall episode, and the
/// attempt (a heal whose action failed is tried again under a new id). Dry-runs and skips
/// have ids of their own, so the heal that follows once the policy or the circuit allows it
/// is not mistaken for one that already happened.
fn healing_id_of(
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

/// The HealingEvent recording `recording` of `stall`, at `attempt` (from 1).
pub fn intent(
    batch: &PredictionBatch,
    stall: &Stall,
    recording: Recording,
    attempt: u32,
    now: Timestamp,
) -> HealingEvent {
    let id = healing_id_of(batch, stall, recording, attempt);
    let dry_run = recording == Recording::DryRun;
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
        dry_run,
        threshold_time: Some(MicroTime(stall.threshold_at)),
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
        })),
    };
    let mut event = HealingEvent::new(&id, spec);
    event.metadata.namespace = batch.namespace();
    event
}

/// Whether the event's action failed (and another attempt may be made).
fn failed(event: &HealingEvent) -> bool {
    event.status.as_ref().and_then(|s| s.outcome) == Some(Outcome::Failed)
}

/// The attempt at healing this stall to make now: after attempts whose action failed, the
/// next one (as the events cache shows them), up to [`HEAL_ATTEMPTS`].
fn next_attempt(
    ctx: &Context,
    batch: &PredictionBatch,
    stall: &Stall,
    recording: Recording,
) -> u32 {
    if recording != Recording::Act {
        return 1;
    }
    let ns = batch.namespace().unwrap_or_default();
    (1..HEAL_ATTEMPTS)
        .find(|attempt| {
            let id = healing_id_of(batch, stall, recording, *attempt);
            !ctx.events
                .get(&ObjectRef::new(&id).within(&ns))
                .is_some_and(|e| failed(&e))
        })
        .unwrap_or(HEAL_ATTEMPTS)
}

/// Whether the event's action has not recorded an outcome yet.
fn is_pending(event: &HealingEvent) -> bool {
    event
        .status
        .as_ref()
        .and_then(|s| s.outcome)
        .is_none_or(|o| o == Outcome::Pending)
}

/// A Pending event younger than `abandoned_heal_after` belongs to an actor still at work
/// (acting, or recording its outcome); an older one lost its actor to a crash.
fn has_live_actor(ctx: &Context, event: &HealingEvent, now: Timestamp) -> bool {
    let age = event
        .creation_timestamp()
        .map(|t| now.duration_since(t.0))
        .unwrap_or_default();
    age < jiff::SignedDuration::try_from(ctx.config.abandoned_heal_after).unwrap_or_default()
}

/// Where a heal stands after [`heal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealProgress {
    /// This call recorded the outcome.
    Finished(Outcome),
    /// The HealingEvent already has an outcome: nothing more to do.
    FinishedEarlier,
    /// Another actor recorded the intent recently and is presumably acting.
    InProgressElsewhere,
    /// Recorded as skipped (paused type, open circuit); look again at `until`, or on a
    /// change when None.
    Skipped { until: Option<Timestamp> },
    /// This attempt failed earlier; the next attempt is due (after [`HEAL_RETRY_AFTER`]).
    RetryAfterFailure,
}

/// How often a heal retries its action when the batch changed in ways that do not matter
/// (the controller's own status writes, a label) before it gives up for this reconcile.
const ACT_ATTEMPTS: usize = 5;
/// Attempts at healing one stall whose action fails (Firestore or the API server
/// unreachable), each recorded under its own healing id; then the stall is left showing.
const HEAL_ATTEMPTS: u32 = 3;
/// How soon the next attempt follows a failed one.
const HEAL_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Intent, action, outcome for a `source: status` batch observed as `batch`.
pub async fn heal(
    ctx: &Context,
    batch: &PredictionBatch,
    stall: &Stall,
    policy: &StallPolicy,
    dry_run: bool,
    now: Timestamp,
) -> Result<HealProgress, Error> {
    // Bookkeeping writes yield to heals in progress (see `bookkeeping`).
    let _in_progress = ctx.bookkeeping.heal_in_progress();
    let ns = batch.namespace().unwrap_or_default();
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), &ns);
    let gate = if dry_run {
        Gate::Act
    } else {
        health::gate(ctx, &ns, BATCH_CLEANUP, now)
    };
    let recording = match (&gate, dry_run) {
        (_, true) => Recording::DryRun,
        (
            Gate::Skip {
                reason, episode, ..
            },
            _,
        ) => Recording::Skip { reason, episode },
        _ => Recording::Act,
    };
    // A skipped heal is looked at again when the gate may open: `until`, else on a change.
    let skipped = match &gate {
        Gate::Skip { until, .. } => Some(HealProgress::Skipped { until: *until }),
        _ => None,
    };
    let attempt = next_attempt(ctx, batch, stall, recording);
    let event = intent(batch, stall, recording, attempt, now);
    let id = event.name_any();
    if gate == Gate::Trial && !health::claim_trial(ctx, &ns, BATCH_CLEANUP, &id, now).await? {
        info!(batch = %batch.name_any(), healing_id = %id, "another heal claimed the circuit's trial");
        return Ok(HealProgress::InProgressElsewhere);
    }
    let created = events
        .create(&PostParams::default(), &event)
        .await
        .unless_conflict("recording the heal's intent")?;
    match created {
        Some(_) => {
            info!(batch = %batch.name_any(), healing_id = %id, root_cause = %stall.root_cause, ?recording, "stall detected; healing recorded")
        }
        None => {
            let existing = events
                .get(&id)
                .await
                .at("reading the heal's existing HealingEvent")?;
            if !is_pending(&existing) {
                // This attempt failed before the cache showed it: the next one is due.
                if recording == Recording::Act && failed(&existing) && attempt < HEAL_ATTEMPTS {
                    return Ok(HealProgress::RetryAfterFailure);
                }
                return Ok(skipped.unwrap_or(HealProgress::FinishedEarlier));
            }
            if has_live_actor(ctx, &existing, now) {
                info!(batch = %batch.name_any(), healing_id = %id, "another actor is carrying out this heal");
                return Ok(HealProgress::InProgressElsewhere);
            }
            info!(batch = %batch.name_any(), healing_id = %id, "taking over an abandoned heal");
        }
    }
    let not_acting = match recording {
        Recording::Act => None,
        Recording::DryRun => Some(("dry-run: nothing changed".to_owned(), None)),
        Recording::Skip { reason, .. } => Some((
            format!("skipped: {reason}"),
            Some((
                EventType::Warning,
                "HealSkipped",
                format!("the batch is stalled, but {BATCH_CLEANUP} heals are skipped: {reason}"),
            )),
        )),
    };
    if let Some((message, note)) = not_acting {
        let status = outcome_status(Outcome::Skipped, false, &message, None, stall.threshold_at);
        record_outcome(ctx, batch, &id, status, note).await?;
        return Ok(skipped.unwrap_or(HealProgress::Finished(Outcome::Skipped)));
    }

    let acted = match batch.spec.source {
        BatchSource::Status => act_on_status(ctx, batch, &id, policy).await,
        BatchSource::Firestore => act_on_firestore(ctx, batch, stall, &id, policy, now).await,
    };
    let mut after = after_state(stall);
    if matches!(acted, Ok(Acted::Applied))
        && let Some(consolidation) = &ctx.config.consolidation
    {
        // Only the actor whose action applied asks, so two replicas never both do.
        after["consolidation"] = consolidate(ctx, consolidation, batch, &id).await?;
    }
    let completed = outcome_status(
        Outcome::Succeeded,
        true,
        "batch marked complete",
        Some(after),
        stall.threshold_at,
    );
    let (status, note) = match acted {
        Ok(Acted::Applied) => (
            completed,
            Some((
                EventType::Normal,
                "AutoCompleted",
                stall.trigger_reason.clone(),
            )),
        ),
        // Another replica's identical action won; it publishes the Kubernetes Event.
        Ok(Acted::AppliedElsewhere) => (completed, None),
        Ok(Acted::Superseded) => {
            let message =
                "the batch progressed before the heal (a late completion wins); nothing was done";
            (
                outcome_status(
                    Outcome::Superseded,
                    false,
                    message,
                    None,
                    stall.threshold_at,
                ),
                Some((EventType::Normal, "HealSuperseded", message.to_owned())),
            )
        }
        Err(e) => {
            let message = format!("completing the batch failed: {e}");
            let status = outcome_status(Outcome::Failed, false, &message, None, stall.threshold_at);
            record_outcome(
                ctx,
                batch,
                &id,
                status,
                Some((EventType::Warning, "HealFailed", message)),
            )
            .await?;
            return Err(e);
        }
    };
    let outcome = status.outcome.unwrap_or(Outcome::Pending);
    record_outcome(ctx, batch, &id, status, note).await?;
    Ok(HealProgress::Finished(outcome))
}

/// Asks the pipeline to consolidate a completed batch. A failure does not undo the heal: it
/// is recorded in the event's after_state and as a Warning Event for someone to follow up.
async fn consolidate(
    ctx: &Context,
    consolidation: &Consolidation,
    batch: &PredictionBatch,
    id: &str,
) -> Result<serde_json::Value, Error> {
    let game_date = batch.spec.game_date.map(|d| d.to_string());
    let result = consolidation
        .request(
            &batch.spec.batch_id,
            game_date.as_deref(),
            batch.spec.correlation_id.as_deref(),
            id,
        )
        .await;
    match result {
        Ok(code) => Ok(json!({"requested": true, "status": code})),
        Err(error) => {
            warn!(batch = %batch.name_any(), healing_id = %id, %error, "consolidation request failed");
            let event = Event {
                type_: EventType::Warning,
                reason: "ConsolidationFailed".into(),
                note: Some(format!(
                    "the batch was completed but consolidating it failed: {error} (HealingEvent {id})"
                )),
                action: "Consolidate".into(),
                secondary: None,
            };
            ctx.recorder
                .publish(&event, &batch.object_ref(&()))
                .await
                .at("publishing the ConsolidationFailed Event")?;
            Ok(json!({"requested": false, "error": error.to_string()}))
        }
    }
}

/// What an action did.
enum Acted {
    Applied,
    /// The same heal (same healing id) was applied by another actor.
    AppliedElsewhere,
    /// The batch changed in a way that no longer calls for this heal.
    Superseded,
}

/// Whether `fresh`, the batch as it is now, still calls for the heal named `id`.
fn still_calls_for(fresh: &PredictionBatch, policy: &StallPolicy, id: &str) -> bool {
    match observe(fresh).map(|o| decide(&o, policy, Timestamp::now())) {
        Some(Verdict::Stalled(stall)) => (1..=HEAL_ATTEMPTS)
            .any(|attempt| healing_id_of(fresh, &stall, Recording::Act, attempt) == id),
        _ => false,
    }
}

/// Completes a `source: status` batch on the object itself, recording which heal did it,
/// only if the object is still the version the decision was made on.
async fn act_on_status(
    ctx: &Context,
    batch: &PredictionBatch,
    id: &str,
    policy: &StallPolicy,
) -> Result<Acted, Error> {
    let batches: Api<PredictionBatch> =
        Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
    let mut observed = batch.clone();
    for _ in 0..ACT_ATTEMPTS {
        let patch = json!({
            "metadata": {"resourceVersion": observed.resource_version()},
            "status": {"state": BatchState::AutoCompleted, "lastHealingEvent": id},
        });
        let applied = batches
            .patch_status(
                &batch.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .unless_conflict("completing the batch")?;
        match applied {
            Some(_) => return Ok(Acted::Applied),
            None => {
                let current = batches
                    .get(&batch.name_any())
                    .await
                    .at("reading the batch after a conflict")?;
                if current
                    .status
                    .as_ref()
                    .and_then(|s| s.last_healing_event.as_deref())
                    == Some(id)
                {
                    return Ok(Acted::AppliedElsewhere);
                }
                // A change that is not progress (a label, our own status write): try again.
                if !still_calls_for(&current, policy, id) {
                    return Ok(Acted::Superseded);
                }
                observed = current;
            }
        }
    }
    Ok(Acted::Superseded)
}

/// Completes a `source: firestore` batch in its document, only while the document is still
/// at the update time observed (Firestore's precondition), so a late completion wins.
async fn act_on_firestore(
    ctx: &Context,
    batch: &PredictionBatch,
    stall: &Stall,
    id: &str,
    policy: &StallPolicy,
    now: Timestamp,
) -> Result<Acted, Error> {
    let invalid = |message: &str| Error::Invalid {
        what: format!("batch {}", batch.name_any()),
        message: message.to_owned(),
    };
    let (Some(db), Some(committer)) = (ctx.firestore.as_ref(), ctx.heal_committer()) else {
        return Err(Error::Unconfigured(format!(
            "batch {}: its source is Firestore, but the controller runs without --firestore-project",
            batch.name_any()
        )));
    };
    let path = batch.spec.document_path.as_deref().unwrap_or_default();
    let Some((collection, doc_id)) = path.split_once('/').filter(|(_, d)| !d.contains('/')) else {
        return Err(invalid(
            "only documents of top-level collections (collection/document) can be healed",
        ));
    };
    let mut version = batch
        .status
        .as_ref()
        .and_then(|s| s.report.as_ref())
        .and_then(|r| r.source_version.as_deref())
        .and_then(|v| v.parse::<Timestamp>().ok())
        .ok_or_else(|| {
            invalid("no document version was observed to make the heal conditional on")
        })?;
    let write = AutoCompletion {
        is_complete: true,
        completion_time: now,
        auto_completed: true,
        auto_completion_reason: format!(
            "Stalled at {:.1}% for {} minutes",
            stall.progress.percent,
            stall.stalled_for.as_secs() / 60
        ),
        auto_completion_healing_id: id.to_owned(),
        updated_at: now,
    };
    for _ in 0..ACT_ATTEMPTS {
        let heal = HealWrite {
            collection: collection.to_owned(),
            doc_id: doc_id.to_owned(),
            version,
            fields: write.clone(),
        };
        match committer.write(heal).await {
            Ok(_) => return Ok(Acted::Applied),
            Err(FirestoreError::DatabaseError(e)) if e.public.code == "FailedPrecondition" => {
                let read = db.fluent().select().by_id_in(collection).one(doc_id);
                let bound = crate::timeouts::FIRESTORE_REQUEST;
                let Some(doc) = tokio::time::timeout(bound, read)
                    .await
                    .map_err(|_| Error::Timeout("reading the batch document", bound))?
                    .map_err(|e| Error::firestore("reading the batch document", e))?
                else {
                    return Ok(Acted::Superseded); // deleted meanwhile
                };
                let fields = fields_of(&doc);
                let update_time = doc.update_time.as_ref().and_then(proto_time);
                let Ok(fresh_doc) = parse_doc(
                    doc_id,
                    &fields,
                    doc.create_time.as_ref().and_then(proto_time),
                    update_time,
                ) else {
                    return Ok(Acted::Superseded);
                };
                if fresh_doc.report.auto_completed_by.as_deref() == Some(id) {
                    return Ok(Acted::AppliedElsewhere);
                }
                let mut fresh = batch.clone();
                fresh.status.get_or_insert_with(Default::default).report = Some(fresh_doc.report);
                match update_time {
                    Some(t) if still_calls_for(&fresh, policy, id) => version = t,
                    _ => return Ok(Acted::Superseded),
                }
            }
            Err(e) => return Err(Error::firestore("completing the batch document", e)),
        }
    }
    Ok(Acted::Superseded)
}

fn after_state(stall: &Stall) -> serde_json::Value {
    json!({
        "is_complete": true,
        "auto_completed": true,
        "auto_completion_reason": format!("Stalled at {:.1}% for {} minutes", stall.progress.percent, stall.stalled_for.as_secs() / 60),
    })
}

fn outcome_status(
    outcome: Outcome,
    success: bool,
    message: &str,
    after: Option<serde_json::Value>,
    threshold: Timestamp,
) -> HealingEventStatus {
    // Taken now, after the action: the latency is threshold to healed, not to decided.
    let now = Timestamp::now();
    HealingEventStatus {
        outcome: Some(outcome),
        success: Some(success),
        after_state: after,
        message: Some(message.to_owned()),
        finished_at: Some(Time(now)),
        heal_latency_seconds: Some(now.duration_since(threshold).as_secs_f64().max(0.0)),
        ..Default::default()
    }
}

/// Writes the outcome on the HealingEvent and, when given, a Kubernetes Event on the batch.
async fn record_outcome(
    ctx: &Context,
    batch: &PredictionBatch,
    id: &str,
    status: HealingEventStatus,
    note: Option<(EventType, &str, String)>,
) -> Result<(), Error> {
    let ns = batch.namespace().unwrap_or_default();
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), &ns);
    let patch = json!({"status": status});
    events
        .patch_status(id, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .at("recording the heal's outcome")?;
    let outcome = status.outcome.unwrap_or(Outcome::Pending);
    info!(batch = %batch.name_any(), healing_id = %id, ?outcome, "heal outcome recorded");
    let latency = status
        .heal_latency_seconds
        .filter(|_| outcome == Outcome::Succeeded);
    ctx.metrics
        .healed(BATCH_CLEANUP, &format!("{outcome:?}"), latency);
    if let Some((type_, reason, note)) = note {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(format!("{note} (HealingEvent {id})")),
            action: "Heal".into(),
            secondary: None,
        };
        ctx.recorder
            .publish(&event, &batch.object_ref(&()))
            .await
            .at("publishing the heal's Event")?;
    }
    Ok(())
}

/// A batch healed by `id` whose event still reads Pending: the actor stopped after acting.
async fn finish_pending_event(
    ctx: &Context,
    ns: &str,
    id: &str,
    batch: &PredictionBatch,
) -> Result<(), Error> {
    // The cache answers for a finished event (an outcome is final); only an event it shows
    // pending, or not yet, is read to be sure.
    let cached = ctx.events.get(&ObjectRef::new(id).within(ns));
    if cached.is_some_and(|e| !is_pending(&e)) {
        return Ok(());
    }
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), ns);
    let Some(event) = events
        .get_opt(id)
        .await
        .at("reading a heal's HealingEvent")?
    else {
        return Ok(());
    };
    let now = Timestamp::now();
    if !is_pending(&event) || has_live_actor(ctx, &event, now) {
        return Ok(());
    }
    let threshold = event.spec.threshold_time.as_ref().map_or(now, |t| t.0);
    let status = outcome_status(
        Outcome::Succeeded,
        true,
        "batch marked complete (outcome recorded after a restart)",
        None,
        threshold,
    );
    let note = Some((
        EventType::Normal,
        "AutoCompleted",
        "batch completed after a stall".to_owned(),
    ));
    record_outcome(ctx, batch, id, status, note).await
}

/// Server-side apply of the controller's part of the status: bookkeeping (a heal records
/// its own outcome), so it takes its turn.
async fn write_status(
    ctx: &Context,
    batch: &PredictionBatch,
    summary: &Summary,
    finished_at: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), Error> {
    let existing = batch
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let conditions = conditions::merge(existing, &summary.conditions, batch.meta().generation, now);
    let mut fields = json!({
        "state": summary.state,
        "expected": summary.expected,
        "completed": summary.completed,
        "completionPercent": summary.percent,
        "stallAt": summary.stall_at.map(Time),
        "finishedAt": finished_at.map(Time),
        "observedGeneration": batch.meta().generation,
        "conditions": conditions,
    });
    // Absent, not null: in an apply, an omitted field we own is removed, which is what a
    // cleared value means.
    if let Some(map) = fields.as_object_mut() {
        map.retain(|_, v| !v.is_null());
    }
    if shows_already(batch, &fields) {
        return Ok(());
    }
    // Conditional on the version decided on: a reconcile working from a stale cache must not
    // overwrite what a heal (or a worker) wrote meanwhile, e.g. set a healed batch back to
    // Stalled. The newer version's watch event reconciles again.
    let status = json!({
        "apiVersion": PredictionBatch::api_version(&()),
        "kind": PredictionBatch::kind(&()),
        "metadata": {"resourceVersion": batch.resource_version()},
        "status": fields,
    });
    let batches: Api<PredictionBatch> =
        Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
    let _turn = ctx.bookkeeping.turn().await;
    let written = batches
        .patch_status(
            &batch.name_any(),
            &PatchParams::apply(super::MANAGER).force(),
            &Patch::Apply(&status),
        )
        .await
        .unless_conflict("writing the batch's status")?;
    if written.is_none() {
        debug!(batch = %batch.name_any(), "the batch changed since it was read; its next version decides");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_with_status(status: serde_json::Value) -> PredictionBatch {
        serde_json::from_value(json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
            "metadata": {"name": "b1", "generation": 1},
            "spec": {"batchId": "b1", "source": "status"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn a_status_write_that_changes_nothing_is_skipped_and_any_change_is_not() {
        let shown = json!({
            "state": "Progressing", "expected": 10, "completed": 9,
            "completionPercent": 90.0, "stallAt": "2026-11-24T10:15:00Z",
            "observedGeneration": 1,
            "report": {"completed": 9},
        });
        let batch = batch_with_status(shown.clone());
        let mut fields = shown.clone();
        fields.as_object_mut().unwrap().remove("report");
        assert!(shows_already(&batch, &fields));

        let mut completed = fields.clone();
        completed["completed"] = json!(10);
        assert!(!shows_already(&batch, &completed));
        // A field to clear (no stall instant any more) is a change too.
        let mut cleared = fields.clone();
        cleared.as_object_mut().unwrap().remove("stallAt");
        assert!(!shows_already(&batch, &cleared));
        assert!(!shows_already(&batch_with_status(json!(null)), &fields));
    }
}
