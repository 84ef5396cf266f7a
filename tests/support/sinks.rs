//! One test's sinks: its own Firestore collections and BigQuery dataset, the `run` flags
//! that export to them, and what they hold.

use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_schema::TableSchema;
use pipeline_healer::sink::firestore::EventDocument;
use pipeline_healer::sink::row::{BatchOutcomeRow, HealingEventRow, bigquery_timestamp};

use super::TestNamespace;

/// Where one test's events go: its own collection, dataset and table.
pub struct Sinks {
    pub batch_collection: String,
    pub collection: String,
    pub dataset: String,
    pub table: String,
}

impl Sinks {
    pub fn for_namespace(ns: &TestNamespace) -> Self {
        Self {
            batch_collection: ns.own_name("batches"),
            collection: ns.own_name("events"),
            dataset: ns.own_name("ds"),
            table: "healing_events".into(),
        }
    }

    /// `run` flags exporting to these sinks; the batch collection is the test's own too, so
    /// no other test's batches are mirrored here.
    pub fn args(&self) -> Vec<String> {
        self.args_via(&super::emulators().bigquery)
    }

    /// `run` flags exporting to Firestore only (the process runs without BigQuery).
    pub fn firestore_args(&self) -> Vec<String> {
        let mut args = self.args();
        args.truncate(4);
        args
    }

    /// The same, reaching BigQuery at `bigquery_host` (a proxy).
    pub fn args_via(&self, bigquery_host: &str) -> Vec<String> {
        let flags = [
            ("--batch-collection", self.batch_collection.as_str()),
            ("--events-collection", &self.collection),
            ("--bigquery-project", &super::emulators().project),
            ("--bigquery-dataset", &self.dataset),
            ("--bigquery-table", &self.table),
            ("--bigquery-emulator-host", bigquery_host),
        ];
        flags
            .into_iter()
            .flat_map(|(flag, value)| [flag.to_owned(), value.to_owned()])
            .collect()
    }

    pub async fn create_dataset(&self) {
        let project = &super::emulators().project;
        super::bigquery_client()
            .await
            .dataset()
            .create(Dataset::new(project, &self.dataset))
            .await
            .expect("create dataset");
    }

    pub async fn create_table(&self, schema: TableSchema) {
        let project = &super::emulators().project;
        super::bigquery_client()
            .await
            .table()
            .create(Table::new(project, &self.dataset, &self.table, schema))
            .await
            .expect("create table");
    }

    /// The batch outcomes table, from schemas/batch_outcomes.json, in this test's dataset.
    pub async fn create_outcomes_table(&self) {
        let project = &super::emulators().project;
        super::bigquery_client()
            .await
            .table()
            .create(Table::new(
                project,
                &self.dataset,
                "batch_outcomes",
                super::table_schema("schemas/batch_outcomes.json"),
            ))
            .await
            .expect("create the batch outcomes table");
    }

    /// Every row of the batch outcomes table.
    pub async fn outcome_rows(&self) -> Vec<BatchOutcomeRow> {
        let mut rs = self
            .query(&format!(
                "SELECT * FROM `{}.batch_outcomes` ORDER BY batch_id",
                self.dataset
            ))
            .await;
        let mut rows = Vec::new();
        while rs.next_row() {
            let string = |name: &str| rs.get_string_by_name(name).expect(name);
            let required = |name: &str| string(name).unwrap_or_else(|| panic!("{name} is null"));
            let integer = |name: &str| rs.get_i64_by_name(name).expect(name);
            let float = |name: &str| rs.get_f64_by_name(name).expect(name);
            let micros: i64 = required("finished_time").parse().expect("microseconds");
            rows.push(BatchOutcomeRow {
                batch_id: required("batch_id"),
                game_date: string("game_date"),
                namespace: required("namespace"),
                finished: required("finished"),
                finished_time: bigquery_timestamp(
                    jiff::Timestamp::from_microsecond(micros).unwrap(),
                ),
                final_percent: float("final_percent"),
                expected_players: integer("expected_players"),
                completed_players: integer("completed_players"),
                pause_count: integer("pause_count").expect("pause_count is null"),
                longest_pause_seconds: float("longest_pause_seconds"),
                healing_id: string("healing_id"),
            });
        }
        rows
    }

    /// The answer to `sql` (all of it: it must fit one page).
    async fn query(&self, sql: &str) -> ResultSet {
        let project = &super::emulators().project;
        let mut query = QueryRequest::new(sql);
        query.max_results = Some(100_000);
        let response = super::bigquery_client()
            .await
            .job()
            .query(project, query)
            .await
            .expect("query the table");
        let total: usize = response
            .total_rows
            .as_deref()
            .map_or(0, |n| n.parse().expect("totalRows"));
        let rs = ResultSet::new_from_query_response(response);
        assert_eq!(rs.row_count(), total, "the query answered in one page");
        rs
    }

    pub async fn firestore_documents(&self) -> Vec<EventDocument> {
        super::firestore_db()
            .await
            .fluent()
            .select()
            .from(self.collection.as_str())
            .obj()
            .query()
            .await
            .expect("read the events collection")
    }

    /// Every row of the table, as the export wrote it.
    pub async fn bigquery_rows(&self) -> Vec<HealingEventRow> {
        let mut rs = self
            .query(&format!(
                "SELECT * FROM `{}.{}` ORDER BY healing_id",
                self.dataset, self.table
            ))
            .await;
        let mut rows = Vec::new();
        while rs.next_row() {
            rows.push(row_from(&rs));
        }
        rows
    }
}

fn row_from(rs: &ResultSet) -> HealingEventRow {
    let string = |name: &str| rs.get_string_by_name(name).expect(name);
    let required = |name: &str| string(name).unwrap_or_else(|| panic!("{name} is null"));
    let boolean = |name: &str| rs.get_bool_by_name(name).expect(name);
    // The emulator answers TIMESTAMP columns in microseconds since the epoch.
    let micros: i64 = required("timestamp")
        .parse()
        .expect("timestamp in microseconds");
    let time = |name: &str| {
        string(name).map(|micros| {
            let micros: i64 = micros.parse().expect("a TIMESTAMP in microseconds");
            bigquery_timestamp(jiff::Timestamp::from_microsecond(micros).unwrap())
        })
    };
    let float = |name: &str| rs.get_f64_by_name(name).expect(name);
    HealingEventRow {
        healing_id: required("healing_id"),
        timestamp: bigquery_timestamp(jiff::Timestamp::from_microsecond(micros).unwrap()),
        healing_type: required("healing_type"),
        trigger_reason: required("trigger_reason"),
        action_taken: required("action_taken"),
        before_state: string("before_state"),
        after_state: string("after_state"),
        success: boolean("success").expect("success is null"),
        metadata: string("metadata"),
        correlation_id: string("correlation_id"),
        root_cause: string("root_cause"),
        target_kind: string("target_kind"),
        target_namespace: string("target_namespace"),
        target_name: string("target_name"),
        dry_run: boolean("dry_run"),
        outcome: string("outcome"),
        heal_latency_seconds: float("heal_latency_seconds"),
        onset_time: time("onset_time"),
        detected_time: time("detected_time"),
        healed_time: time("healed_time"),
        time_to_detect_seconds: float("time_to_detect_seconds"),
        time_to_heal_seconds: float("time_to_heal_seconds"),
    }
}
