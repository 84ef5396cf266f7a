//! Heals of Firestore batches, written together. Each heal is a conditional update of one
//! document (applied only while the document is at the update time observed, so a late
//! completion wins), and the heals of a burst share BatchWrite requests, each write with its
//! own precondition and status. One request per heal would cap a burst at the round-trip
//! rate, and on the emulator every request makes the listen stream resend the collection.

use std::sync::Arc;
use std::time::Duration;

use firestore::{FirestoreDb, FirestoreSimpleBatchWriteOptions, FirestoreWritePrecondition};
use jiff::Timestamp;
use tracing::debug;

use super::firestore_doc::HEALED_BY_FIELD;
use crate::Error;
use crate::sink::batcher::Batcher;
use crate::sink::firestore::{FAILED_PRECONDITION, NOT_FOUND, WriteRefused, batch_write};

/// Writes per BatchWrite request (Firestore's limit).
const MAX_WRITES: usize = 500;
/// Long enough to gather a burst, short next to the heal latency target.
const LINGER: Duration = Duration::from_millis(20);
const IN_FLIGHT: usize = 4;
/// How long one request may retry inside the client before the heal sees an error (and its
/// reconcile's own retry takes over).
const REQUEST_RETRY_TIME: Duration = Duration::from_secs(5);

/// The original's auto-completion fields, plus the healing id that wrote them.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AutoCompletion {
    pub is_complete: bool,
    #[serde(with = "firestore::serialize_as_timestamp")]
    pub completion_time: Timestamp,
    pub auto_completed: bool,
    pub auto_completion_reason: String,
    pub auto_completion_healing_id: String,
    #[serde(with = "firestore::serialize_as_timestamp")]
    pub updated_at: Timestamp,
}

/// One heal: these fields, into `collection/doc_id`, if its update time is still `version`.
#[derive(Clone, Debug)]
pub struct HealWrite {
    pub collection: String,
    pub doc_id: String,
    pub version: Timestamp,
    pub fields: AutoCompletion,
}

/// Why a heal was not written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealRefused {
    /// The document changed (or went) since it was observed.
    Changed,
    Failed(String),
}

pub struct HealWriter {
    batcher: Batcher<HealWrite, Result<(), WriteRefused>>,
}

impl HealWriter {
    pub async fn new(db: FirestoreDb) -> Result<Self, Error> {
        let options =
            FirestoreSimpleBatchWriteOptions::new().with_retry_max_elapsed_time(REQUEST_RETRY_TIME);
        let writer = Arc::new(
            db.create_simple_batch_writer_with_options(options)
                .await
                .map_err(Error::firestore)?,
        );
        let batcher = Batcher::start(
            MAX_WRITES,
            LINGER,
            IN_FLIGHT,
            move |heals: Vec<HealWrite>| {
                let (db, writer) = (db.clone(), writer.clone());
                async move {
                    debug!(heals = heals.len(), "writing heals to Firestore");
                    batch_write(&writer, &heals, |heal, batch| {
                        db.fluent()
                            .update()
                            .fields([
                                "is_complete",
                                "completion_time",
                                "auto_completed",
                                "auto_completion_reason",
                                HEALED_BY_FIELD,
                                "updated_at",
                            ])
                            .in_col(&heal.collection)
                            .precondition(FirestoreWritePrecondition::UpdateTime(heal.version))
                            .document_id(&heal.doc_id)
                            .object(&heal.fields)
                            .add_to_batch(batch)
                            .map(|_| ())
                    })
                    .await
                }
            },
        );
        Ok(Self { batcher })
    }

    pub async fn write(&self, heal: HealWrite) -> Result<(), HealRefused> {
        match self.batcher.submit(heal).await {
            Some(Ok(())) => Ok(()),
            Some(Err(WriteRefused {
                code: Some(FAILED_PRECONDITION | NOT_FOUND),
                ..
            })) => Err(HealRefused::Changed),
            Some(Err(e)) => Err(HealRefused::Failed(e.message)),
            None => Err(HealRefused::Failed(
                "the heal writer gave no answer".to_owned(),
            )),
        }
    }
}
