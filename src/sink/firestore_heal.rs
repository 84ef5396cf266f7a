//! Heals of Firestore batches, committed together. Each heal is a conditional update of one
//! document, applied only while the document is still at the update time observed, so a late
//! completion wins. The heals of a burst share one Commit (see `firestore_commit`).

use std::time::Duration;

use firestore::errors::{FirestoreError, FirestoreErrorPublicGenericDetails, FirestoreSystemError};
use firestore::{FirestoreDb, FirestoreResult, FirestoreWritePrecondition};
use jiff::Timestamp;

use super::firestore_commit::commit_each;
use crate::runtime::batcher::Batcher;
use crate::source::firestore_doc::HEALED_BY_FIELD;

/// Writes per Commit (Firestore's limit).
const MAX_WRITES: usize = 500;
/// How long the first heal after a quiet spell waits for others to share its commit. Short:
/// heals that arrive while a commit is in flight gather for the next one anyway, and a lone
/// heal (most of them, outside a burst) pays the whole wait. At 100 ms, in the steady
/// benchmark (10,000 batches, one commit per heal), the linger was a sixth of the latency.
const LINGER: Duration = Duration::from_millis(10);
/// One Commit at a time: each makes the emulator resend the collection to listeners, and
/// resends of concurrent commits have been seen to corrupt the listen stream.
const IN_FLIGHT: usize = 1;
/// The longest a heal waits for the mirror's listen stream to finish sending its snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);

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

/// The document fields a heal writes (an update mask: the rest of the document is kept).
const HEAL_FIELDS: [&str; 6] = [
    "is_complete",
    "completion_time",
    "auto_completed",
    "auto_completion_reason",
    HEALED_BY_FIELD,
    "updated_at",
];

/// One heal: `fields` into `collection/doc_id`, if its update time is still `version`.
#[derive(Clone, Debug)]
pub struct HealWrite {
    pub collection: String,
    pub doc_id: String,
    pub version: Timestamp,
    pub fields: AutoCompletion,
}

pub struct HealCommitter {
    batcher: Batcher<HealWrite, FirestoreResult<()>>,
    snapshot_read: Option<tokio::sync::watch::Receiver<bool>>,
}

impl HealCommitter {
    /// Starts the committing task (inside a Tokio runtime).
    ///
    /// While `snapshot_read` is false (the mirror's listen stream is sending the collection
    /// after connecting), heals wait for it, up to [`SNAPSHOT_WAIT`]; None without a mirror.
    /// The emulator corrupts a stream whose snapshot a write's changes interrupt: the client
    /// cannot decode it and reconnects a second later to read everything again (a burst of
    /// 1,000 heals at start-up saw up to three such reconnects in a row, each holding back the
    /// batches not yet read). Against Firestore the wait only holds back heals during the read
    /// that follows a (re)connection, and the heals that gather meanwhile share one commit.
    pub fn start(
        db: FirestoreDb,
        snapshot_read: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Self {
        let batcher = Batcher::start(MAX_WRITES, LINGER, IN_FLIGHT, move |heals| {
            let db = db.clone();
            async move { commit_heals(&db, heals).await }
        });
        Self {
            batcher,
            snapshot_read,
        }
    }

    /// Writes one heal, committed with the others of the moment; its own answer.
    pub async fn write(&self, heal: HealWrite) -> FirestoreResult<()> {
        if let Some(mut snapshot_read) = self.snapshot_read.clone() {
            // A timeout or a stopped mirror: commit anyway, the precondition keeps it safe.
            let _ = tokio::time::timeout(SNAPSHOT_WAIT, snapshot_read.wait_for(|read| *read)).await;
        }
        // No answer (shutting down) is a system error: the reconcile retries the heal.
        self.batcher.submit(heal).await.unwrap_or_else(|| {
            Err(FirestoreError::SystemError(FirestoreSystemError::new(
                FirestoreErrorPublicGenericDetails::new("NoAnswer".into()),
                "the heal committer stopped before answering".into(),
            )))
        })
    }
}

/// Commits the heals together, or, if that is refused, one by one; an answer per heal.
async fn commit_heals(db: &FirestoreDb, heals: Vec<HealWrite>) -> Vec<FirestoreResult<()>> {
    commit_each(db, &heals, |heal, writes| {
        db.fluent()
            .update()
            .fields(HEAL_FIELDS)
            .in_col(&heal.collection)
            .precondition(FirestoreWritePrecondition::UpdateTime(heal.version))
            .document_id(&heal.doc_id)
            .object(&heal.fields)
            .add_to_transaction(writes)
            .map(|_| ())
    })
    .await
}
