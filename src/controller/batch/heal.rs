//! A heal of a stalled batch, carried out: gate, intent, action, outcome. What each step
//! records is decided in `decide::heal`; this is the I/O in its order.

use jiff::Timestamp;
use kube::api::Api;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use super::act;
use crate::api::event::{BATCH_CLEANUP, Outcome};
use crate::api::{HealingEvent, PredictionBatch};
use crate::controller::{Context, health, record};
use crate::decide::heal::{
    self, Acted, Existing, HealRetry, OutcomeRecord, Recording, Unfinished, existing_heal, intent,
    next_attempt, outcome_of, recording_for, retry_wait, unfinished_heal,
};
use crate::decide::health::Gate;
use crate::decide::stall::{RecordedDecision, Stall, StallPolicy};
use crate::error::{Error, KubeResultExt};
use crate::source::report::observe;

/// Where a heal stands after [`heal`].
#[derive(Clone, Debug, PartialEq, Eq)]
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
    /// This attempt failed earlier than the cache shows: look again once it does.
    RetryAfterFailure,
    /// Earlier attempts failed; the next one waits until `due`.
    Waiting(HealRetry),
}

/// Intent, action, outcome for `batch`, observed stalled as `stall`.
pub async fn heal(
    ctx: &Context,
    batch: &PredictionBatch,
    stall: &Stall,
    decision: &RecordedDecision,
    dry_run: bool,
) -> Result<HealProgress, Error> {
    let (policy, now) = (&decision.policy, decision.at);
    // Bookkeeping writes yield to heals in progress (see `bookkeeping`).
    let _in_progress = ctx.bookkeeping.heal_in_progress();
    let ns = batch.namespace().unwrap_or_default();
    let gate = if dry_run {
        Gate::Act
    } else {
        health::gate(ctx, &ns, BATCH_CLEANUP, now)
    };
    let recording = recording_for(&gate, dry_run);
    // A skipped heal is looked at again when the gate may open: `until`, else on a change.
    let skipped = match &gate {
        Gate::Skip { until, .. } => Some(HealProgress::Skipped { until: *until }),
        _ => None,
    };
    let attempt = next_attempt(batch, stall, recording, |id| {
        ctx.events
            .get(&ObjectRef::new(id).within(&ns))
            .map(|e| outcome_of(&e))
    });
    if recording == Recording::Act {
        let previous = attempt.checked_sub(1).and_then(|failed| {
            let id = heal::healing_id_of(batch, stall, recording, failed);
            ctx.events.get(&ObjectRef::new(&id).within(&ns))
        });
        if let Some(retry) = retry_wait(attempt, previous.as_deref(), policy.stall_after, now) {
            return Ok(HealProgress::Waiting(retry));
        }
    }
    let event = intent(batch, stall, decision, recording, attempt);
    let id = event.name_any();
    if gate == Gate::Trial && !health::claim_trial(ctx, &ns, BATCH_CLEANUP, &id, now).await? {
        info!(batch = %batch.name_any(), healing_id = %id, "another heal claimed the circuit's trial");
        return Ok(HealProgress::InProgressElsewhere);
    }
    if let Some(earlier) = record_intent(ctx, &event, recording, now).await? {
        return Ok(match earlier {
            Existing::RetryAfterFailure => HealProgress::RetryAfterFailure,
            Existing::InProgressElsewhere => HealProgress::InProgressElsewhere,
            // (A heal taken over is carried on: `record_intent` answers None for it.)
            Existing::Finished | Existing::TakeOver => {
                skipped.unwrap_or(HealProgress::FinishedEarlier)
            }
        });
    }
    if let Some(record) = heal::not_acting(recording, &event.spec, now) {
        record_outcome(ctx, batch, &id, record).await?;
        return Ok(skipped.unwrap_or(HealProgress::Finished(Outcome::Skipped)));
    }
    let acted = act::complete(ctx, batch, stall, (&id, attempt), policy, now).await;
    let record = match &acted {
        Ok(Acted::Applied) => {
            let after = act::follow_up(ctx, batch, &id, heal::after_state(stall)).await;
            match verify(ctx, batch, &event, after).await? {
                Some(record) => record,
                None => return Ok(HealProgress::Finished(Outcome::Verifying)),
            }
        }
        Ok(Acted::Superseded) => heal::superseded(&event.spec, Timestamp::now()),
        Err(e) => heal::action_failed(&e.to_string(), &event.spec, Timestamp::now()),
    };
    let outcome = record.status.outcome.unwrap_or(Outcome::Pending);
    record_outcome(ctx, batch, &id, record).await?;
    acted.map(|_| HealProgress::Finished(outcome))
}

/// A heal that applied is Verifying until its batch reads back complete with its healing
/// id: the document (or object) is read again. The verified outcome to record; None when the
/// read failed, which leaves the heal Verifying for the outbox to settle by its `verifyBy`
/// (`resolve_unfinished`, which reads the batch again).
async fn verify(
    ctx: &Context,
    batch: &PredictionBatch,
    event: &HealingEvent,
    after: serde_json::Value,
) -> Result<Option<OutcomeRecord>, Error> {
    let id = event.name_any();
    let verify_by = Timestamp::now()
        .checked_add(ctx.abandoned_heal_after())
        .unwrap_or(Timestamp::MAX);
    let verifying = OutcomeRecord {
        status: heal::applied(after.clone(), verify_by),
        note: None,
    };
    record_outcome(ctx, batch, &id, verifying).await?;
    match act::read_back(ctx, batch).await {
        Ok(healed_by) if healed_by.as_deref() == Some(id.as_str()) => Ok(Some(heal::verified(
            &event.spec,
            heal::READ_BACK,
            Some(after),
            Timestamp::now(),
        ))),
        Ok(_) => Ok(Some(heal::not_held(&event.spec, Timestamp::now()))),
        Err(error) => {
            warn!(batch = %batch.name_any(), healing_id = %id, %error, "reading the healed batch back failed; the heal stays Verifying until it is settled");
            Ok(None)
        }
    }
}

/// Creates the heal's HealingEvent. `Some`: it existed already, and what that means (a heal
/// whose actor stopped is taken over: `None` then, as for a new one).
async fn record_intent(
    ctx: &Context,
    event: &HealingEvent,
    recording: Recording<'_>,
    now: Timestamp,
) -> Result<Option<Existing>, Error> {
    let ns = event.namespace().unwrap_or_default();
    let id = event.name_any();
    if record::intent(ctx, event).await? {
        info!(namespace = %ns, healing_id = %id, root_cause = %event.spec.root_cause, ?recording, "stall detected; healing recorded");
        return Ok(None);
    }
    let events: Api<HealingEvent> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = events
        .get(&id)
        .await
        .at("reading the heal's existing HealingEvent")?;
    match existing_heal(&existing, recording, ctx.abandoned_heal_after(), now) {
        Existing::TakeOver => {
            info!(namespace = %ns, healing_id = %id, "taking over an abandoned heal");
            Ok(None)
        }
        Existing::InProgressElsewhere => {
            info!(namespace = %ns, healing_id = %id, "another actor is carrying out this heal");
            Ok(Some(Existing::InProgressElsewhere))
        }
        other => Ok(Some(other)),
    }
}

/// Writes the outcome on the HealingEvent and, when it has one, its Kubernetes Event on the
/// batch.
async fn record_outcome(
    ctx: &Context,
    batch: &PredictionBatch,
    id: &str,
    record: OutcomeRecord,
) -> Result<(), Error> {
    let ns = batch.namespace().unwrap_or_default();
    if !record::outcome(ctx, &ns, id, BATCH_CLEANUP, &record.status).await? {
        return Ok(());
    }
    let outcome = record.status.outcome.unwrap_or(Outcome::Pending);
    info!(batch = %batch.name_any(), healing_id = %id, ?outcome, "heal outcome recorded");
    if let Some(note) = record.note {
        let type_ = if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        let message = format!("{} (HealingEvent {id})", note.message);
        record::publish(
            ctx,
            &batch.object_ref(&()),
            type_,
            note.reason,
            "Heal",
            message,
        )
        .await?;
    }
    Ok(())
}

/// Settles the heal `event`, still without an outcome when its actor's time is up, by what
/// its batch shows now (`decide::heal::unfinished_heal`). Some: look again then (the batch
/// still calls for the heal, which its reconciler is taking over).
pub async fn resolve_unfinished(
    ctx: &Context,
    event: &HealingEvent,
) -> Result<Option<Timestamp>, Error> {
    let ns = event.namespace().unwrap_or_default();
    let id = event.name_any();
    let batches: Api<PredictionBatch> = Api::namespaced(ctx.client.clone(), &ns);
    let batch = batches
        .get_opt(&event.spec.target.name)
        .await
        .at("reading the batch of an unfinished heal")?;
    let policy = StallPolicy::from(&ctx.policies.spec_for(&ns));
    let observed = batch.as_ref().and_then(observe);
    let now = Timestamp::now();
    let abandoned_after = ctx.abandoned_heal_after();
    let judged = unfinished_heal(
        event,
        batch.as_ref(),
        observed.as_ref(),
        &policy,
        abandoned_after,
        ctx.started_at,
        now,
    );
    let record = match judged {
        Unfinished::StillCalledFor => return Ok(now.checked_add(abandoned_after).ok()),
        Unfinished::Applied => {
            let Some(batch) = &batch else { return Ok(None) };
            let (mut after, consolidate) = heal::recovered_after_state(event);
            if consolidate {
                after = act::follow_up(ctx, batch, &id, after).await;
            }
            heal::verified(&event.spec, heal::RECOVERED, Some(after), Timestamp::now())
        }
        Unfinished::Superseded => heal::superseded_unfinished(event, now),
        Unfinished::Gone => {
            record::abandon(ctx, event, heal::BATCH_GONE).await?;
            return Ok(None);
        }
        Unfinished::NotTakenOver => {
            record::abandon(ctx, event, heal::NOT_TAKEN_OVER).await?;
            return Ok(None);
        }
    };
    info!(namespace = %ns, healing_id = %id, outcome = ?record.status.outcome, "an unfinished heal settled by what its batch shows");
    if let Some(batch) = &batch {
        record_outcome(ctx, batch, &id, record).await?;
    }
    Ok(None)
}
