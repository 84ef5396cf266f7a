//! The Firestore and BigQuery emulators started by hack/emulators.sh, reached through the
//! crates the controller uses: a document written and read back, and a table created from
//! schemas/healing_events.json, a row streamed in and found by a named-parameter query.

mod support;

use std::collections::HashMap;

use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use pipeline_healer::sink::row::HealingEventRow;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct BatchDoc {
    batch_id: String,
    game_date: String,
    expected_players: i64,
    completed_players: Vec<String>,
    is_complete: bool,
}

#[tokio::test]
async fn both_emulators_answer_through_the_projects_crates() {
    let emu = support::emulators();
    firestore_round_trip().await;
    bigquery_parameterised_query(&emu.project).await;
}

async fn firestore_round_trip() {
    let db = support::firestore_db().await;
    let doc = BatchDoc {
        batch_id: "batch_2026-11-24_1795480001".into(),
        game_date: "2026-11-24".into(),
        expected_players: 450,
        completed_players: vec!["lebronjames".into(), "stephencurry".into()],
        is_complete: false,
    };
    let _: BatchDoc = db
        .fluent()
        .insert()
        .into("prediction_batches")
        .document_id(&doc.batch_id)
        .object(&doc)
        .execute()
        .await
        .expect("insert");
    let read: Option<BatchDoc> = db
        .fluent()
        .select()
        .by_id_in("prediction_batches")
        .obj()
        .one(&doc.batch_id)
        .await
        .expect("read");
    assert_eq!(read, Some(doc));
}

async fn bigquery_parameterised_query(project: &str) {
    let bq = support::bigquery_client().await;
    bq.dataset()
        .create(Dataset::new(project, "nba_orchestration"))
        .await
        .expect("dataset");
    bq.table()
        .create(Table::new(
            project,
            "nba_orchestration",
            "healing_events",
            support::events_table_schema(),
        ))
        .await
        .expect("table from schemas/healing_events.json");

    let row = |id: &str, ty: &str| HealingEventRow {
        healing_id: id.into(),
        timestamp: "2026-11-24T23:41:07.123456Z".into(),
        healing_type: ty.into(),
        trigger_reason: "Batch stalled at 92.0% for 16 minutes".into(),
        action_taken: "Marked the batch complete".into(),
        before_state: Some(r#"{"completed":414,"expected":450}"#.into()),
        after_state: None,
        success: true,
        metadata: None,
        correlation_id: Some("7f3c2a1e".into()),
        root_cause: Some("feature_store_timeout".into()),
        target_kind: Some("PredictionBatch".into()),
        target_namespace: Some("pipeline".into()),
        target_name: Some("batch-2026-11-24-1795480001".into()),
        dry_run: Some(false),
        outcome: Some("Succeeded".into()),
        heal_latency_seconds: Some(0.42),
        onset_time: Some("2026-11-24T23:25:07.000001Z".into()),
        detected_time: Some("2026-11-24T23:40:07.000002Z".into()),
        healed_time: Some("2026-11-24T23:41:07.523456Z".into()),
        time_to_detect_seconds: Some(0.000001),
        time_to_heal_seconds: Some(960.523455),
    };
    let mut insert = TableDataInsertAllRequest::new();
    insert
        .add_row(Some("he-1".into()), row("he-1", "batch_cleanup"))
        .unwrap();
    insert
        .add_row(Some("he-2".into()), row("he-2", "retry"))
        .unwrap();
    let response = bq
        .tabledata()
        .insert_all(project, "nba_orchestration", "healing_events", insert)
        .await
        .expect("insertAll");
    assert!(
        response.insert_errors.as_ref().is_none_or(|e| e.is_empty()),
        "{:?}",
        response.insert_errors
    );

    // The healing type travels as a named parameter, never inside the SQL text.
    let mut query = QueryRequest::new(
        "SELECT healing_id, heal_latency_seconds FROM `nba_orchestration.healing_events` WHERE healing_type = @healing_type",
    );
    query.parameter_mode = Some("NAMED".into());
    query.query_parameters = Some(vec![QueryParameter {
        name: Some("healing_type".into()),
        parameter_type: Some(QueryParameterType {
            r#type: "STRING".into(),
            array_type: None,
            struct_types: None,
        }),
        parameter_value: Some(QueryParameterValue {
            value: Some("batch_cleanup".into()),
            array_values: None,
            struct_values: None::<HashMap<_, _>>,
        }),
    }]);
    let response = bq.job().query(project, query).await.expect("query");
    let mut rs = ResultSet::new_from_query_response(response);
    let mut ids = Vec::new();
    while rs.next_row() {
        ids.push(rs.get_string_by_name("healing_id").unwrap().unwrap());
        assert_eq!(
            rs.get_f64_by_name("heal_latency_seconds").unwrap(),
            Some(0.42)
        );
    }
    assert_eq!(ids, ["he-1"]);
}
