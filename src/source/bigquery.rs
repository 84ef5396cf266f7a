//! Observation of a phase: rows per table for a date, by parameterised `COUNT(*)` queries.
//! Table and column names are validated identifiers (checked again here, though admission
//! checked them) and are the only text that enters the SQL; the date is a parameter.

use std::str::FromStr;

use gcp_bigquery_client::Client as BigQuery;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;
use jiff::civil::Date;

use crate::Error;
use crate::api::schema::{ColumnName, TableName};
use crate::gcp::query_parameter;

/// Counts a table's rows for a date.
#[derive(Clone)]
pub struct RowCounter {
    client: BigQuery,
    /// The project queries run in, and that `dataset.table` names belong to.
    project: String,
}

/// A count query has this long to answer; a slow one counts as failed (unknown).
const QUERY_TIMEOUT_MS: i32 = 20_000;

impl RowCounter {
    pub fn new(client: BigQuery, project: String) -> Self {
        Self { client, project }
    }

    /// The fully qualified table, validated again: nothing unchecked reaches the SQL.
    pub fn qualified(&self, table: &str) -> Result<TableName, Error> {
        let full = match table.split('.').count() {
            2 => format!("{}.{table}", self.project),
            _ => table.to_owned(),
        };
        TableName::from_str(&full).map_err(|e| Error::Invalid {
            what: format!("table {full}"),
            message: e.to_string(),
        })
    }

    /// Rows of `table` whose `column` equals `date`. Err: the query failed, so the count is
    /// unknown (which is not zero).
    pub async fn count(&self, table: &str, column: &str, date: Date) -> Result<i64, Error> {
        let table = self.qualified(table)?;
        let column = ColumnName::from_str(column).map_err(|e| Error::Invalid {
            what: format!("column {column}"),
            message: e.to_string(),
        })?;
        let step = || format!("counting rows of {table}");
        let unreadable = |message: String| Error::Invalid {
            what: format!("answer to {}", step()),
            message,
        };
        let sql = format!(
            "SELECT COUNT(*) AS n FROM `{}` WHERE `{}` = @date",
            table.as_str(),
            column.as_str()
        );
        let mut request = QueryRequest::new(sql);
        request.parameter_mode = Some("NAMED".into());
        request.query_parameters = Some(vec![query_parameter("date", "DATE", date.to_string())]);
        request.use_legacy_sql = false;
        request.timeout_ms = Some(QUERY_TIMEOUT_MS);
        let response = self
            .client
            .job()
            .query(&self.project, request)
            .await
            .map_err(|e| Error::bigquery(step(), e))?;
        if response.job_complete == Some(false) {
            return Err(Error::Timeout(
                "a row count query",
                std::time::Duration::from_millis(QUERY_TIMEOUT_MS as u64),
            ));
        }
        let mut rows = ResultSet::new_from_query_response(response);
        if !rows.next_row() {
            return Err(unreadable("no result row".into()));
        }
        rows.get_i64(0)
            .map_err(|e| Error::bigquery(step(), e))?
            .ok_or_else(|| unreadable("no count".into()))
    }
}
