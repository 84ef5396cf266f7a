//! Everything the controller writes outside the cluster: healing events to Firestore and
//! BigQuery, finished batches' outcomes to BigQuery, Slack alerts, the consolidation request after an auto-completion, processor
//! triggers, and the Firestore documents it changes (heals of batch documents, the
//! original's phase history).

pub mod bigquery;
pub mod consolidation;
pub mod firestore;
pub mod firestore_commit;
pub mod firestore_heal;
pub mod firestore_history;
pub mod row;
pub mod slack;
pub mod trigger;

use crate::runtime::batcher::ItemResult;
use bigquery::{BigQueryEventSink, BigQueryExport, BigQueryRows};
use firestore::FirestoreEventSink;
use row::BatchOutcomeRow;

use crate::Error;
use crate::api::HealingEvent;

/// The sink names used as keys of a HealingEvent's `status.exports`.
pub const FIRESTORE: &str = "firestore";
pub const BIGQUERY: &str = "bigquery";

/// The id of an event's record in every sink (the Firestore document id, the BigQuery
/// insertId): its namespace and its healing id. HealingEvent names are unique only within a
/// namespace, so the bare healing id would let one namespace's record overwrite (or be
/// deduplicated against) another's. A namespace name has no `.`, so the key is unambiguous.
pub fn record_key(namespace: Option<&str>, healing_id: &str) -> String {
    match namespace {
        Some(ns) if !ns.is_empty() => format!("{ns}.{healing_id}"),
        _ => healing_id.to_owned(),
    }
}

/// The namespace an event's record is filed under: the HealingEvent's own, which the API
/// server sets, rather than the target the producer claims (only objects built outside a
/// cluster, in tests, lack one).
pub fn record_namespace(event: &HealingEvent) -> Option<String> {
    event
        .metadata
        .namespace
        .clone()
        .or_else(|| event.spec.target.namespace.clone())
}

/// A URL as a log line, an Event or a status may show it: origin and path, without a user,
/// password, query or fragment, which may carry a key. Unparseable: not shown at all.
pub fn shown_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) if u.has_host() => format!("{}{}", u.origin().ascii_serialization(), u.path()),
        _ => "<a URL that does not parse>".to_owned(),
    }
}

/// How an outbound POST is retried: this many tries in all, the wait doubling from `first`.
#[derive(Clone, Copy, Debug)]
pub struct Retries {
    pub attempts: u32,
    pub first: std::time::Duration,
}

/// POSTs `body` (as JSON, with `headers`) to `url`, retrying per `retries` what may pass
/// later: no answer, a 5xx, a redirect (none is followed), 408 and 429; any other 4xx is a
/// refusal, returned at once. Errors name `step` and the URL as [`shown_url`] shows it, or
/// `stand_in` for a URL that is itself a secret (a webhook); reqwest's own errors, which
/// print the whole URL, lose it.
pub async fn post_retried(
    client: &reqwest::Client,
    url: &str,
    headers: &[(&str, &str)],
    body: &serde_json::Value,
    retries: Retries,
    step: &'static str,
    stand_in: Option<&str>,
) -> Result<reqwest::StatusCode, Error> {
    let target = stand_in.map_or_else(|| shown_url(url), str::to_owned);
    let mut backoff = retries.first;
    let mut attempt = 1;
    loop {
        let mut post = client.post(url).json(body);
        for (name, value) in headers {
            post = post.header(*name, *value);
        }
        let (error, worth_retrying) = match post.send().await {
            Ok(r) if r.status().is_success() => return Ok(r.status()),
            Ok(r) => {
                let status = r.status();
                let again = status.is_server_error()
                    || status.is_redirection()
                    || matches!(status.as_u16(), 408 | 429);
                let error = Error::HttpStatus {
                    step,
                    target: target.clone(),
                    status,
                };
                (error, again)
            }
            Err(e) => {
                let error = Error::Http {
                    step,
                    target: target.clone(),
                    source: e.without_url(),
                };
                (error, true)
            }
        };
        if attempt >= retries.attempts || !worth_retrying {
            return Err(error);
        }
        tracing::debug!(attempt, %error, "POST failed; retrying");
        tokio::time::sleep(backoff).await;
        backoff *= 2;
        attempt += 1;
    }
}

/// The configured export sinks. None configured: events live in Kubernetes only.
#[derive(Default)]
pub struct Sinks {
    firestore: Option<FirestoreEventSink>,
    bigquery: Option<BigQueryEventSink>,
    outcomes: Option<BigQueryRows<BatchOutcomeRow>>,
}

impl Sinks {
    /// Connects the sinks asked for: Firestore when there is a database and a collection,
    /// BigQuery when a table is configured.
    pub async fn connect(
        db: Option<&::firestore::FirestoreDb>,
        events_collection: Option<&str>,
        bigquery: Option<&BigQueryExport>,
    ) -> Result<Self, Error> {
        let firestore = match (db, events_collection) {
            (Some(db), Some(collection)) => {
                Some(FirestoreEventSink::new(db.clone(), collection.to_owned()).await?)
            }
            _ => None,
        };
        let (bigquery, outcomes) = match bigquery {
            Some(export) => {
                let client = crate::gcp::bigquery_client(export.emulator_host.as_deref())
                    .await
                    .map_err(|e| Error::bigquery("connecting to BigQuery", e))?;
                let outcomes = export
                    .outcomes
                    .clone()
                    .map(|table| BigQueryRows::new(client.clone(), table));
                let events = BigQueryEventSink::new(client, export.table.clone());
                (Some(events), outcomes)
            }
            None => (None, None),
        };
        Ok(Self {
            firestore,
            bigquery,
            outcomes,
        })
    }

    /// Whether finished batches' outcomes are exported (to BigQuery's `batch_outcomes`).
    pub fn exports_outcomes(&self) -> bool {
        self.outcomes.is_some()
    }

    pub async fn export_outcome(&self, row: BatchOutcomeRow) -> ItemResult {
        match &self.outcomes {
            Some(outcomes) => outcomes.insert(row).await,
            None => Err("no batch outcomes table is configured".into()),
        }
    }

    /// The names of the configured sinks.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.bigquery.is_some() {
            names.push(BIGQUERY);
        }
        if self.firestore.is_some() {
            names.push(FIRESTORE);
        }
        names
    }

    pub async fn export(&self, sink: &str, event: &HealingEvent) -> ItemResult {
        match (sink, &self.firestore, &self.bigquery) {
            (FIRESTORE, Some(firestore), _) => firestore.export(event).await,
            (BIGQUERY, _, Some(bigquery)) => bigquery.export(event).await,
            _ => Err(format!("no sink named {sink} is configured").into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn a_shown_url_keeps_no_credential() {
        assert_eq!(
            shown_url("https://user:pw@hooks.example:8443/services/x?key=s3cret#frag"),
            "https://hooks.example:8443/services/x"
        );
        assert!(!shown_url("not a url s3cret").contains("s3cret"));
    }
}
