//! Healing events to Firestore: one document per event in the events collection (the
//! original's `healing_events`), id = namespace and healing_id ([`super::record_key`]), so
//! exporting again overwrites instead of duplicating, and two namespaces' events of one name
//! stay two documents. The original's fields come first, with the states and metadata as maps.

use std::time::Duration;

use firestore::FirestoreDb;
use serde::{Deserialize, Serialize};
use tracing::debug;

use super::firestore_commit::commit_each;
use crate::api::HealingEvent;
use crate::runtime::batcher::{Batcher, ItemResult};

/// Writes per Commit (Firestore's limit).
const MAX_WRITES: usize = 500;
/// How long the first event after a quiet spell waits for others to share its request. Long:
/// nothing waits on an export, and every request costs a round trip. (The events' collection
/// is not the batches': the emulator's resend of the mirror's listen target follows writes to
/// the batch collection only, measured at 2-3 ms for a write elsewhere.)
const LINGER: Duration = Duration::from_secs(1);
const IN_FLIGHT: usize = 4;

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
    /// The HealingEvent's namespace (see [`super::record_namespace`]).
    pub target_namespace: Option<String>,
    pub target_name: String,
    pub dry_run: bool,
    pub outcome: Option<String>,
    pub heal_latency_seconds: Option<f64>,
    #[serde(default, with = "firestore::serialize_as_optional_timestamp")]
    pub onset_time: Option<jiff::Timestamp>,
    #[serde(default, with = "firestore::serialize_as_optional_timestamp")]
    pub detected_time: Option<jiff::Timestamp>,
    #[serde(default, with = "firestore::serialize_as_optional_timestamp")]
    pub healed_time: Option<jiff::Timestamp>,
    pub time_to_detect_seconds: Option<f64>,
    pub time_to_heal_seconds: Option<f64>,
}

impl EventDocument {
    /// The document's id in the events collection.
    pub fn document_id(&self) -> String {
        super::record_key(self.target_namespace.as_deref(), &self.healing_id)
    }

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
            root_cause: event.root_cause().to_owned(),
            target_kind: spec.target.kind.clone(),
            target_namespace: super::record_namespace(event),
            target_name: spec.target.name.clone(),
            dry_run: spec.dry_run,
            outcome: status.and_then(|s| s.outcome).map(|o| format!("{o:?}")),
            heal_latency_seconds: status.and_then(|s| s.heal_latency_seconds),
            onset_time: spec.onset_time.as_ref().map(|t| t.0),
            detected_time: spec.detected_time.as_ref().map(|t| t.0),
            healed_time: status.and_then(|s| s.healed_time.as_ref()).map(|t| t.0),
            time_to_detect_seconds: status.and_then(|s| s.time_to_detect_seconds),
            time_to_heal_seconds: status.and_then(|s| s.time_to_heal_seconds),
        }
    }
}

pub struct FirestoreEventSink {
    batcher: Batcher<EventDocument>,
}

impl FirestoreEventSink {
    pub async fn new(db: FirestoreDb, collection: String) -> Result<Self, crate::Error> {
        let batcher = Batcher::start(MAX_WRITES, LINGER, IN_FLIGHT, move |docs| {
            let (db, collection) = (db.clone(), collection.clone());
            async move { write(&db, &collection, docs).await }
        });
        Ok(Self { batcher })
    }

    pub async fn export(&self, event: &HealingEvent) -> ItemResult {
        self.batcher.export(EventDocument::from_event(event)).await
    }
}

/// One Commit of the documents (see `firestore_commit`); a refused one, document by document,
/// so one refused document does not hold back the others.
async fn write(db: &FirestoreDb, collection: &str, docs: Vec<EventDocument>) -> Vec<ItemResult> {
    debug!(documents = docs.len(), %collection, "writing healing events to Firestore");
    commit_each(db, &docs, |doc, writes| {
        db.fluent()
            .update()
            .in_col(collection)
            .document_id(doc.document_id())
            .object(doc)
            .add_to_transaction(writes)
            .map(|_| ())
    })
    .await
    .into_iter()
    .map(|answer| answer.map_err(|e| format!("Firestore: {e}").into()))
    .collect()
}
