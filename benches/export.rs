//! HealingEvent export throughput to the Firestore and BigQuery emulators. Prints
//! `BENCH <name> <value> <unit>` lines.
//!
//! - sink: PH_BENCH_EXPORT events (default 10000) handed to each sink at once, as the event
//!   reconciler does when a backlog drains; events/s until every one is acknowledged, then
//!   checked in the emulator (every healing_id there, once).
//! - controller: PH_BENCH_EXPORT_CONTROLLER events (default 2000) recorded as objects while
//!   no controller runs; then the release binary starts with both sinks, and the time until
//!   every event's status says exported to both, which includes one status write per event
//!   on the API server.

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{bench, size};
use futures::StreamExt;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::query_request::QueryRequest;
use gcp_bigquery_client::model::query_response::ResultSet;
use gcp_bigquery_client::model::table::Table;
use kube::api::ListParams;
use pipeline_healer::api::HealingEvent;
use pipeline_healer::api::event::ExportState;
use pipeline_healer::sink::bigquery::{BigQueryExport, TableRef};
use pipeline_healer::sink::{BIGQUERY, FIRESTORE, Sinks};
use support::{ControllerProcess, events};

/// A fresh dataset with the events table; returns (dataset, table).
async fn events_table(slug: &str) -> TableRef {
    let emu = support::emulators();
    let bq = support::bigquery_client().await;
    let dataset = format!("bench_{slug}_{}", std::process::id());
    bq.dataset()
        .create(Dataset::new(&emu.project, &dataset))
        .await
        .expect("create dataset");
    bq.table()
        .create(Table::new(
            &emu.project,
            &dataset,
            "healing_events",
            support::events_table_schema(),
        ))
        .await
        .expect("create table");
    TableRef {
        project: emu.project.clone(),
        dataset,
        table: "healing_events".into(),
    }
}

async fn distinct_ids_in(table: &TableRef) -> (usize, usize) {
    let mut query = QueryRequest::new(format!(
        "SELECT COUNT(*) AS total, COUNT(DISTINCT healing_id) AS ids FROM `{}.{}`",
        table.dataset, table.table
    ));
    query.use_legacy_sql = false;
    let response = support::bigquery_client()
        .await
        .job()
        .query(&table.project, query)
        .await
        .expect("count rows");
    let mut rs = ResultSet::new_from_query_response(response);
    assert!(rs.next_row());
    let get = |name| rs.get_i64_by_name(name).unwrap().unwrap() as usize;
    (get("total"), get("ids"))
}

async fn firestore_ids_in(collection: &str) -> usize {
    let docs: Vec<pipeline_healer::sink::firestore::EventDocument> = support::firestore_db()
        .await
        .fluent()
        .select()
        .from(collection)
        .obj()
        .query()
        .await
        .expect("read the events collection");
    docs.iter()
        .map(|d| d.healing_id.as_str())
        .collect::<BTreeSet<_>>()
        .len()
}

/// `n` final events handed to `sink` all at once; events/s until all are acknowledged.
async fn sink_throughput(sinks: &Sinks, sink: &str, n: usize) -> f64 {
    let events: Vec<HealingEvent> = (0..n)
        .map(|i| {
            let mut event = events::worker_retry(i, Some("pipeline"));
            event.status = Some(events::finished());
            event
        })
        .collect();
    let start = Instant::now();
    let failures = futures::stream::iter(&events)
        .map(|event| sinks.export(sink, event))
        .buffer_unordered(n)
        .filter(|result| std::future::ready(result.is_err()))
        .count()
        .await;
    let elapsed = start.elapsed().as_secs_f64();
    assert_eq!(
        failures, 0,
        "{failures} of {n} events failed to export to {sink}"
    );
    n as f64 / elapsed
}

async fn sinks_alone(n: usize) {
    let emu = support::emulators();
    let collection = format!("bench_events_{}", std::process::id());
    let table = events_table("sink").await;
    let db = support::firestore_db().await;
    let export = BigQueryExport {
        table: table.clone(),
        outcomes: None,
        emulator_host: Some(emu.bigquery.clone()),
    };
    let sinks = Sinks::connect(Some(&db), Some(&collection), Some(&export))
        .await
        .expect("connect the sinks");

    let rate = sink_throughput(&sinks, BIGQUERY, n).await;
    let (rows, ids) = distinct_ids_in(&table).await;
    assert_eq!((rows, ids), (n, n), "BigQuery rows, distinct healing_ids");
    bench(&format!("export_{n}_bigquery_sink"), rate, "events/s");

    let rate = sink_throughput(&sinks, FIRESTORE, n).await;
    assert_eq!(
        firestore_ids_in(&collection).await,
        n,
        "Firestore documents"
    );
    bench(&format!("export_{n}_firestore_sink"), rate, "events/s");
}

async fn through_the_controller(n: usize) {
    let ns = support::namespace("bench-export").await;
    let collection = format!("bench_controller_events_{}", std::process::id());
    let table = events_table("controller").await;
    events::record(&ns, events::worker_retries(n)).await;

    let start = Instant::now();
    let args = [
        "--batch-collection",
        &format!("bench_controller_batches_{}", std::process::id()),
        "--events-collection",
        &collection,
        "--bigquery-project",
        &table.project,
        "--bigquery-dataset",
        &table.dataset,
        "--bigquery-emulator-host",
        &support::emulators().bigquery,
    ];
    let _controller = ControllerProcess::start_with(&ns.name, "bench-exporter", &args, &[]);
    let api = ns.api::<HealingEvent>();
    loop {
        let events = api.list(&ListParams::default()).await.expect("list events");
        let exported = |e: &HealingEvent, sink: &str| {
            e.status
                .as_ref()
                .and_then(|s| s.exports.get(sink))
                .is_some_and(|x| x.state == ExportState::Exported)
        };
        let done = events
            .items
            .iter()
            .filter(|e| exported(e, FIRESTORE) && exported(e, BIGQUERY))
            .count();
        if done == n {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "only {done} of {n} events exported after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let (_, ids) = distinct_ids_in(&table).await;
    assert_eq!(ids, n, "BigQuery distinct healing_ids");
    assert_eq!(
        firestore_ids_in(&collection).await,
        n,
        "Firestore documents"
    );
    bench(
        &format!("export_{n}_via_controller_both_sinks"),
        n as f64 / elapsed,
        "events/s",
    );
    bench(&format!("export_{n}_via_controller_seconds"), elapsed, "s");
}

#[tokio::main]
async fn main() {
    support::init_crypto();
    sinks_alone(size("PH_BENCH_EXPORT", 10_000)).await;
    through_the_controller(size("PH_BENCH_EXPORT_CONTROLLER", 2_000)).await;
}
