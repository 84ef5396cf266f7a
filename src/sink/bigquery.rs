//! Healing events to BigQuery by streaming insert: rows batched up to 500 per request, each
//! with insertId = healing_id (BigQuery drops a repeated insertId within its dedup window;
//! the analysis counts each healing_id once in any case).
//!
//! One bad row must not hold back the rest. Real BigQuery answers per row (`insertErrors`,
//! with the innocent rows marked `stopped`, which are sent again); the emulator instead fails
//! the whole request, so a rejected request of several rows is split in halves until the bad
//! rows are alone.

use std::time::Duration;

use futures::future::BoxFuture;
use gcp_bigquery_client::Client;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_response::TableDataInsertAllResponse;
use tracing::{debug, warn};

use super::batcher::{Batcher, ItemResult};
use super::row::HealingEventRow;
use crate::api::HealingEvent;

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

/// The BigQuery export as configured: the table, and the emulator to use instead of the real
/// service (tests and the demo; production uses Application Default Credentials).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BigQueryExport {
    pub table: TableRef,
    pub emulator_host: Option<String>,
}

pub struct BigQueryEventSink {
    batcher: Batcher<HealingEventRow>,
}

impl BigQueryEventSink {
    pub fn new(client: Client, table: TableRef) -> Self {
        let batcher = Batcher::start(MAX_ROWS, LINGER, IN_FLIGHT, move |rows| {
            let (client, table) = (client.clone(), table.clone());
            async move { insert(&client, &table, rows).await }
        });
        Self { batcher }
    }

    pub async fn export(&self, event: &HealingEvent) -> ItemResult {
        self.batcher
            .submit(HealingEventRow::from_event(event))
            .await
    }
}

/// Why a whole request failed.
#[derive(Debug, PartialEq, Eq)]
enum RequestFailure {
    /// The request was refused as invalid: some row in it is bad (or the table's schema
    /// does not fit our rows at all).
    Rejected(String),
    /// Anything else (table missing, unreachable, unauthorised): no row is to blame.
    Failed(String),
}

/// Inserts `rows`, returning one result per row, in order.
fn insert<'a>(
    client: &'a Client,
    table: &'a TableRef,
    rows: Vec<HealingEventRow>,
) -> BoxFuture<'a, Vec<ItemResult>> {
    Box::pin(async move {
        if rows.is_empty() {
            return Vec::new();
        }
        debug!(rows = rows.len(), %table, "streaming healing events to BigQuery");
        match insert_once(client, table, &rows).await {
            Ok(response) => per_row_results(client, table, rows, response).await,
            Err(RequestFailure::Rejected(message)) if rows.len() > 1 => {
                let mut first = rows;
                let second = first.split_off(first.len() / 2);
                let mut results = insert(client, table, first).await;
                results.extend(insert(client, table, second).await);
                debug!(%message, "a rejected request was split to isolate its bad rows");
                results
            }
            Err(RequestFailure::Rejected(message) | RequestFailure::Failed(message)) => {
                vec![Err(message); rows.len()]
            }
        }
    })
}

async fn insert_once(
    client: &Client,
    table: &TableRef,
    rows: &[HealingEventRow],
) -> Result<TableDataInsertAllResponse, RequestFailure> {
    let mut request = TableDataInsertAllRequest::new();
    for row in rows {
        request
            .add_row(Some(row.healing_id.clone()), row)
            .map_err(|e| RequestFailure::Rejected(format!("BigQuery row: {e}")))?;
    }
    client
        .tabledata()
        .insert_all(&table.project, &table.dataset, &table.table, request)
        .await
        .map_err(|e| classify(e, table))
}

fn classify(error: BQError, table: &TableRef) -> RequestFailure {
    match error {
        BQError::ResponseError { error } => {
            let e = error.error;
            match e.code {
                404 => {
                    let message = format!(
                        "BigQuery table {table} not found ({}); create it with \
                         `bq mk --dataset {}:{}` (if the dataset is missing too) and \
                         `bq mk --table {table} schemas/healing_events.json`",
                        e.message, table.project, table.dataset
                    );
                    warn!(%table, "{message}");
                    RequestFailure::Failed(message)
                }
                400 => RequestFailure::Rejected(format!(
                    "BigQuery rejected the rows for {table}: {}",
                    e.message
                )),
                code => RequestFailure::Failed(format!("BigQuery ({code}): {}", e.message)),
            }
        }
        other => RequestFailure::Failed(format!("BigQuery unreachable: {other}")),
    }
}

/// Per-row errors from a request that was accepted as a whole. Rows BigQuery `stopped`
/// because of another row's error were not inserted and are sent again on their own.
async fn per_row_results(
    client: &Client,
    table: &TableRef,
    rows: Vec<HealingEventRow>,
    response: TableDataInsertAllResponse,
) -> Vec<ItemResult> {
    let mut results: Vec<ItemResult> = vec![Ok(()); rows.len()];
    let mut stopped = Vec::new();
    for row_error in response.insert_errors.unwrap_or_default() {
        let Some(index) = row_error
            .index
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i < rows.len())
        else {
            // An error we cannot pin on a row: nothing in this request counts as inserted
            // (sending again is safe, the insertIds dedupe).
            return vec![
                Err(format!(
                    "BigQuery reported an error for {table} without a valid row index"
                ));
                rows.len()
            ];
        };
        let errors = row_error.errors.unwrap_or_default();
        if !errors.is_empty()
            && errors
                .iter()
                .all(|e| e.reason.as_deref() == Some("stopped"))
        {
            stopped.push(index);
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
        results[index] = Err(format!(
            "BigQuery rejected the row for {table}: {}",
            text.join("; ")
        ));
    }
    if !stopped.is_empty() && stopped.len() < rows.len() {
        let again: Vec<HealingEventRow> = stopped.iter().map(|i| rows[*i].clone()).collect();
        for (index, result) in stopped.into_iter().zip(insert(client, table, again).await) {
            results[index] = result;
        }
    } else if !stopped.is_empty() {
        for index in stopped {
            results[index] = Err(format!("BigQuery stopped the row for {table}"));
        }
    }
    results
}
