//! Heals of Firestore batches, committed together. Each heal is a conditional update of one
//! document, applied only while the document is still at the update time observed, so a late
//! completion wins.
//!
//! The heals of a burst share one atomic Commit: one request instead of one per heal. On the
//! emulator that matters most, because every committed request makes each listener resend
//! its whole collection: 50 single updates of a 500-document collection resent 25,000
//! documents, one Commit of the same 50 resent 500 (and a non-atomic BatchWrite, which
//! applies its writes one by one, resent 25,000 too). A Commit with one refused write applies
//! none, so the heals of a refused Commit are committed again one by one, each to get its
//! own answer; refusals (a late completion) are rare next to heals.

use std::time::Duration;

use firestore::errors::{FirestoreError, FirestoreErrorPublicGenericDetails, FirestoreSystemError};
use firestore::gcloud_sdk::google::firestore::v1::CommitRequest;
use firestore::gcloud_sdk::tonic;
use firestore::{
    FirestoreDb, FirestoreResult, FirestoreTransactionData, FirestoreWritePrecondition,
};
use futures::StreamExt;
use jiff::Timestamp;
use tracing::debug;

use super::firestore_doc::HEALED_BY_FIELD;
use crate::sink::batcher::Batcher;

/// Writes per Commit (Firestore's limit).
const MAX_WRITES: usize = 500;
/// Long enough to gather the heals of a burst (which arrive as fast as the mirror creates
/// their objects), short next to the heal latency target of a second.
const LINGER: Duration = Duration::from_millis(100);
/// One Commit at a time: each makes the emulator resend the collection to listeners, and
/// resends of concurrent commits have been seen to corrupt the listen stream.
const IN_FLIGHT: usize = 1;
/// The longest a heal waits for the mirror's listen stream to finish sending its snapshot.
const SNAPSHOT_WAIT: Duration = Duration::from_secs(5);
/// Single commits at once after a refused group.
const ONE_BY_ONE: usize = 8;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Tries of one commit that fails in a way worth retrying (unavailable, a lost answer):
/// retrying is safe, because a commit that was applied fails its precondition the second
/// time, and the heal then finds its own healing id in the document.
const COMMIT_TRIES: u32 = 4;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

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
    /// after connecting), heals wait for it, up to [`SNAPSHOT_WAIT`]; None without a mirror. The emulator corrupts a
    /// stream whose snapshot a write's changes interrupt: the client cannot decode it and
    /// reconnects a second later to read everything again (a burst of 1,000 heals at start-up
    /// saw up to three such reconnects in a row, each holding back the batches not yet read).
    /// Against Firestore the wait only holds back heals during the read that follows a
    /// (re)connection, and the heals that gather meanwhile share one commit.
    pub fn start(
        db: FirestoreDb,
        snapshot_read: Option<tokio::sync::watch::Receiver<bool>>,
    ) -> Self {
        let batcher = Batcher::start(MAX_WRITES, LINGER, IN_FLIGHT, move |heals| {
            let db = db.clone();
            async move { commit_each(&db, heals).await }
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
async fn commit_each(db: &FirestoreDb, heals: Vec<HealWrite>) -> Vec<FirestoreResult<()>> {
    match commit(db, &heals).await {
        Ok(()) => heals.iter().map(|_| Ok(())).collect(),
        Err(e) if heals.len() == 1 => vec![Err(e)],
        Err(e) => {
            debug!(heals = heals.len(), error = %e, "a commit of heals was refused; committing them one by one");
            futures::stream::iter(heals)
                .map(|heal| async move { commit(db, std::slice::from_ref(&heal)).await })
                .buffered(ONE_BY_ONE)
                .collect()
                .await
        }
    }
}

/// One atomic, non-transactional Commit of the heals, retried while it fails transiently.
async fn commit(db: &FirestoreDb, heals: &[HealWrite]) -> FirestoreResult<()> {
    // Writes are built the way the crate builds a transaction's, with no transaction: a
    // Commit without one needs no BeginTransaction round trip and holds no locks.
    let mut writes = FirestoreTransactionData::new(
        Vec::new(),
        db.get_documents_path().clone(),
        tracing::Span::none(),
        Vec::new(),
    );
    for heal in heals {
        db.fluent()
            .update()
            .fields(HEAL_FIELDS)
            .in_col(&heal.collection)
            .precondition(FirestoreWritePrecondition::UpdateTime(heal.version))
            .document_id(&heal.doc_id)
            .object(&heal.fields)
            .add_to_transaction(&mut writes)?;
    }
    let mut delay = FIRST_RETRY_DELAY;
    let mut tries = 1;
    loop {
        let mut request = tonic::Request::new(CommitRequest {
            database: db.get_database_path().clone(),
            writes: writes.writes().clone(),
            transaction: Vec::new(),
            request_options: None,
        });
        request.set_timeout(REQUEST_TIMEOUT);
        match db.client().get().commit(request).await {
            Ok(_) => return Ok(()),
            Err(status) => match FirestoreError::from(status) {
                FirestoreError::DatabaseError(e) if e.retry_possible && tries < COMMIT_TRIES => {
                    debug!(error = %e, tries, "committing heals failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    tries += 1;
                }
                e => return Err(e),
            },
        }
    }
}
