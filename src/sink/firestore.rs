//! Healing events to Firestore: one document per event in the events collection (the
//! original's `healing_events`), id = healing_id, so exporting again overwrites instead of
//! duplicating. The original's fields come first, with the states and metadata as maps.

use std::time::Duration;

use firestore::{FirestoreDb, FirestoreSimpleBatchWriteOptions, FirestoreSimpleBatchWriter};
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::batcher::{Batcher, ItemResult};
use crate::api::HealingEvent;

/// Writes per BatchWrite request (Firestore's limit).
const MAX_WRITES: usize = 500;
const LINGER: Duration = Duration::from_millis(50);
const IN_FLIGHT: usize = 4;
/// How long one request may retry inside the client before the attempt counts as failed
/// (and the event's own backoff takes over).
const REQUEST_RETRY_TIME: Duration = Duration::from_secs(5);

/// The document of one event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventDocument {
    pub healing_id: String,
    #[serde(with = "firestore::serialize_as_timestamp")]
    pub timestamp: jiff::Timestamp,
    pub healing_type: String,
    pub trigger_reason: String,
    pub action_taken: String,
    pub before_state: Option<serde_json::Value>,
    pub after_state: Option<serde_json::Value>,
    pub success: bool,
    pub metadata: Option<serde_json::Value>,
    pub correlation_id: Option<String>,
    pub root_cause: String,
    pub target_kind: String,
    pub target_namespace: Option<String>,
    pub target_name: String,
    pub dry_run: bool,
    pub outcome: Option<String>,
    pub heal_latency_seconds: Option<f64>,
}

impl EventDocument {
    pub fn from_event(event: &HealingEvent) -> Self {
        let spec = &event.spec;
        let status = event.status.as_ref();
        Self {
            healing_id: spec.healing_id.clone(),
            timestamp: spec.timestamp.0,
            healing_type: spec.healing_type.clone(),
            trigger_reason: spec.trigger_reason.clone(),
            action_taken: spec.action_taken.clone(),
            before_state: spec.before_state.clone(),
            after_state: status.and_then(|s| s.after_state.clone()),
            success: status.and_then(|s| s.success).unwrap_or(false),
            metadata: spec.details.clone(),
            correlation_id: spec.correlation_id.clone(),
            root_cause: spec.root_cause.clone(),
            target_kind: spec.target.kind.clone(),
            target_namespace: spec.target.namespace.clone(),
            target_name: spec.target.name.clone(),
            dry_run: spec.dry_run,
            outcome: status.and_then(|s| s.outcome).map(|o| format!("{o:?}")),
            heal_latency_seconds: status.and_then(|s| s.heal_latency_seconds),
        }
    }
}

pub struct FirestoreEventSink {
    batcher: Batcher<EventDocument>,
}

impl FirestoreEventSink {
    pub async fn new(db: FirestoreDb, collection: String) -> Result<Self, crate::Error> {
        let options =
            FirestoreSimpleBatchWriteOptions::new().with_retry_max_elapsed_time(REQUEST_RETRY_TIME);
        let writer = std::sync::Arc::new(
            db.create_simple_batch_writer_with_options(options)
                .await
                .map_err(crate::Error::firestore)?,
        );
        let batcher = Batcher::start(MAX_WRITES, LINGER, IN_FLIGHT, move |docs| {
            let (db, writer, collection) = (db.clone(), writer.clone(), collection.clone());
            async move { write(&db, &writer, &collection, docs).await }
        });
        Ok(Self { batcher })
    }

    pub async fn export(&self, event: &HealingEvent) -> ItemResult {
        self.batcher.export(EventDocument::from_event(event)).await
    }
}

/// One BatchWrite: not atomic, so each document has its own status and one refused
/// document does not hold back the others.
async fn write(
    db: &FirestoreDb,
    writer: &FirestoreSimpleBatchWriter,
    collection: &str,
    docs: Vec<EventDocument>,
) -> Vec<ItemResult> {
    let mut batch = writer.new_batch();
    let mut queued: Vec<ItemResult> = Vec::with_capacity(docs.len());
    for doc in &docs {
        let added = db
            .fluent()
            .update()
            .in_col(collection)
            .document_id(&doc.healing_id)
            .object(doc)
            .add_to_batch(&mut batch);
        queued.push(added.map(|_| ()).map_err(|e| format!("Firestore: {e}")));
    }
    if queued.iter().all(Result::is_err) {
        return queued;
    }
    debug!(documents = docs.len(), %collection, "writing healing events to Firestore");
    match batch.write().await {
        Ok(response) => {
            // Statuses follow the writes actually queued, in order.
            let mut statuses = response.statuses.into_iter();
            queued
                .into_iter()
                .map(|q| {
                    q?;
                    match statuses.next() {
                        Some(s) if s.code == 0 => Ok(()),
                        Some(s) => Err(format!("Firestore refused the document: {}", s.message)),
                        // No status at all means the request as a whole succeeded.
                        None => Ok(()),
                    }
                })
                .collect()
        }
        Err(e) => {
            let message = format!("Firestore: {e}");
            queued
                .into_iter()
                .map(|q| q.and(Err(message.clone())))
                .collect()
        }
    }
}
