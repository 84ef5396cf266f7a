//! Many Firestore writes in one atomic, non-transactional Commit; when the group is refused,
//! one Commit per write, so each write gets its own answer.
//!
//! One request instead of one per write. On the emulator that matters most, because every
//! committed request into a listened collection makes the emulator resend the listener every
//! document its target matches (the mirror's: the whole batch collection): 50 single updates
//! of a 500-document collection resent 25,000 documents, one Commit of the same 50 resent
//! 500, and a non-atomic BatchWrite, which applies its writes one by one, resent 25,000 too. A Commit with one
//! refused write applies none; refusals (a late completion that fails a heal's precondition)
//! are rare next to the writes that go through.

use std::time::Duration;

use firestore::errors::FirestoreError;
use firestore::gcloud_sdk::google::firestore::v1::CommitRequest;
use firestore::gcloud_sdk::tonic;
use firestore::{FirestoreDb, FirestoreResult, FirestoreTransactionData};
use futures::StreamExt;
use tracing::debug;

/// Single commits at once after a refused group.
const ONE_BY_ONE: usize = 8;
/// Tries of one commit that fails in a way worth retrying (unavailable, a lost answer).
/// Retrying is safe for the writes committed here: a heal that was applied fails its
/// precondition the second time (and then finds its own healing id in the document), and an
/// exported event is the same document written again.
const COMMIT_TRIES: u32 = 4;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Commits the writes `add` makes of `items` together, or, if that is refused, one by one; an
/// answer per item, in order. An item `add` cannot write is answered with its error.
pub async fn commit_each<T>(
    db: &FirestoreDb,
    items: &[T],
    add: impl Fn(&T, &mut FirestoreTransactionData) -> FirestoreResult<()>,
) -> Vec<FirestoreResult<()>> {
    let writes = |items: &[&T]| {
        // Writes are built the way the crate builds a transaction's, with no transaction: a
        // Commit without one needs no BeginTransaction round trip and holds no locks.
        let mut writes = FirestoreTransactionData::new(
            Vec::new(),
            db.get_documents_path().clone(),
            tracing::Span::none(),
            Vec::new(),
        );
        let added: Vec<FirestoreResult<()>> =
            items.iter().map(|item| add(item, &mut writes)).collect();
        (writes, added)
    };
    let all: Vec<&T> = items.iter().collect();
    let (group, mut answers) = writes(&all);
    let writable: Vec<&T> = all
        .iter()
        .zip(&answers)
        .filter(|(_, added)| added.is_ok())
        .map(|(item, _)| *item)
        .collect();
    if writable.is_empty() {
        return answers;
    }
    let committed = match commit(db, &group).await {
        Ok(()) => writable.iter().map(|_| Ok(())).collect(),
        Err(e) if writable.len() == 1 => vec![Err(e)],
        Err(e) => {
            debug!(writes = writable.len(), error = %e, "a commit was refused; committing its writes one by one");
            let singles: Vec<FirestoreTransactionData> =
                writable.iter().map(|item| writes(&[*item]).0).collect();
            futures::stream::iter(singles)
                .map(|single| async move { commit(db, &single).await })
                .buffered(ONE_BY_ONE)
                .collect()
                .await
        }
    };
    let mut committed = committed.into_iter();
    for answer in answers.iter_mut().filter(|a| a.is_ok()) {
        if let Some(result) = committed.next() {
            *answer = result;
        }
    }
    answers
}

/// One atomic, non-transactional Commit, retried while it fails transiently.
async fn commit(db: &FirestoreDb, writes: &FirestoreTransactionData) -> FirestoreResult<()> {
    let mut delay = FIRST_RETRY_DELAY;
    let mut tries = 1;
    loop {
        let mut request = tonic::Request::new(CommitRequest {
            database: db.get_database_path().clone(),
            writes: writes.writes().clone(),
            transaction: Vec::new(),
            request_options: None,
        });
        request.set_timeout(crate::timeouts::FIRESTORE_REQUEST);
        match db.client().get().commit(request).await {
            Ok(_) => return Ok(()),
            Err(status) => match FirestoreError::from(status) {
                FirestoreError::DatabaseError(e) if e.retry_possible && tries < COMMIT_TRIES => {
                    debug!(error = %e, tries, "a commit failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    tries += 1;
                }
                e => return Err(e),
            },
        }
    }
}
