//! The PredictionBatch reconciler: observe -> decide -> (record intent -> act -> record
//! outcome) -> write status -> requeue for the exact instant the verdict can next change.
//!
//! Healing is safe against crashes, retries and a second replica:
//! - the HealingEvent is created first, named by a deterministic healing id, so a second
//!   attempt at the same heal finds it instead of recording again;
//! - the action carries a precondition (the batch's resourceVersion, or the document's update
//!   time), and it writes the healing id into the batch along with the completion, so a
//!   conflict can tell "a worker reported progress first" (the heal is superseded) from "this
//!   heal already happened";
//! - an intent whose actor stopped before its outcome (a crash between intent and record) is
//!   judged by the outbox once its time is up (`resolve_unfinished`): the heal is taken over
//!   while the batch still calls for it, recorded as applied (with what follows a heal) when
//!   the batch carries its id, and superseded otherwise.
//!
//! The decisions are in `decide::stall` (the verdict), `decide::heal` (the record of a heal)
//! and `decide::batch_status` (what the status says); this folder is the I/O around them:
//! `heal.rs` records and carries out a heal, `act.rs` is the action on each source,
//! `status.rs` writes the status and removes finished mirrors, and `outcome.rs` exports a
//! finished batch's outcome (and holds a deleted batch until it has).

mod act;
mod heal;
#[cfg(test)]
mod mock_tests;
mod outcome;
mod status;

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use tracing::info;

use super::Context;
use crate::Error;
use crate::api::PredictionBatch;
use crate::api::batch::BatchSource;
use crate::api::event::Outcome;
use crate::decide::batch_status::{
    HEAL_FAILED, awaiting_report, cleanup_at, finished_at, heal_failed, healed_by, summarize,
};
use crate::decide::pause::{self, Pauses};
use crate::decide::stall::{RecordedDecision, StallPolicy, Verdict};
use crate::source::report::observe;
pub use heal::{HealProgress, heal, resolve_unfinished};
pub use outcome::OUTCOME_FINALIZER;

pub async fn reconcile(batch: Arc<PredictionBatch>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics.reconciled(&PredictionBatch::kind(&()));
    ctx.policies.synced().await?;
    let namespace = batch.namespace().unwrap_or_default();
    let policy_spec = ctx.policies.spec_for(&namespace);
    let policy = StallPolicy::from(&policy_spec);
    let now = Timestamp::now();
    let outcome_retry = match outcome::step(&ctx, &batch, now).await? {
        outcome::Next::Return(action) => return Ok(action),
        outcome::Next::Continue(retry) => retry,
    };
    let status = batch.status.as_ref();
    let pauses = Pauses::of(status);
    if let Some(problems) = status.and_then(|s| s.source_error.clone()) {
        let verdict = Verdict::Invalid { reason: problems };
        status::write(&ctx, &batch, &summarize(&verdict, None), &pauses, None, now).await?;
        return Ok(Action::await_change());
    }
    let Some(observation) = observe(&batch) else {
        // The mirror writes a Firestore batch's first report right after creating it (and
        // retries until it has): showing "awaiting" in between would only race that write.
        if batch.spec.source == BatchSource::Status {
            let awaiting = awaiting_report(batch.spec.source);
            status::write(&ctx, &batch, &awaiting, &pauses, None, now).await?;
        }
        return Ok(Action::await_change());
    };
    let decision = RecordedDecision {
        policy_name: ctx.policies.chosen(&namespace).map(|p| p.name_any()),
        policy,
        observation,
        at: now,
    };
    let verdict = decision.verdict();
    let policy = &decision.policy;
    let healed_by = healed_by(&batch);
    let mut look_again_at = None;
    let mut retry = None;
    if let Verdict::Stalled(stall) = &verdict {
        match heal::heal(&ctx, &batch, stall, &decision, policy_spec.dry_run).await? {
            // The batch changed (completed, or progressed first): its watch event reconciles.
            HealProgress::Finished(
                Outcome::Succeeded | Outcome::Verifying | Outcome::Superseded,
            ) => {
                return Ok(Action::await_change());
            }
            // Another actor is mid-heal: look again once it would count as abandoned.
            HealProgress::InProgressElsewhere => {
                return Ok(Action::requeue(ctx.config.abandoned_heal_after));
            }
            HealProgress::RetryAfterFailure => return Ok(Action::requeue(CACHE_CATCH_UP)),
            HealProgress::Waiting(waiting) => {
                look_again_at = Some(waiting.due);
                retry = Some(waiting);
            }
            HealProgress::Skipped { until } => look_again_at = until,
            // Dry-run, or a heal that ended earlier: show the stall.
            HealProgress::Finished(_) | HealProgress::FinishedEarlier => {}
        }
    }
    let mut summary = summarize(&verdict, healed_by.as_deref());
    let shown = status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == HEAL_FAILED));
    summary
        .conditions
        .extend(heal_failed(retry.as_ref(), shown));
    let previous_finish = status.and_then(|s| s.finished_at.as_ref()).map(|t| t.0);
    let finished = finished_at(summary.state, previous_finish, now);
    let cleanup = cleanup_at(batch.spec.source, finished, policy_spec.retention.as_span());
    if cleanup.is_some_and(|at| now >= at) {
        status::remove_mirror(&ctx, &batch).await?;
        return Ok(Action::await_change());
    }
    let tracked = pause::track(&pauses, &verdict, healed_by.is_some(), policy, now);
    let written = status::write(&ctx, &batch, &summary, &tracked.pauses, finished, now).await?;
    if written && let Some(length) = tracked.self_recovered {
        // Counted once the status holds it: a write that lost to a newer version is decided
        // again from that version.
        ctx.metrics.self_recovered(&namespace);
        info!(batch = %batch.name_any(), pause = ?length, pauses = tracked.pauses.recovered, "the batch recovered by itself after a pause");
    }
    let next = [
        verdict.next_check(),
        cleanup,
        look_again_at,
        tracked.watch_at,
        outcome_retry,
    ];
    Ok(requeue_for(next.into_iter().flatten().min(), now))
}

/// How soon a heal whose last attempt failed before the events cache showed it looks again
/// (the cache then has the failure, and the attempt's spacing decides).
const CACHE_CATCH_UP: Duration = Duration::from_secs(1);

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
