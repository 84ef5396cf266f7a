//! Where the records come from: the BigQuery table (a parameterised query over the window),
//! or the HealingEvents in the cluster (listed in pages).

use std::str::FromStr;

use gcp_bigquery_client::Client as BigQuery;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;
use jiff::Timestamp;
use kube::api::{Api, ListParams};

use super::record::{BatchRecord, Record, target_key};
use super::window::Window;
use crate::api::schema::TableName;
use crate::error::{Error, KubeResultExt};
use crate::gcp::query_parameter;
use crate::sink::bigquery::TableRef;

/// Rows per page of query results.
const PAGE_ROWS: i32 = 10_000;
/// Objects per page when listing the cluster's events.
const PAGE_OBJECTS: u32 = 500;

/// BigQuery's canonical timestamp text.
fn timestamp_parameter(t: Timestamp) -> String {
    t.strftime("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string()
}

/// The rows of `table` in the window (and of the type), each becoming a record. The names
/// go into the SQL only once validated as identifiers; the values only as parameters.
pub async fn from_bigquery(
    client: &BigQuery,
    table: &TableRef,
    window: Window,
    healing_type: Option<&str>,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Record>, Error> {
    let name = table_name(table)?;
    let mut sql = format!(
        "SELECT * FROM `{}` WHERE `timestamp` >= @start AND `timestamp` < @end",
        name.as_str()
    );
    let mut parameters = vec![
        query_parameter("start", "TIMESTAMP", timestamp_parameter(window.start)),
        query_parameter("end", "TIMESTAMP", timestamp_parameter(window.end)),
    ];
    if let Some(t) = healing_type {
        sql.push_str(" AND healing_type = @healing_type");
        parameters.push(query_parameter("healing_type", "STRING", t.to_owned()));
    }
    let mut records = Vec::new();
    let read = |rs: &mut ResultSet| {
        read_rows(rs, table, &mut records)?;
        progress(records.len());
        Ok(())
    };
    query_pages(
        client,
        &table.project,
        sql,
        parameters,
        "querying the events table",
        read,
    )
    .await?;
    Ok(records)
}

/// The batches of the outcomes table `table` that finished in the window; None when the
/// table does not exist (a deployment that does not export them).
pub async fn outcomes_from_bigquery(
    client: &BigQuery,
    table: &TableRef,
    window: Window,
) -> Result<Option<Vec<BatchRecord>>, Error> {
    let name = table_name(table)?;
    // Asked first, rather than read from the query's error, which the emulator and the
    // service word differently.
    let found = client
        .table()
        .get(&table.project, &table.dataset, &table.table, None)
        .await;
    match found {
        Ok(_) => {}
        Err(BQError::ResponseError { error }) if error.error.code == 404 => return Ok(None),
        Err(e) => return Err(Error::bigquery("looking up the batch outcomes table", e)),
    }
    let sql = format!(
        "SELECT namespace, batch_id, finished, finished_time, pause_count, \
         longest_pause_seconds FROM `{}` \
         WHERE finished_time >= @start AND finished_time < @end",
        name.as_str()
    );
    let parameters = vec![
        query_parameter("start", "TIMESTAMP", timestamp_parameter(window.start)),
        query_parameter("end", "TIMESTAMP", timestamp_parameter(window.end)),
    ];
    let mut batches = Vec::new();
    let read = |rs: &mut ResultSet| {
        while rs.next_row() {
            let finished = rs.get_string_by_name("finished_time").ok().flatten();
            let Some(finished_time) = finished.as_deref().and_then(parse_bigquery_timestamp) else {
                continue;
            };
            let text = |column: &str| rs.get_string_by_name(column).ok().flatten();
            batches.push(BatchRecord {
                namespace: text("namespace").filter(|ns| !ns.is_empty()),
                batch_id: text("batch_id").unwrap_or_default(),
                finished: text("finished").unwrap_or_default(),
                finished_time,
                pauses: rs
                    .get_i64_by_name("pause_count")
                    .ok()
                    .flatten()
                    .and_then(|n| u64::try_from(n).ok())
                    .unwrap_or(0),
                longest_pause_seconds: rs.get_f64_by_name("longest_pause_seconds").ok().flatten(),
            });
        }
        Ok(())
    };
    let step = "querying the batch outcomes table";
    query_pages(client, &table.project, sql, parameters, step, read).await?;
    Ok(Some(batches))
}

fn table_name(table: &TableRef) -> Result<TableName, Error> {
    TableName::from_str(&format!(
        "{}.{}.{}",
        table.project, table.dataset, table.table
    ))
    .map_err(|e| Error::Invalid {
        what: "BigQuery table".into(),
        message: e.to_string(),
    })
}

/// Runs `sql` in `project`, handing each page of its result to `read` (the first with the
/// answer, the rest, and the whole of a query that outlived the first call, as they come).
async fn query_pages(
    client: &BigQuery,
    project: &str,
    sql: String,
    parameters: Vec<gcp_bigquery_client::model::query_parameter::QueryParameter>,
    step: &'static str,
    mut read: impl FnMut(&mut ResultSet) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut request = QueryRequest::new(sql);
    request.parameter_mode = Some("NAMED".into());
    request.query_parameters = Some(parameters);
    request.use_legacy_sql = false;
    request.max_results = Some(PAGE_ROWS);

    let response = client
        .job()
        .query(project, request)
        .await
        .map_err(|e| Error::bigquery(step, e))?;
    let job_id = response
        .job_reference
        .as_ref()
        .and_then(|j| j.job_id.clone());
    let mut complete = response.job_complete.unwrap_or(true);
    let mut page_token = response.page_token.clone();
    if complete {
        read(&mut ResultSet::new_from_query_response(response))?;
    }
    // Further pages, or the whole result of a query that outlived the first call.
    while let Some(job_id) = job_id.as_deref()
        && (!complete || page_token.is_some())
    {
        let page = client
            .job()
            .get_query_results(
                project,
                job_id,
                GetQueryResultsParameters {
                    page_token: page_token.clone(),
                    max_results: Some(PAGE_ROWS),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| Error::bigquery("reading the query's results", e))?;
        if !page.job_complete.unwrap_or(true) {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            continue;
        }
        complete = true;
        page_token = page.page_token.clone();
        read(&mut ResultSet::new_from_get_query_results_response(page))?;
    }
    Ok(())
}

/// BigQuery answers TIMESTAMP as epoch seconds in floating point; the emulator as integer
/// microseconds.
fn parse_bigquery_timestamp(text: &str) -> Option<Timestamp> {
    if let Ok(micros) = text.parse::<i64>() {
        // 1e11 s is the year 5138: a bigger integer is microseconds.
        return if micros.abs() > 100_000_000_000 {
            Timestamp::from_microsecond(micros).ok()
        } else {
            Timestamp::from_second(micros).ok()
        };
    }
    let seconds: f64 = text.parse().ok()?;
    Timestamp::from_microsecond((seconds * 1e6).round() as i64).ok()
}

fn read_rows(rs: &mut ResultSet, table: &TableRef, out: &mut Vec<Record>) -> Result<(), Error> {
    if rs.row_count() == 0 {
        return Ok(());
    }
    for required in ["healing_id", "timestamp", "healing_type", "success"] {
        if rs.column_index(required).is_none() {
            return Err(Error::Invalid {
                what: "BigQuery table".into(),
                message: format!("{table} has no column {required}: is it a healing events table?"),
            });
        }
    }
    let string = |rs: &ResultSet, name: &str| -> Option<String> {
        rs.column_index(name)?;
        rs.get_string_by_name(name).ok().flatten()
    };
    while rs.next_row() {
        let Some(healing_id) = string(rs, "healing_id") else {
            continue;
        };
        let Some(timestamp) = string(rs, "timestamp")
            .as_deref()
            .and_then(parse_bigquery_timestamp)
        else {
            tracing::warn!(%healing_id, "row without a readable timestamp skipped");
            continue;
        };
        let boolean = |name: &str| {
            rs.column_index(name)
                .and_then(|_| rs.get_bool_by_name(name).ok().flatten())
        };
        // Absent from the original's table, and null in rows written before they existed.
        let float = |name: &str| {
            rs.column_index(name)
                .and_then(|_| rs.get_f64_by_name(name).ok().flatten())
        };
        out.push(Record {
            healing_id,
            namespace: string(rs, "target_namespace"),
            timestamp,
            healing_type: string(rs, "healing_type").unwrap_or_default(),
            trigger_reason: string(rs, "trigger_reason").unwrap_or_default(),
            action_taken: string(rs, "action_taken").unwrap_or_default(),
            success: boolean("success").unwrap_or(false),
            before_state: string(rs, "before_state"),
            after_state: string(rs, "after_state"),
            metadata: string(rs, "metadata"),
            root_cause: string(rs, "root_cause"),
            correlation_id: string(rs, "correlation_id"),
            target: target_key(
                string(rs, "target_kind").as_deref(),
                string(rs, "target_namespace").as_deref(),
                string(rs, "target_name").as_deref(),
            ),
            dry_run: boolean("dry_run").unwrap_or(false),
            outcome: string(rs, "outcome"),
            heal_latency_seconds: float("heal_latency_seconds"),
            time_to_detect_seconds: float("time_to_detect_seconds"),
            time_to_heal_seconds: float("time_to_heal_seconds"),
        });
    }
    Ok(())
}

/// Every finished HealingEvent of `namespace` (or all namespaces).
pub async fn from_cluster(
    client: kube::Client,
    namespace: Option<&str>,
    progress: impl FnMut(usize),
) -> Result<Vec<Record>, Error> {
    let step = "listing HealingEvents";
    list_all(client, namespace, step, Record::from_event, progress).await
}

/// Every finished PredictionBatch of `namespace` (or all namespaces).
pub async fn batches_from_cluster(
    client: kube::Client,
    namespace: Option<&str>,
) -> Result<Vec<BatchRecord>, Error> {
    let step = "listing PredictionBatches";
    list_all(client, namespace, step, BatchRecord::from_batch, |_| {}).await
}

/// The objects of kind `K` in `namespace` (or all), listed in pages, each kept as `keep`
/// makes it (or left out); `progress` gets the count kept so far after each page.
async fn list_all<K, T>(
    client: kube::Client,
    namespace: Option<&str>,
    step: &'static str,
    keep: impl Fn(&K) -> Option<T>,
    mut progress: impl FnMut(usize),
) -> Result<Vec<T>, Error>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let mut kept = Vec::new();
    let mut params = ListParams::default().limit(PAGE_OBJECTS);
    loop {
        let page = api.list(&params).await.at(step)?;
        kept.extend(page.items.iter().filter_map(&keep));
        progress(kept.len());
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(kept),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_in_both_forms() {
        let t: Timestamp = "2026-11-24T23:41:07.123456Z".parse().unwrap();
        assert_eq!(parse_bigquery_timestamp("1795563667123456"), Some(t));
        assert_eq!(parse_bigquery_timestamp("1.795563667123456E9"), Some(t));
        assert_eq!(
            parse_bigquery_timestamp("1795563667"),
            Some("2026-11-24T23:41:07Z".parse().unwrap())
        );
        assert_eq!(parse_bigquery_timestamp("yesterday"), None);
        assert_eq!(timestamp_parameter(t), "2026-11-24 23:41:07.123456+00:00");
    }
}
