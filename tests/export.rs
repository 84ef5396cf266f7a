//! The HealingEvent outbox against the real API server and both emulators: events recorded
//! as objects (as any component would record them) reach Firestore and BigQuery exactly
//! once with equal fields, survive a sink outage and a controller crash, and a sink that
//! refuses some rows holds back nothing else.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kube::api::{ListParams, PostParams};
use pipeline_healer::api::event::{ExportState, SinkExport};
use pipeline_healer::api::{HealingEvent, HealingPolicy};
use pipeline_healer::sink::firestore::EventDocument;
use pipeline_healer::sink::row::HealingEventRow;
use support::proxy::TcpProxy;
use support::sinks::Sinks;
use support::{ControllerProcess, TestNamespace, events};

async fn events(ns: &TestNamespace) -> Vec<HealingEvent> {
    ns.api::<HealingEvent>()
        .list(&ListParams::default())
        .await
        .expect("list events")
        .items
}

fn export<'a>(event: &'a HealingEvent, sink: &str) -> Option<&'a SinkExport> {
    event.status.as_ref()?.exports.get(sink)
}

fn state(event: &HealingEvent, sink: &str) -> Option<ExportState> {
    export(event, sink).map(|e| e.state)
}

/// How many events are in each (sink, state).
fn tally(events: &[HealingEvent]) -> BTreeMap<(String, String), usize> {
    let mut counts = BTreeMap::new();
    for event in events {
        for sink in ["firestore", "bigquery"] {
            let state = state(event, sink).map_or("none".into(), |s| format!("{s:?}"));
            *counts.entry((sink.to_owned(), state)).or_default() += 1;
        }
    }
    counts
}

/// Waits until every event of the namespace is exported to both sinks.
async fn all_exported(ns: &TestNamespace, count: usize, secs: u64) -> Vec<HealingEvent> {
    support::eventually(secs, "every event exported to both sinks", || async {
        let events = events(ns).await;
        let done = events.len() == count
            && events.iter().all(|e| {
                state(e, "firestore") == Some(ExportState::Exported)
                    && state(e, "bigquery") == Some(ExportState::Exported)
            });
        if !done {
            eprintln!("export progress: {:?}", tally(&events));
        }
        done.then_some(events)
    })
    .await
}

/// Waits until all `count` events are in Firestore and failing for BigQuery.
async fn firestore_only(ns: &TestNamespace, count: usize) -> Vec<HealingEvent> {
    support::eventually(60, "Firestore exported, BigQuery failing", || async {
        let events = events(ns).await;
        let settled = events.len() == count
            && events.iter().all(|e| {
                state(e, "firestore") == Some(ExportState::Exported)
                    && state(e, "bigquery") == Some(ExportState::Failing)
            });
        settled.then_some(events)
    })
    .await
}

/// Both sinks hold exactly these events, field for field.
async fn assert_sinks_hold(sinks: &Sinks, events: &[HealingEvent]) {
    let expected_docs: BTreeMap<String, EventDocument> = events
        .iter()
        .map(|e| (e.spec.healing_id.clone(), EventDocument::from_event(e)))
        .collect();
    let docs = sinks.firestore_documents().await;
    assert_eq!(docs.len(), events.len(), "Firestore documents");
    for doc in &docs {
        assert_eq!(Some(doc), expected_docs.get(&doc.healing_id));
    }

    let expected_rows: BTreeMap<String, HealingEventRow> = events
        .iter()
        .map(|e| (e.spec.healing_id.clone(), HealingEventRow::from_event(e)))
        .collect();
    let rows = sinks.bigquery_rows().await;
    let distinct: BTreeSet<&str> = rows.iter().map(|r| r.healing_id.as_str()).collect();
    assert_eq!(
        distinct.len(),
        events.len(),
        "distinct healing_ids in BigQuery"
    );
    for row in &rows {
        assert_eq!(Some(row), expected_rows.get(&row.healing_id));
    }
}

#[tokio::test]
async fn a_thousand_events_reach_both_sinks_once_with_the_objects_fields() {
    let ns = support::namespace("export-thousand").await;
    let sinks = Sinks::for_namespace(&ns);
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);

    events::record(&ns, events::worker_retries(1000)).await;
    let events = all_exported(&ns, 1000, 180).await;
    assert_sinks_hold(&sinks, &events).await;
    // With no failure in between, each event was sent once: no duplicate rows either.
    assert_eq!(sinks.bigquery_rows().await.len(), 1000);
}

#[tokio::test]
async fn events_recorded_during_an_outage_of_both_sinks_are_exported_after_it() {
    let ns = support::namespace("export-outage").await;
    let sinks = Sinks::for_namespace(&ns);
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    let emu = support::emulators();
    let firestore = TcpProxy::start(&emu.firestore).await;
    let bigquery = TcpProxy::start(&emu.bigquery).await;
    let _controller = ControllerProcess::start_with(
        &ns.name,
        "exporter",
        &sinks.args_via(&bigquery.host()),
        &[("FIRESTORE_EMULATOR_HOST", &firestore.host())],
    );
    // Let the controller connect while the sinks are up.
    tokio::time::sleep(Duration::from_secs(2)).await;

    firestore.stop();
    bigquery.stop();
    events::record(&ns, events::worker_retries(200)).await;
    // Meanwhile each event's status says which sink fails, how often, why, and when next.
    support::eventually(120, "every export failing and retried", || async {
        let events = events(&ns).await;
        let retried = |e: &HealingEvent, sink| {
            export(e, sink).is_some_and(|x| {
                x.state == ExportState::Failing
                    && x.attempts >= 2
                    && x.last_error.as_deref().is_some_and(|m| !m.is_empty())
                    && x.next_attempt_at.is_some()
            })
        };
        (events.len() == 200
            && events
                .iter()
                .all(|e| retried(e, "firestore") && retried(e, "bigquery")))
        .then_some(())
    })
    .await;
    let bq_error = events(&ns).await[0].status.as_ref().unwrap().exports["bigquery"]
        .last_error
        .clone()
        .unwrap();
    assert!(bq_error.contains("unreachable"), "{bq_error}");

    firestore.resume().await;
    bigquery.resume().await;
    let events = all_exported(&ns, 200, 180).await;
    assert_sinks_hold(&sinks, &events).await;
}

#[tokio::test]
async fn a_missing_table_shows_in_the_status_and_holds_back_neither_firestore_nor_recovery() {
    let ns = support::namespace("export-missing-table").await;
    let sinks = Sinks::for_namespace(&ns);
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);

    events::record(&ns, events::worker_retries(10)).await;
    let events = firestore_only(&ns, 10).await;
    let error = export(&events[0], "bigquery")
        .and_then(|e| e.last_error.clone())
        .unwrap();
    assert!(
        error.contains("not found")
            && error.contains(&format!(
                "bq mk --dataset {}:{}",
                support::emulators().project,
                sinks.dataset
            ))
            && error.contains("schemas/healing_events.json"),
        "{error}"
    );

    // Created as the message says, the table gets every event at the next retry.
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    let events = all_exported(&ns, 10, 120).await;
    assert_sinks_hold(&sinks, &events).await;
}

#[tokio::test]
async fn a_row_the_table_refuses_is_isolated_and_the_rest_are_exported() {
    let ns = support::namespace("export-bad-row").await;
    let sinks = Sinks::for_namespace(&ns);
    sinks.create_dataset().await;
    // A table whose correlation_id column is an INTEGER: every row that has a correlation
    // id is refused, the others fit. The emulator fails a whole request for one such row, so
    // the exporter must split the batch to find it.
    let mut schema = support::events_table_schema();
    for field in schema.fields.iter_mut().flatten() {
        if field.name == "correlation_id" {
            field.r#type = gcp_bigquery_client::model::field_type::FieldType::Integer;
        }
    }
    sinks.create_table(schema).await;
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);

    let bad = 17;
    let batch: Vec<HealingEvent> = (0..40)
        .map(|i| {
            let mut event = events::worker_retry(i, Some("pipeline"));
            if i != bad {
                event.spec.correlation_id = None;
            }
            event
        })
        .collect();
    events::record(&ns, batch).await;
    // A transient error (the emulator closing a kept-alive connection) may come first; the
    // bad row's failure must end up naming the rejection.
    let refused_by_table = |e: &HealingEvent| {
        export(e, "bigquery").is_some_and(|x| {
            x.state == ExportState::Failing
                && x.last_error
                    .as_deref()
                    .is_some_and(|m| m.contains("BigQuery rejected the rows"))
        })
    };
    let events = support::eventually(90, "39 exported, the bad row refused", || async {
        let events = events(&ns).await;
        let settled = events.len() == 40
            && events.iter().all(|e| {
                let bigquery_ok = if e.spec.correlation_id.is_some() {
                    refused_by_table(e)
                } else {
                    state(e, "bigquery") == Some(ExportState::Exported)
                };
                bigquery_ok && state(e, "firestore") == Some(ExportState::Exported)
            });
        settled.then_some(events)
    })
    .await;
    let refused = events
        .iter()
        .find(|e| e.spec.correlation_id.is_some())
        .unwrap();

    let rows = sinks.bigquery_rows().await;
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.healing_id.as_str()).collect();
    assert_eq!(ids.len(), 39);
    assert!(!ids.contains(refused.spec.healing_id.as_str()));
}

#[tokio::test]
async fn a_controller_killed_mid_export_loses_nothing_and_duplicates_no_document() {
    let ns = support::namespace("export-restart").await;
    let sinks = Sinks::for_namespace(&ns);
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    let first = ControllerProcess::start_with(&ns.name, "exporter-1", &sinks.args(), &[]);

    // Events keep coming while the controller dies and a new one starts.
    let producer = {
        let ns = TestNamespace {
            client: ns.client.clone(),
            name: ns.name.clone(),
        };
        tokio::spawn(async move { events::record(&ns, events::worker_retries(600)).await })
    };
    support::eventually(120, "some events exported", || async {
        let exported = events(&ns)
            .await
            .iter()
            .filter(|e| state(e, "firestore") == Some(ExportState::Exported))
            .count();
        (exported >= 50).then_some(())
    })
    .await;
    drop(first); // SIGKILL: no graceful shutdown, exports in flight are cut off.
    let _second = ControllerProcess::start_with(&ns.name, "exporter-2", &sinks.args(), &[]);
    producer.await.expect("producer");

    let events = all_exported(&ns, 600, 180).await;
    assert_sinks_hold(&sinks, &events).await;
}

#[tokio::test]
async fn an_event_is_deleted_after_retention_only_once_every_sink_has_it() {
    let ns = support::namespace("export-retention").await;
    let sinks = Sinks::for_namespace(&ns);
    retention_policy(&ns, "2s").await;
    // No table yet: Firestore has the events, BigQuery does not.
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);
    events::record(&ns, (0..5).map(|i| events::worker_retry(i, None)).collect()).await;
    firestore_only(&ns, 5).await;
    // Well past the retention period, they stay: BigQuery does not have them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        events(&ns).await.len(),
        5,
        "deleted before BigQuery had them"
    );

    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    support::eventually(120, "the events deleted once exported", || async {
        events(&ns).await.is_empty().then_some(())
    })
    .await;
    let rows = sinks.bigquery_rows().await;
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.healing_id.as_str()).collect();
    assert_eq!(ids.len(), 5, "every event reached BigQuery before it went");
    assert_eq!(sinks.firestore_documents().await.len(), 5);
}

#[tokio::test]
async fn two_namespaces_events_of_one_name_are_two_records_in_each_sink() {
    let first = support::namespace("export-tenant-a").await;
    let second = support::namespace("export-tenant-b").await;
    // One collection, dataset and table for both namespaces, as one controller has.
    let sinks = Sinks::for_namespace(&first);
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    let _a = ControllerProcess::start_with(&first.name, "exporter-a", &sinks.args(), &[]);
    let _b = ControllerProcess::start_with(&second.name, "exporter-b", &sinks.args(), &[]);
    // The same name (healing id) in both, each claiming the same target.
    events::record(&first, vec![events::worker_retry(7, Some("pipeline"))]).await;
    events::record(&second, vec![events::worker_retry(7, Some("pipeline"))]).await;
    let mut exported = all_exported(&first, 1, 60).await;
    exported.extend(all_exported(&second, 1, 60).await);

    let docs = sinks.firestore_documents().await;
    let mut namespaces: Vec<Option<String>> =
        docs.iter().map(|d| d.target_namespace.clone()).collect();
    namespaces.sort();
    assert_eq!(
        namespaces,
        [Some(first.name.clone()), Some(second.name.clone())],
        "one Firestore document per namespace: {docs:?}"
    );
    for event in &exported {
        assert!(docs.contains(&EventDocument::from_event(event)), "{docs:?}");
    }
    let rows = sinks.bigquery_rows().await;
    let keys: BTreeSet<(Option<String>, String)> = rows
        .iter()
        .map(|r| (r.target_namespace.clone(), r.healing_id.clone()))
        .collect();
    assert_eq!(keys.len(), 2, "{rows:?}");
    assert!(rows.iter().all(|r| r.healing_id == "retry-worker-00007"));

    // The analysis counts both actions, neither as a duplicate of the other.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pipeline-healer"))
        .args(["analyze", "--output", "json", "--since", "1h"])
        .args(["--bigquery-project", &support::emulators().project])
        .args(["--bigquery-dataset", &sinks.dataset])
        .args(["--bigquery-emulator-host", &support::emulators().bigquery])
        .output()
        .expect("run analyze");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["total"], 2, "{report}");
}

/// A policy keeping exported events for `retention`.
async fn retention_policy(ns: &TestNamespace, retention: &str) {
    let policy: HealingPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"}, "spec": {"retention": retention}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}

/// Deletes every event of the namespace, as `kubectl delete he --all` would.
async fn delete_events(ns: &TestNamespace) {
    ns.api::<HealingEvent>()
        .delete_collection(&Default::default(), &ListParams::default())
        .await
        .expect("delete the events");
}

#[tokio::test]
async fn restarted_without_a_sink_an_event_waits_for_it_and_says_so() {
    let ns = support::namespace("export-sink-removed").await;
    let sinks = Sinks::for_namespace(&ns);
    retention_policy(&ns, "2s").await;
    // No table yet: the events are final with both sinks configured, and BigQuery fails.
    let both = ControllerProcess::start_with(&ns.name, "exporter-1", &sinks.args(), &[]);
    events::record(&ns, (0..5).map(|i| events::worker_retry(i, None)).collect()).await;
    firestore_only(&ns, 5).await;
    drop(both);

    // Restarted without --bigquery-project: BigQuery is still required, shown Unconfigured.
    let firestore_only_controller =
        ControllerProcess::start_with(&ns.name, "exporter-2", &sinks.firestore_args(), &[]);
    let shown = support::eventually(60, "BigQuery shown as no longer configured", || async {
        let events = events(&ns).await;
        (events.len() == 5
            && events
                .iter()
                .all(|e| state(e, "bigquery") == Some(ExportState::Unconfigured)))
        .then_some(events)
    })
    .await;
    let status = shown[0].status.as_ref().unwrap();
    assert_eq!(status.required_sinks, ["bigquery", "firestore"]);
    let message = status.exports["bigquery"].last_error.clone().unwrap();
    assert!(message.contains("no longer configured"), "{message}");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        events(&ns).await.len(),
        5,
        "deleted past retention though BigQuery never had them"
    );
    let warned = support::k8s_events(&ns, "SinkRemoved").await;
    assert_eq!(
        warned.len(),
        5,
        "one SinkRemoved Warning per event: {warned:?}"
    );
    drop(firestore_only_controller);

    // BigQuery configured again (and its table there): exported, then deleted.
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    let _both = ControllerProcess::start_with(&ns.name, "exporter-3", &sinks.args(), &[]);
    support::eventually(120, "the events deleted once BigQuery had them", || async {
        events(&ns).await.is_empty().then_some(())
    })
    .await;
    let rows = sinks.bigquery_rows().await;
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.healing_id.as_str()).collect();
    assert_eq!(ids.len(), 5);
}

#[tokio::test]
async fn a_deleted_event_is_exported_before_it_goes() {
    let ns = support::namespace("export-finalizer").await;
    let sinks = Sinks::for_namespace(&ns);
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);
    events::record(&ns, (0..3).map(|i| events::worker_retry(i, None)).collect()).await;
    firestore_only(&ns, 3).await;
    delete_events(&ns).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = events(&ns).await;
    assert_eq!(held.len(), 3, "deleted before BigQuery had them");
    assert!(held.iter().all(|e| e.metadata.deletion_timestamp.is_some()));

    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    support::eventually(120, "the deleted events gone once exported", || async {
        events(&ns).await.is_empty().then_some(())
    })
    .await;
    let rows = sinks.bigquery_rows().await;
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.healing_id.as_str()).collect();
    assert_eq!(ids.len(), 3, "every deleted event reached BigQuery first");
}

#[tokio::test]
async fn a_deleted_event_that_cannot_be_exported_is_released_after_the_timeout_with_its_record() {
    let ns = support::namespace("export-release").await;
    let sinks = Sinks::for_namespace(&ns);
    let mut args = sinks.args();
    args.extend(["--export-finalizer-timeout".into(), "3s".into()]);
    let (_controller, log) =
        ControllerProcess::start_logged(&ns.name, "exporter", &args, &[], "info,firestore=error");
    events::record(&ns, (0..2).map(|i| events::worker_retry(i, None)).collect()).await;
    firestore_only(&ns, 2).await;
    let ids: Vec<String> = events(&ns)
        .await
        .iter()
        .map(|e| e.spec.healing_id.clone())
        .collect();
    let deleted = std::time::Instant::now();
    delete_events(&ns).await;
    support::eventually(60, "the deleted events released", || async {
        events(&ns).await.is_empty().then_some(())
    })
    .await;
    // Held for the timeout, counted from the deletion timestamp (whole seconds, so up to a
    // second before the delete call returned).
    let held = deleted.elapsed();
    assert!(held >= Duration::from_secs(2), "released after {held:?}");
    let text = log.text();
    for id in &ids {
        let line = text
            .lines()
            .find(|l| l.contains("released before reaching every sink") && l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("no release line for {id}"));
        // The whole record: spec and outcome.
        assert!(
            line.contains("triggerReason") && line.contains("Succeeded"),
            "{line}"
        );
    }
    let warned = support::k8s_events(&ns, "ReleasedUnexported").await;
    assert_eq!(warned.len(), 2, "{warned:?}");
}

#[tokio::test]
async fn a_deleted_namespace_waits_until_its_events_are_exported() {
    let ns = support::namespace("export-namespace-gone").await;
    let sinks = Sinks::for_namespace(&ns);
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);
    events::record(
        &ns,
        (0..20).map(|i| events::worker_retry(i, None)).collect(),
    )
    .await;
    firestore_only(&ns, 20).await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(ns.client.clone());
    namespaces
        .delete(&ns.name, &Default::default())
        .await
        .expect("delete the namespace");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        events(&ns).await.len(),
        20,
        "events went before BigQuery had them"
    );
    assert!(namespaces.get_opt(&ns.name).await.unwrap().is_some());

    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    support::eventually(180, "the namespace gone", || async {
        namespaces
            .get_opt(&ns.name)
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    let rows = sinks.bigquery_rows().await;
    let ids: BTreeSet<&str> = rows.iter().map(|r| r.healing_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        20,
        "every event reached BigQuery before its namespace went"
    );
}

#[tokio::test]
async fn a_healed_batchs_row_has_onset_detected_and_healed_times_in_order() {
    let ns = support::namespace("export-times").await;
    let sinks = Sinks::for_namespace(&ns);
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    let hp: HealingPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"}, "spec": {"stallAfter": "3s"}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);
    let last = jiff::Timestamp::now();
    support::status_batch::batch(&ns, "b1", last).await;

    let events = all_exported(&ns, 1, 60).await;
    let status = events[0].status.as_ref().unwrap();
    assert_eq!(
        status.outcome,
        Some(pipeline_healer::api::event::Outcome::Succeeded)
    );
    let rows = sinks.bigquery_rows().await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.healing_type, "batch_cleanup");
    let time = |name: &str, value: &Option<String>| -> jiff::Timestamp {
        value
            .as_deref()
            .unwrap_or_else(|| panic!("{name} is null"))
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"))
    };
    let onset = time("onset_time", &row.onset_time);
    let detected = time("detected_time", &row.detected_time);
    let healed = time("healed_time", &row.healed_time);
    // The onset is the batch's last progress, to the microsecond the status carries.
    assert_eq!(onset.as_microsecond(), last.as_microsecond());
    assert!(
        onset <= detected && detected <= healed,
        "{onset} <= {detected} <= {healed}"
    );
    let to_detect = row.time_to_detect_seconds.expect("time_to_detect_seconds");
    let to_heal = row.time_to_heal_seconds.expect("time_to_heal_seconds");
    println!("time to detect {to_detect:.3} s, time to heal {to_heal:.3} s");
    assert!(
        (0.0..1.0).contains(&to_detect),
        "noticed {to_detect} s after the threshold"
    );
    let onset_to_healed = healed.duration_since(onset).as_secs_f64();
    assert!(
        to_heal >= 3.0 && (to_heal - onset_to_healed).abs() < 0.001,
        "time to heal {to_heal} s, onset to healed {onset_to_healed} s"
    );
}

/// A policy that watches for pauses after 1 s and heals stalls after 5 s.
async fn pause_policy(ns: &TestNamespace) {
    let hp: HealingPolicy = serde_json::from_value(serde_json::json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"}, "spec": {"stallAfter": "5s", "watchAfter": "1s"}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
}

async fn batch_status(
    ns: &TestNamespace,
    name: &str,
) -> Option<pipeline_healer::api::batch::PredictionBatchStatus> {
    ns.api::<pipeline_healer::api::PredictionBatch>()
        .get_opt(name)
        .await
        .unwrap()
        .and_then(|b| b.status)
}

fn outcome_state(
    status: &pipeline_healer::api::batch::PredictionBatchStatus,
) -> Option<ExportState> {
    status.outcome_export.as_ref().map(|e| e.state)
}

#[tokio::test]
async fn finished_batches_reach_batch_outcomes_with_their_pauses_and_heal() {
    let ns = support::namespace("export-outcomes").await;
    let sinks = Sinks::for_namespace(&ns);
    sinks.create_dataset().await;
    sinks.create_table(support::events_table_schema()).await;
    sinks.create_outcomes_table().await;
    pause_policy(&ns).await;
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);
    let micros =
        || jiff::Timestamp::from_microsecond(jiff::Timestamp::now().as_microsecond()).unwrap();
    let last = micros();
    support::status_batch::batch(&ns, "paused", last).await;
    support::status_batch::batch(&ns, "stalled", last).await;

    // "paused" resumes by itself after its pause is seen, before the stall; "stalled" is healed.
    support::eventually(10, "the pause", || async {
        batch_status(&ns, "paused").await?.paused_since
    })
    .await;
    let resumed = micros();
    support::status_batch::report(&ns, "paused", 10, resumed).await;
    let finished = support::eventually(60, "both outcomes exported", || async {
        let paused = batch_status(&ns, "paused").await?;
        let stalled = batch_status(&ns, "stalled").await?;
        let done = [&paused, &stalled]
            .iter()
            .all(|s| outcome_state(s) == Some(ExportState::Exported));
        done.then_some((paused, stalled))
    })
    .await;
    assert_eq!(finished.0.pauses, 1);
    assert_eq!(
        finished.1.pauses, 0,
        "a pause our heal ended is not a recovery"
    );

    let rows = sinks.outcome_rows().await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (paused, stalled) = (&rows[0], &rows[1]);
    assert_eq!(paused.batch_id, "batch_2026-11-24_paused");
    assert_eq!(paused.finished, "completed");
    assert_eq!(paused.pause_count, 1);
    let longest = paused.longest_pause_seconds.expect("longest pause");
    let expected = resumed.duration_since(last).as_secs_f64();
    assert!(
        (longest - expected).abs() < 0.002,
        "longest pause {longest} s, last progress to resumed {expected} s"
    );
    assert_eq!(paused.healing_id, None);
    assert_eq!(paused.final_percent, Some(100.0));
    assert_eq!(paused.game_date.as_deref(), Some("2026-11-24"));
    assert_eq!(paused.namespace, ns.name);

    assert_eq!(stalled.finished, "auto_completed");
    assert_eq!(stalled.pause_count, 0);
    assert_eq!(stalled.longest_pause_seconds, None);
    let events = events(&ns).await;
    assert_eq!(events.len(), 1, "one heal");
    assert_eq!(
        stalled.healing_id.as_deref(),
        Some(events[0].spec.healing_id.as_str())
    );
    // Completed by the heal at the stall: the outstanding player never finished.
    assert_eq!(
        (stalled.expected_players, stalled.completed_players),
        (Some(10), Some(9))
    );
    assert_eq!(stalled.final_percent, Some(90.0));
}

#[tokio::test]
async fn a_deleted_batch_is_held_until_its_outcome_is_exported() {
    let ns = support::namespace("export-outcome-held").await;
    let sinks = Sinks::for_namespace(&ns);
    sinks.create_dataset().await;
    let _controller = ControllerProcess::start_with(&ns.name, "exporter", &sinks.args(), &[]);
    let batches = ns.api::<pipeline_healer::api::PredictionBatch>();
    support::status_batch::batch(&ns, "b1", jiff::Timestamp::now()).await;
    support::status_batch::report(&ns, "b1", 10, jiff::Timestamp::now()).await;

    // No table yet: the export fails, says how to create it, and retries.
    let failing = support::eventually(30, "the outcome export failing", || async {
        let status = batch_status(&ns, "b1").await?;
        (outcome_state(&status) == Some(ExportState::Failing)).then_some(status)
    })
    .await;
    let error = failing.outcome_export.unwrap().last_error.unwrap();
    assert!(error.contains("schemas/batch_outcomes.json"), "{error}");
    let held = batches.get("b1").await.unwrap();
    assert!(
        held.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&pipeline_healer::controller::batch::OUTCOME_FINALIZER.to_owned())
    );

    batches
        .delete("b1", &Default::default())
        .await
        .expect("delete the batch");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pending = batches.get_opt("b1").await.unwrap().expect("held back");
    assert!(pending.metadata.deletion_timestamp.is_some());

    sinks.create_outcomes_table().await;
    support::eventually(
        60,
        "the batch gone once its outcome is exported",
        || async { batches.get_opt("b1").await.unwrap().is_none().then_some(()) },
    )
    .await;
    let rows = sinks.outcome_rows().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].finished, "completed");
}
