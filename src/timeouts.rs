//! How long each network call may take, in one place, with why. A call without a bound can
//! hang a worker for ever (four hung BigQuery inserts once stopped every export until a
//! restart), so every client the controller builds takes its bound from here.
//!
//! The Kubernetes client keeps kube's connect (30 s) and write bounds and gets [`KUBE_READ`];
//! the lease's calls are bounded more tightly by [`lease_call`] on top. BigQuery's count
//! queries also ask the service to answer within `source::bigquery`'s 20 s (`timeoutMs`),
//! below [`BIGQUERY_REQUEST`].

use std::time::Duration;

/// An http trigger: a processor run can take minutes; longer counts as a failed trigger.
pub const TRIGGER_REQUEST: Duration = Duration::from_secs(300);
/// The GKE metadata server answers an ID token request locally, in milliseconds.
pub const METADATA_TOKEN: Duration = Duration::from_secs(10);
/// A consolidation request only enqueues work on the pipeline's side; it is retried.
pub const CONSOLIDATION_REQUEST: Duration = Duration::from_secs(10);
/// A Slack webhook answers in well under a second; delivery is retried with backoff.
pub const SLACK_REQUEST: Duration = Duration::from_secs(10);
/// One BigQuery REST call (a streaming insert of up to 500 rows, a query): BigQuery answers
/// inserts in well under a second and queries within their own 20 s `timeoutMs`, so a minute
/// means the call is lost, and the export's backoff tries it again.
pub const BIGQUERY_REQUEST: Duration = Duration::from_secs(60);
/// One Firestore call (a Commit of up to 500 writes, a document read, a history write):
/// Firestore answers in milliseconds; a Commit that hangs holds every heal queued behind it.
pub const FIRESTORE_REQUEST: Duration = Duration::from_secs(10);
/// Opening a connection to BigQuery (or its emulator).
pub const BIGQUERY_CONNECT: Duration = Duration::from_secs(10);

/// Silence on a Kubernetes connection (kube sets none): just above the 290 s a watch asks
/// the API server to hold it open, so an idle watch is never cut, while a request the API
/// server never answers still ends.
pub const KUBE_READ: Duration = Duration::from_secs(295);

/// One read or write of the leader-election Lease: a third of the lease, so that a call that
/// hangs still leaves time to renew before the lease runs out (a renewal that blocked past
/// the lease would let a second replica lead while this one still acts).
pub fn lease_call(lease: Duration) -> Duration {
    lease / 3
}
