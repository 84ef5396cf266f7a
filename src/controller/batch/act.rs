//! The action of a heal: completing the batch where its progress lives (the object's
//! status, or the Firestore document), only while it is still the version decided on; then,
//! for the actor whose action applied, the consolidation request.

use jiff::Timestamp;
use kube::ResourceExt;
use kube::api::Api;
use serde_json::json;
use tracing::warn;

use crate::api::PredictionBatch;
use crate::api::batch::{BatchReport, BatchSource, BatchState, PredictionBatchStatus};
use crate::controller::Context;
use crate::decide::heal::{Acted, completion_reason, still_calls_for};
use crate::decide::stall::{Stall, StallPolicy};
use crate::error::{Error, KubeResultExt};
use crate::runtime::HEAL_MANAGER;
use crate::runtime::status::{Precondition, apply_status};
use crate::sink::consolidation::Consolidation;
use crate::sink::firestore_heal::{AutoCompletion, HealWrite};
use crate::source::firestore_doc::{fields_of, parse as parse_doc, proto_time};
use crate::source::report::observe;
use firestore::errors::FirestoreError;

/// How often an action is tried again when the batch changed in ways that do not matter
/// (the controller's own status writes, a label) before it gives up for this reconcile.
const ACT_ATTEMPTS: usize = 5;

/// Completes `batch` where its source keeps it, as the heal `id` (its attempt `attempt`).
pub async fn complete(
    ctx: &Context,
    batch: &PredictionBatch,
    stall: &Stall,
    (id, attempt): (&str, u32),
    policy: &StallPolicy,
    now: Timestamp,
) -> Result<Acted, Error> {
    match batch.spec.source {
        BatchSource::Status => on_status(ctx, batch, (id, attempt), policy).await,
        BatchSource::Firestore => on_firestore(ctx, batch, stall, (id, attempt), policy, now).await,
    }
}

/// What follows a heal that applied: with consolidation configured, the request, its answer
/// added to `after` (the batch's after_state). Only the actor holding the heal's intent
/// gets here, so one heal asks once.
pub async fn follow_up(
    ctx: &Context,
    batch: &PredictionBatch,
    id: &str,
    mut after: serde_json::Value,
) -> serde_json::Value {
    if let Some(consolidation) = &ctx.config.consolidation {
        after["consolidation"] = consolidate(consolidation, batch, id).await;
    }
    after
}

/// Asks the pipeline to consolidate a completed batch. A failure does not undo the heal: it
/// is kept in the event's after_state, and makes the verified outcome Failed
/// (`consolidation_failed`), told by a Warning Event, for someone to follow up.
async fn consolidate(
    consolidation: &Consolidation,
    batch: &PredictionBatch,
    id: &str,
) -> serde_json::Value {
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
        Ok(code) => json!({"requested": true, "status": code}),
        Err(error) => {
            warn!(batch = %batch.name_any(), healing_id = %id, %error, "consolidation request failed");
            json!({"requested": false, "error": error.to_string()})
        }
    }
}

/// Completes a `source: status` batch on the object itself, recording which heal did it,
/// only if the object is still the version the decision was made on.
async fn on_status(
    ctx: &Context,
    batch: &PredictionBatch,
    (id, attempt): (&str, u32),
    policy: &StallPolicy,
) -> Result<Acted, Error> {
    let batches: Api<PredictionBatch> =
        Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
    let completion = PredictionBatchStatus {
        state: Some(BatchState::AutoCompleted),
        last_healing_event: Some(id.to_owned()),
        ..Default::default()
    };
    let mut observed = batch.clone();
    for _ in 0..ACT_ATTEMPTS {
        let applied = apply_status(
            &batches,
            &batch.name_any(),
            HEAL_MANAGER,
            Precondition::decided_from(&observed),
            &completion,
            "completing the batch",
        )
        .await?;
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
                    return Ok(Acted::Applied); // an earlier write of ours, unanswered
                }
                // A change that is not progress (a label, our own status write): try again.
                if !still_calls_for(
                    &current,
                    observe(&current).as_ref(),
                    policy,
                    id,
                    attempt,
                    Timestamp::now(),
                ) {
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
async fn on_firestore(
    ctx: &Context,
    batch: &PredictionBatch,
    stall: &Stall,
    (id, attempt): (&str, u32),
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
        auto_completion_reason: completion_reason(stall),
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
                let Some((report, update_time)) = read_document(db, collection, doc_id).await?
                else {
                    return Ok(Acted::Superseded); // deleted, or no longer a batch
                };
                if report.auto_completed_by.as_deref() == Some(id) {
                    return Ok(Acted::Applied); // an earlier Commit of ours, unanswered
                }
                let mut fresh = batch.clone();
                fresh.status.get_or_insert_with(Default::default).report = Some(report);
                match update_time {
                    Some(t)
                        if still_calls_for(
                            &fresh,
                            observe(&fresh).as_ref(),
                            policy,
                            id,
                            attempt,
                            Timestamp::now(),
                        ) =>
                    {
                        version = t
                    }
                    _ => return Ok(Acted::Superseded),
                }
            }
            Err(e) => return Err(Error::firestore("completing the batch document", e)),
        }
    }
    Ok(Acted::Superseded)
}

/// The batch's document as it is now: its report and update time; None when it is gone or
/// no longer parses as a batch.
async fn read_document(
    db: &firestore::FirestoreDb,
    collection: &str,
    doc_id: &str,
) -> Result<Option<(BatchReport, Option<Timestamp>)>, Error> {
    let read = db.fluent().select().by_id_in(collection).one(doc_id);
    let bound = crate::timeouts::FIRESTORE_REQUEST;
    let Some(doc) = tokio::time::timeout(bound, read)
        .await
        .map_err(|_| Error::Timeout("reading the batch document", bound))?
        .map_err(|e| Error::firestore("reading the batch document", e))?
    else {
        return Ok(None);
    };
    let fields = fields_of(&doc);
    let update_time = doc.update_time.as_ref().and_then(proto_time);
    let parsed = parse_doc(
        doc_id,
        &fields,
        doc.create_time.as_ref().and_then(proto_time),
        update_time,
    );
    Ok(parsed.ok().map(|d| (d.report, update_time)))
}

/// Reads the healed batch back where its progress lives: the healing id it carries as
/// complete (None: it is not complete, or not by a heal). A heal is verified by this read,
/// not by the write's answer.
pub async fn read_back(ctx: &Context, batch: &PredictionBatch) -> Result<Option<String>, Error> {
    match batch.spec.source {
        BatchSource::Status => {
            let batches: Api<PredictionBatch> =
                Api::namespaced(ctx.client.clone(), &batch.namespace().unwrap_or_default());
            let current = batches
                .get_opt(&batch.name_any())
                .await
                .at("reading the healed batch back")?;
            let status = current.as_ref().and_then(|b| b.status.as_ref());
            Ok(status
                .filter(|s| s.state == Some(BatchState::AutoCompleted))
                .and_then(|s| s.last_healing_event.clone()))
        }
        BatchSource::Firestore => {
            let Some(db) = ctx.firestore.as_ref() else {
                return Ok(None);
            };
            let path = batch.spec.document_path.as_deref().unwrap_or_default();
            let Some((collection, doc_id)) = path.split_once('/') else {
                return Ok(None);
            };
            let report = read_document(db, collection, doc_id).await?;
            Ok(report
                .filter(|(r, _)| r.complete)
                .and_then(|(r, _)| r.auto_completed_by))
        }
    }
}
