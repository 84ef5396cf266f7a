//! Rows to BigQuery by streaming insert (healing events, and finished batches' outcomes):
//! batched up to 500 per request, each with its insertId (namespace and healing id, or
//! namespace and batch id: BigQuery drops a repeated insertId within its dedup window, and
//! the analysis counts each once in any case).
//!
//! One bad row must not hold back the rest. Real BigQuery answers per row (`insertErrors`,
//! with the innocent rows marked `stopped`, which are sent again); the emulator instead fails
//! the whole request (400, or 500 for a value it cannot store), so a rejected request of
//! several rows is split in halves until the bad rows are alone.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_response::TableDataInsertAllResponse;
use tracing::{debug, warn};

use super::row::{BatchOutcomeRow, HealingEventRow};
use crate::api::HealingEvent;
use crate::runtime::batcher::{Batcher, ItemResult};

/// Rows per insertAll request (BigQuery recommends at most 500).
const MAX_ROWS: usize = 500;
const LINGER: Duration = Duration::from_millis(100);
const IN_FLIGHT: usize = 4;

/// Where the rows go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableRef {
    pub project: String,
    pub dataset: String,
    pub table: String,
}

impl std::fmt::Display for TableRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}.{}", self.project, self.dataset, self.table)
    }
}

/// The BigQuery export as configured: the events table, the batch outcomes table (None: not
/// exported), and the emulator to use instead of the real service (tests and the demo;
/// production uses Application Default Credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigQueryExport {
    pub table: TableRef,
    pub outcomes: Option<TableRef>,
    pub emulator_host: Option<String>,
}

/// A row of a table the controller streams into.
pub trait TableRow: serde::Serialize + Clone + Send + Sync + 'static {
    /// The schema file the table is created from, for the message when it is missing.
    const SCHEMA_FILE: &'static str;
    /// What the rows are, for the logs.
    const WHAT: &'static str;
    fn insert_id(&self) -> String;
}

impl TableRow for HealingEventRow {
    const SCHEMA_FILE: &'static str = "schemas/healing_events.json";
    const WHAT: &'static str = "healing events";
    fn insert_id(&self) -> String {
        HealingEventRow::insert_id(self)
    }
}

impl TableRow for BatchOutcomeRow {
    const SCHEMA_FILE: &'static str = "schemas/batch_outcomes.json";
    const WHAT: &'static str = "batch outcomes";
    fn insert_id(&self) -> String {
        BatchOutcomeRow::insert_id(self)
    }
}

/// Streams rows of type `R` into one table, batched.
pub struct BigQueryRows<R> {
    batcher: Batcher<R>,
}

impl<R: TableRow> BigQueryRows<R> {
    pub fn new(client: Client, table: TableRef) -> Self {
        let destination = Arc::new(Destination {
            client,
            table,
            last_missing_table_warning: Mutex::new(None),
        });
        let batcher = Batcher::start(MAX_ROWS, LINGER, IN_FLIGHT, move |rows| {
            let destination = destination.clone();
            async move { destination.insert(rows).await }
        });
        Self { batcher }
    }

    pub async fn insert(&self, row: R) -> ItemResult {
        self.batcher.export(row).await
    }
}

/// Healing events to their table.
pub struct BigQueryEventSink(BigQueryRows<HealingEventRow>);

impl BigQueryEventSink {
    pub fn new(client: Client, table: TableRef) -> Self {
        Self(BigQueryRows::new(client, table))
    }

    pub async fn export(&self, event: &HealingEvent) -> ItemResult {
        self.0.insert(HealingEventRow::from_event(event)).await
    }
}

/// How often a missing table is logged: every event's status says so anyway, and each retry
/// of each batch would log it again.
const MISSING_TABLE_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The table and the client that reaches it.
struct Destination {
    client: Client,
    table: TableRef,
    last_missing_table_warning: Mutex<Option<Instant>>,
}

/// The answer to one insertAll request.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Attempt {
    /// Accepted as a whole, with an outcome per row, in order.
    Rows(Vec<RowOutcome>),
    /// Refused as a whole in a way some row may be to blame for: invalid (400), or the
    /// emulator's internal error (500) on a value it cannot store.
    Rejected(String),
    /// The table (or its dataset) does not exist: the message says how to create it.
    TableMissing(String),
    /// Refused for another reason no row is to blame for: unreachable, unauthorised.
    Failed(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum RowOutcome {
    Inserted,
    /// Not inserted because another row of the request was bad; fine to send again.
    Stopped,
    Refused(String),
}

/// Sends one request; the seam between the delivery rules below and the HTTP client.
type SendRows<'a, R> = dyn Fn(Vec<R>) -> BoxFuture<'a, Attempt> + Send + Sync + 'a;

impl Destination {
    /// Inserts `rows`, returning one result per row, in order.
    async fn insert<R: TableRow>(&self, rows: Vec<R>) -> Vec<ItemResult> {
        let send = |rows: Vec<R>| -> BoxFuture<'_, Attempt> {
            Box::pin(async move {
                debug!(rows = rows.len(), table = %self.table, "streaming {} to BigQuery", R::WHAT);
                self.insert_once(&rows).await
            })
        };
        deliver(rows, &send).await
    }

    async fn insert_once<R: TableRow>(&self, rows: &[R]) -> Attempt {
        let table = &self.table;
        let mut request = TableDataInsertAllRequest::new();
        for row in rows {
            if let Err(e) = request.add_row(Some(row.insert_id()), row) {
                return Attempt::Rejected(format!("BigQuery row: {e}"));
            }
        }
        let send = || {
            self.client.tabledata().insert_all(
                &table.project,
                &table.dataset,
                &table.table,
                request.clone(),
            )
        };
        let mut result = send().await;
        // A kept-alive connection the server has just closed fails before any answer: send
        // once more on a fresh one rather than fail every row (safe: the insertIds dedupe).
        if let Err(BQError::RequestError(e)) = &result
            && e.is_request()
        {
            debug!(%table, error = %e, "insertAll failed to send; sending again");
            result = send().await;
        }
        match result {
            Ok(response) => Attempt::Rows(row_outcomes(rows.len(), response, table)),
            Err(e) => {
                let attempt = classify(e, table, R::SCHEMA_FILE);
                if let Attempt::TableMissing(message) = &attempt
                    && self.missing_table_warning_due()
                {
                    warn!(%table, "{message}");
                }
                attempt
            }
        }
    }

    fn missing_table_warning_due(&self) -> bool {
        let Ok(mut last) = self.last_missing_table_warning.lock() else {
            return true;
        };
        let now = Instant::now();
        let due = last.is_none_or(|t| now.duration_since(t) >= MISSING_TABLE_WARNING_INTERVAL);
        if due {
            *last = Some(now);
        }
        due
    }
}

/// Sends `rows` and settles the answer.
fn deliver<'a, R: Clone + Send + Sync + 'a>(
    rows: Vec<R>,
    send: &'a SendRows<'a, R>,
) -> BoxFuture<'a, Vec<ItemResult>> {
    Box::pin(async move {
        if rows.is_empty() {
            return Vec::new();
        }
        let attempt = send(rows.clone()).await;
        settle(rows, attempt, send).await
    })
}

/// One result per row from the answer to a request of `rows`:
/// - rows another row `stopped` are sent again on their own;
/// - a request rejected as a whole is split in halves, both sent, to find the bad rows. When
///   both halves are rejected too the cause is not one row but the table or the service, so
///   splitting stops: a systemic failure costs three requests, not one per row.
fn settle<'a, R: Clone + Send + Sync + 'a>(
    rows: Vec<R>,
    attempt: Attempt,
    send: &'a SendRows<'a, R>,
) -> BoxFuture<'a, Vec<ItemResult>> {
    Box::pin(async move {
        match attempt {
            Attempt::Rows(outcomes) if outcomes.len() != rows.len() => {
                vec![Err("BigQuery answered for the wrong number of rows".into()); rows.len()]
            }
            Attempt::Rows(outcomes) => {
                let stopped: Vec<usize> = (0..rows.len())
                    .filter(|i| outcomes[*i] == RowOutcome::Stopped)
                    .collect();
                let mut results: Vec<ItemResult> = outcomes
                    .into_iter()
                    .map(|o| match o {
                        RowOutcome::Inserted => Ok(()),
                        RowOutcome::Stopped => {
                            Err("BigQuery stopped the row because of another row".into())
                        }
                        RowOutcome::Refused(message) => Err(message.into()),
                    })
                    .collect();
                // All stopped and none refused would loop; leave those to the event's backoff.
                if !stopped.is_empty() && stopped.len() < rows.len() {
                    let again: Vec<R> = stopped.iter().map(|i| rows[*i].clone()).collect();
                    for (i, result) in stopped.into_iter().zip(deliver(again, send).await) {
                        results[i] = result;
                    }
                }
                results
            }
            Attempt::Rejected(_) if rows.len() > 1 => {
                let mut first = rows;
                let second = first.split_off(first.len() / 2);
                let (a, b) = futures::join!(send(first.clone()), send(second.clone()));
                if let (Attempt::Rejected(message), Attempt::Rejected(_)) = (&a, &b) {
                    return vec![Err(message.as_str().into()); first.len() + second.len()];
                }
                let (mut results, rest) =
                    futures::join!(settle(first, a, send), settle(second, b, send));
                results.extend(rest);
                results
            }
            Attempt::Rejected(message)
            | Attempt::TableMissing(message)
            | Attempt::Failed(message) => {
                vec![Err(message.into()); rows.len()]
            }
        }
    })
}

fn classify(error: BQError, table: &TableRef, schema_file: &str) -> Attempt {
    match error {
        BQError::ResponseError { error } => {
            let e = error.error;
            match e.code {
                404 => Attempt::TableMissing(format!(
                    "BigQuery table {table} not found ({}); create it with \
                     `bq mk --dataset {}:{}` (if the dataset is missing too) and \
                     `bq mk --table {table} {schema_file}`",
                    e.message, table.project, table.dataset
                )),
                400 | 500 => Attempt::Rejected(format!(
                    "BigQuery rejected the rows for {table} ({}): {}",
                    e.code, e.message
                )),
                code => Attempt::Failed(format!("BigQuery ({code}): {}", e.message)),
            }
        }
        other => Attempt::Failed(format!("BigQuery unreachable: {other}")),
    }
}

/// Per-row outcomes of a request accepted as a whole, from its `insertErrors`.
fn row_outcomes(
    count: usize,
    response: TableDataInsertAllResponse,
    table: &TableRef,
) -> Vec<RowOutcome> {
    let mut outcomes = vec![RowOutcome::Inserted; count];
    for row_error in response.insert_errors.unwrap_or_default() {
        let Some(index) = row_error
            .index
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < count)
        else {
            // An error we cannot pin on a row: count no row as inserted (sending again is
            // safe, the insertIds dedupe).
            let message =
                format!("BigQuery reported an error for {table} without a valid row index");
            return vec![RowOutcome::Refused(message); count];
        };
        let errors = row_error.errors.unwrap_or_default();
        if !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.reason.as_deref() == Some("stopped"))
        {
            outcomes[index] = RowOutcome::Stopped;
            continue;
        }
        let text: Vec<String> = errors
            .iter()
            .map(|e| {
                format!(
                    "{}{}",
                    e.location
                        .as_deref()
                        .map(|l| format!("{l}: "))
                        .unwrap_or_default(),
                    e.message.as_deref().unwrap_or("invalid")
                )
            })
            .collect();
        outcomes[index] = RowOutcome::Refused(format!(
            "BigQuery rejected the row for {table}: {}",
            text.join("; ")
        ));
    }
    outcomes
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A fake table that refuses whole requests containing a bad row, as the emulator does.
    fn run(
        rows: Vec<u32>,
        answer: impl Fn(&[u32]) -> Attempt + Send + Sync,
    ) -> (Vec<ItemResult>, usize) {
        let requests = AtomicUsize::new(0);
        let send = |rows: Vec<u32>| -> BoxFuture<'_, Attempt> {
            requests.fetch_add(1, Ordering::SeqCst);
            let attempt = answer(&rows);
            Box::pin(async move { attempt })
        };
        let results = futures::executor::block_on(deliver(rows, &send));
        (results, requests.load(Ordering::SeqCst))
    }

    #[test]
    fn one_bad_row_is_isolated_in_a_few_requests_and_the_rest_are_inserted() {
        let rows: Vec<u32> = (0..500).collect();
        let (results, requests) = run(rows, |rows| {
            if rows.contains(&137) {
                Attempt::Rejected("invalid value".into())
            } else {
                Attempt::Rows(vec![RowOutcome::Inserted; rows.len()])
            }
        });
        for (i, r) in results.iter().enumerate() {
            assert_eq!(r.is_err(), i == 137, "row {i}: {r:?}");
        }
        assert!(requests <= 1 + 2 * 9, "{requests} requests");
    }

    #[test]
    fn a_failure_of_every_request_stops_splitting_after_one_split() {
        let (results, requests) = run((0..500).collect(), |_| Attempt::Rejected("down".into()));
        assert!(results.iter().all(|r| *r == Err("down".into())));
        assert_eq!(requests, 3);
        let (results, requests) = run((0..500).collect(), |_| Attempt::Failed("no table".into()));
        assert!(results.iter().all(Result::is_err));
        assert_eq!(requests, 1);
    }

    #[test]
    fn rows_stopped_by_another_rows_error_are_sent_again() {
        let (results, requests) = run(vec![1, 2, 3], |rows| {
            Attempt::Rows(
                rows.iter()
                    .map(|r| match (r, rows.len()) {
                        (2, _) => RowOutcome::Refused("bad".into()),
                        (_, 3) => RowOutcome::Stopped,
                        _ => RowOutcome::Inserted,
                    })
                    .collect(),
            )
        });
        assert_eq!(results, [Ok(()), Err("bad".into()), Ok(())]);
        assert_eq!(requests, 2);
    }

    #[test]
    fn insert_errors_map_to_rows_by_index() {
        let table = TableRef {
            project: "p".into(),
            dataset: "d".into(),
            table: "t".into(),
        };
        let response: TableDataInsertAllResponse = serde_json::from_value(serde_json::json!({
            "kind": "bigquery#tableDataInsertAllResponse",
            "insertErrors": [
                {"index": 1, "errors": [{"reason": "invalid", "location": "timestamp", "message": "out of range"}]},
                {"index": 0, "errors": [{"reason": "stopped", "message": ""}]},
            ]
        }))
        .unwrap();
        let outcomes = row_outcomes(3, response, &table);
        assert_eq!(outcomes[0], RowOutcome::Stopped);
        assert_eq!(
            outcomes[1],
            RowOutcome::Refused(
                "BigQuery rejected the row for p:d.t: timestamp: out of range".into()
            )
        );
        assert_eq!(outcomes[2], RowOutcome::Inserted);
    }
}
