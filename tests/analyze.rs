//! `pipeline-healer analyze`, the binary, against the BigQuery emulator and the real API
//! server: the same events give the same report from either source, the original's rows are
//! read and grouped, CSV and JSON parse back, bad arguments exit 2 and an unreachable source 1.

mod support;

use std::collections::BTreeSet;
use std::process::{Command, Output};

use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_schema::TableSchema;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use pipeline_healer::analyze::render::CSV_COLUMNS;
use pipeline_healer::api::event::{HealingEventStatus, Outcome, TargetRef};
use pipeline_healer::api::{HealingEvent, HealingEventSpec, HealingPolicy, PredictionBatch};
use pipeline_healer::decide::heal::{Recording, intent};
use pipeline_healer::decide::stall::{RecordedDecision, StallPolicy, Verdict};
use pipeline_healer::sink::row::{HealingEventRow, bigquery_timestamp};
use pipeline_healer::source::report::observe;
use serde_json::{Value, json};
use support::{TestNamespace, events};

fn analyze(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pipeline-healer"))
        .arg("analyze")
        .args(args)
        .env_remove("PIPELINE_HEALER_BIGQUERY_PROJECT")
        .env_remove("BIGQUERY_EMULATOR_HOST")
        .env_remove("SLACK_WEBHOOK_URL")
        .envs(env.iter().copied())
        .output()
        .expect("run pipeline-healer analyze")
}

fn report_of(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the JSON report parses")
}

/// A fresh dataset with a table of `schema`; returns the dataset.
async fn table(ns: &TestNamespace, name: &str, schema: TableSchema) -> String {
    let project = &support::emulators().project;
    let dataset = ns.own_name("an");
    let bq = support::bigquery_client().await;
    if bq.dataset().get(project, &dataset).await.is_err() {
        bq.dataset()
            .create(Dataset::new(project, &dataset))
            .await
            .expect("create dataset");
    }
    bq.table()
        .create(Table::new(project, &dataset, name, schema))
        .await
        .expect("create table");
    dataset
}

async fn insert(dataset: &str, table: &str, rows: Vec<Value>) {
    let project = &support::emulators().project;
    let mut request = TableDataInsertAllRequest::new();
    for row in rows {
        let id = row["healing_id"].as_str().map(str::to_owned);
        request.add_row(id, row).unwrap();
    }
    let response = support::bigquery_client()
        .await
        .tabledata()
        .insert_all(project, dataset, table, request)
        .await
        .expect("insertAll");
    assert!(response.insert_errors.unwrap_or_default().is_empty());
}

fn bigquery_args<'a>(dataset: &'a str, table: &'a str) -> Vec<&'a str> {
    let emu = support::emulators();
    vec![
        "--source",
        "bigquery",
        "--bigquery-project",
        &emu.project,
        "--bigquery-dataset",
        dataset,
        "--bigquery-table",
        table,
        "--bigquery-emulator-host",
        &emu.bigquery,
    ]
}

/// One healing action `minutes_ago`, with its outcome.
#[allow(clippy::too_many_arguments)]
fn action(
    id: &str,
    minutes_ago: i64,
    healing_type: &str,
    root_cause: &str,
    target: (&str, Option<&str>, &str),
    outcome: Outcome,
    dry_run: bool,
    latency: Option<f64>,
) -> (HealingEvent, HealingEventStatus) {
    let decided = Timestamp::now() - SignedDuration::from_mins(minutes_ago);
    // Noticed 2 ms after its threshold, which came 15 minutes after the last progress; a
    // success seen healthy `latency` seconds after its threshold.
    let threshold = decided - SignedDuration::from_millis(2);
    let onset = threshold - SignedDuration::from_mins(15);
    let spec = HealingEventSpec {
        healing_id: id.into(),
        timestamp: MicroTime(decided),
        healing_type: healing_type.into(),
        trigger_reason: format!("{id}: {root_cause} at {minutes_ago} minutes"),
        action_taken: "healed".into(),
        root_cause: root_cause.into(),
        correlation_id: Some("pass-1".into()),
        target: TargetRef {
            api_version: None,
            kind: target.0.into(),
            namespace: target.1.map(Into::into),
            name: target.2.into(),
            uid: None,
        },
        dry_run,
        threshold_time: Some(MicroTime(threshold)),
        onset_time: Some(MicroTime(onset)),
        detected_time: Some(MicroTime(decided)),
        before_state: Some(json!({"completed": 46, "expected": 50})),
        details: None,
    };
    let healed = latency.filter(|_| outcome == Outcome::Succeeded);
    let status = HealingEventStatus {
        outcome: Some(outcome),
        success: Some(outcome == Outcome::Succeeded),
        heal_latency_seconds: latency,
        time_to_detect_seconds: Some(0.002),
        healed_time: healed.map(|l| MicroTime(threshold + SignedDuration::from_secs_f64(l))),
        time_to_heal_seconds: healed.map(|l| 900.0 + l),
        ..Default::default()
    };
    (HealingEvent::new(id, spec), status)
}

/// 12 batch cleanups (2 failed) over 4 batches, 3 retries of one worker, a dry run, a skip,
/// and one action two days old.
fn actions() -> Vec<(HealingEvent, HealingEventStatus)> {
    let mut all = Vec::new();
    for i in 0..12 {
        let outcome = if i == 3 || i == 8 {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        let cause = if i < 7 {
            "feature_store_timeout"
        } else {
            "no_progress"
        };
        let batch = format!("batch-{}", i % 4);
        all.push(action(
            &format!("cleanup-{i:02}"),
            i + 1,
            "batch_cleanup",
            cause,
            ("PredictionBatch", Some("pipeline"), &batch),
            outcome,
            false,
            Some(2.0 + i as f64),
        ));
    }
    for i in 0..3 {
        all.push(action(
            &format!("retry-{i}"),
            20 + i,
            "retry",
            "worker_timeout",
            ("Worker", None, "worker-1"),
            Outcome::Succeeded,
            false,
            None,
        ));
    }
    let batch = ("PredictionBatch", Some("pipeline"), "batch-9");
    all.push(action(
        "dry",
        30,
        "batch_cleanup",
        "no_progress",
        batch,
        Outcome::Skipped,
        true,
        None,
    ));
    let phase = ("PhaseRun", Some("pipeline"), "phase4");
    all.push(action(
        "open-circuit",
        31,
        "phase_rerun",
        "missing_rows:nba_precompute.player_daily_cache",
        phase,
        Outcome::Skipped,
        false,
        None,
    ));
    all.push(action(
        "old",
        2 * 24 * 60,
        "batch_cleanup",
        "no_progress",
        batch,
        Outcome::Succeeded,
        false,
        Some(1.0),
    ));
    all
}

#[tokio::test]
async fn the_same_events_give_the_same_report_from_bigquery_and_the_cluster() {
    let ns = support::namespace("analyze-same").await;
    let actions = actions();
    events::record_outcomes(&ns, actions.clone()).await;

    // BigQuery holds the same events as the export writes them, one of them twice.
    let dataset = table(&ns, "healing_events", support::events_table_schema()).await;
    let mut rows: Vec<Value> = actions
        .into_iter()
        .map(|(mut event, status)| {
            event.status = Some(status);
            // As read back from the API server, which files it under the test's namespace.
            event.metadata.namespace = Some(ns.name.clone());
            serde_json::to_value(HealingEventRow::from_event(&event)).unwrap()
        })
        .collect();
    rows.push(rows[0].clone());
    insert(&dataset, "healing_events", rows).await;

    // The same finished batches in both: rows of batch_outcomes, PredictionBatches' statuses.
    // Two finished within the window (three pauses that ended by themselves, the longest
    // 95.5 s), one three days ago.
    let outcomes = support::table_schema("schemas/batch_outcomes.json");
    table(&ns, "batch_outcomes", outcomes).await;
    let finished = [
        ("paused", 10, 2, Some("1m35.5s"), Some(95.5)),
        ("healed", 20, 1, Some("30s"), Some(30.0)),
        ("old", 3 * 24 * 60, 5, Some("16m40s"), Some(1000.0)),
    ];
    let mut outcome_rows = Vec::new();
    for (name, minutes_ago, pauses, longest, longest_s) in finished {
        // Whole seconds, as a PredictionBatch's finishedAt holds them.
        let at = Timestamp::from_second(
            (Timestamp::now() - SignedDuration::from_mins(minutes_ago)).as_second(),
        )
        .unwrap();
        outcome_rows.push(json!({
            "batch_id": name, "namespace": ns.name, "finished": "completed",
            "finished_time": bigquery_timestamp(at), "pause_count": pauses,
            "longest_pause_seconds": longest_s,
        }));
        support::status_batch::batch(&ns, name, at).await;
        let status = json!({"status": {
            "state": "Complete", "finishedAt": at.to_string(), "pauses": pauses,
            "longestPause": longest,
        }});
        ns.api::<pipeline_healer::api::PredictionBatch>()
            .patch_status(
                name,
                &kube::api::PatchParams::apply("analyze-test").force(),
                &kube::api::Patch::Apply(&support::status_batch::with_kind(status)),
            )
            .await
            .expect("the batch's finished status");
    }
    insert(&dataset, "batch_outcomes", outcome_rows).await;

    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend(["--since", "1d", "--output", "json"]);
    let mut from_bigquery = report_of(&analyze(&args, &[]));
    let kubeconfig = support::cluster().kubeconfig.to_string_lossy().into_owned();
    let mut from_cluster = report_of(&analyze(
        &[
            "--source",
            "cluster",
            "--namespace",
            &ns.name,
            "--since",
            "1d",
            "--output",
            "json",
        ],
        &[("KUBECONFIG", &kubeconfig)],
    ));

    assert_eq!(from_bigquery["source"], "bigquery");
    assert_eq!(from_bigquery["duplicate_rows"], 1);
    assert_eq!(from_cluster["duplicate_rows"], 0);
    for report in [&mut from_bigquery, &mut from_cluster] {
        let fields = report.as_object_mut().unwrap();
        for differs in ["source", "duplicate_rows", "start", "end"] {
            fields.remove(differs);
        }
    }
    assert_eq!(from_bigquery, from_cluster);

    let r = &from_cluster;
    assert_eq!(r["total"], 15);
    assert_eq!(
        [
            &r["stalls_healed_by_us"],
            &r["recovered_by_themselves"],
            &r["longest_pause_s"]
        ],
        [&json!(10), &json!(3), &json!(95.5)]
    );
    assert_eq!(r["succeeded"], 13);
    assert!((r["success_rate"].as_f64().unwrap() - 13.0 / 15.0).abs() < 1e-9);
    assert_eq!(
        (r["dry_run"].clone(), r["circuit_skipped"].clone()),
        (json!(1), json!(1))
    );
    let cleanup = &r["by_type"]["batch_cleanup"];
    assert_eq!(
        [&cleanup["count"], &cleanup["succeeded"], &cleanup["failed"]],
        [12, 10, 2]
    );
    assert!((cleanup["success_rate"].as_f64().unwrap() - 10.0 / 12.0).abs() < 1e-9);
    // Onset to seen healthy: 15 minutes before the threshold plus each heal's latency.
    assert_eq!(cleanup["time_to_heal"]["count"], 10);
    assert_eq!(cleanup["time_to_heal"]["p95_s"], 913.0);
    assert_eq!(cleanup["time_to_detect"]["p50_s"], 0.002);
    assert_eq!(r["by_type"]["retry"]["count"], 3);
    let causes: Vec<(String, u64)> = r["top_root_causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        causes,
        [
            ("feature_store_timeout".to_owned(), 7),
            ("no_progress".to_owned(), 5),
            ("worker_timeout".to_owned(), 3)
        ]
    );
    // The example is the latest reason under the key: cleanup-00, one minute old.
    assert_eq!(
        r["top_root_causes"][0]["example"],
        "cleanup-00: feature_store_timeout at 1 minutes"
    );
    // Heal latencies of the 10 successful cleanups: 2..13 without 5 and 10.
    assert_eq!(r["heal_latency"]["p95_s"], 13.0);
    assert!((r["heal_latency"]["mean_s"].as_f64().unwrap() - 7.5).abs() < 1e-9);
    assert!((r["time_to_heal"]["mean_s"].as_f64().unwrap() - 907.5).abs() < 1e-9);
    let recurring: BTreeSet<String> = r["recurring_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| format!("{}={}", t["target"].as_str().unwrap(), t["count"]))
        .collect();
    // Targets are named in the namespace their events were recorded in (whatever namespace
    // a producer claims for its target: see `sink::record_namespace`).
    let recurring_expected: BTreeSet<String> = ["batch-0", "batch-1", "batch-2", "batch-3"]
        .map(|b| format!("PredictionBatch/{}/{b}=3", ns.name))
        .into_iter()
        .chain([format!("Worker/{}/worker-1=3", ns.name)])
        .collect();
    assert_eq!(recurring, recurring_expected);
    let recommendations = r["recommendations"].to_string();
    assert!(
        recommendations.contains("batch_cleanup ran 12 times"),
        "{recommendations}"
    );
    assert!(
        recommendations.contains(&format!("Worker/{}/worker-1 was healed 3 times", ns.name)),
        "{recommendations}"
    );
    assert!(
        !recommendations.contains("success rate"),
        "{recommendations}"
    );

    // --type narrows both the same way.
    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend(["--since", "1d", "--output", "json", "--type", "retry"]);
    let retries = report_of(&analyze(&args, &[]));
    assert_eq!(
        (retries["total"].clone(), retries["success_rate"].clone()),
        (json!(3), json!(1.0))
    );
}

#[tokio::test]
async fn the_originals_rows_are_read_grouped_and_exported_as_csv() {
    let ns = support::namespace("analyze-original").await;
    // The original's table: its nine columns only.
    let mut schema = support::events_table_schema();
    schema.fields.as_mut().unwrap().truncate(9);
    let dataset = table(&ns, "original_events", schema).await;
    let at =
        |minutes: i64| bigquery_timestamp(Timestamp::now() - SignedDuration::from_mins(minutes));
    let row = |id: &str, minutes: i64, reason: &str, success: bool, before: &str| {
        json!({
            "healing_id": id, "timestamp": at(minutes), "healing_type": "batch_cleanup",
            "trigger_reason": reason, "action_taken": "Marked batch complete", "success": success,
            "before_state": before, "after_state": "{'is_complete': True}",
            "metadata": "{'players': ['lebronjames', 'stephencurry']}",
        })
    };
    insert(
        &dataset,
        "original_events",
        vec![
            row(
                "h1",
                50,
                "Batch stalled at 87.5% (injured players)",
                true,
                "{'completed': 35, 'expected': 40, 'ok': True}",
            ),
            row(
                "h2",
                40,
                "Batch stalled at 91.2% (injured players)",
                false,
                "{'completed': 41, 'expected': 45, 'ok': None}",
            ),
            row(
                "h3",
                30,
                "Retried player 1795 after timeout",
                true,
                "not a literal",
            ),
        ],
    )
    .await;

    let csv_path = tempfile::NamedTempFile::new().unwrap().into_temp_path();
    let csv_arg = csv_path.to_string_lossy().into_owned();
    let mut args = bigquery_args(&dataset, "original_events");
    args.extend(["--since", "2h", "--output", "json", "--export", &csv_arg]);
    let r = report_of(&analyze(&args, &[]));
    assert_eq!(r["total"], 3);
    // No batch_outcomes table beside the original's: unknown, not zero.
    assert_eq!(r["recovered_by_themselves"], Value::Null);
    assert_eq!(
        r["top_root_causes"][0],
        json!({"key": "batch_stalled_at_injured_players", "count": 2, "example": "Batch stalled at 91.2% (injured players)"})
    );
    assert_eq!(
        r["top_root_causes"][1]["key"],
        "retried_player_after_timeout"
    );
    assert!(
        r["recommendations"][0]
            .as_str()
            .unwrap()
            .starts_with("Overall success rate is 66.7%")
    );
    // The original's rows have no times: left out, and the report says how many.
    assert_eq!(r["time_to_heal"]["mean_s"], Value::Null);
    assert_eq!(r["time_to_detect"]["count"], 0);
    assert!(r["time_to_detect"]["without"].as_u64().unwrap() > 0);

    let mut reader = csv::Reader::from_path(&csv_path).unwrap();
    assert_eq!(
        reader.headers().unwrap().iter().collect::<Vec<_>>(),
        CSV_COLUMNS
    );
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(records.len(), 3);
    let field = |r: &csv::StringRecord, name: &str| {
        r.get(CSV_COLUMNS.iter().position(|c| *c == name).unwrap())
            .unwrap()
            .to_owned()
    };
    let h1 = &records[0];
    assert_eq!(field(h1, "healing_id"), "h1");
    assert_eq!(field(h1, "success"), "true");
    assert_eq!(field(h1, "root_cause"), "batch_stalled_at_injured_players");
    // Python repr became JSON; what is not a literal stays as its text.
    let state = |r: &csv::StringRecord, name: &str| -> Value {
        serde_json::from_str(&field(r, name)).unwrap()
    };
    assert_eq!(
        state(h1, "before_state"),
        json!({"completed": 35, "expected": 40, "ok": true})
    );
    assert_eq!(state(h1, "after_state"), json!({"is_complete": true}));
    assert_eq!(
        state(h1, "metadata"),
        json!({"players": ["lebronjames", "stephencurry"]})
    );
    assert_eq!(state(&records[1], "before_state")["ok"], Value::Null);
    assert_eq!(state(&records[2], "before_state"), json!("not a literal"));
    assert_eq!(
        field(&records[2], "trigger_reason"),
        "Retried player 1795 after timeout"
    );

    // The text report for people.
    let mut args = bigquery_args(&dataset, "original_events");
    args.extend(["--since", "2h"]);
    let out = analyze(&args, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("success rate: 66.7%"), "{text}");
    assert!(
        text.contains("Stalls healed by us: 2; recovered by themselves: unknown"),
        "{text}"
    );
    assert!(
        text.contains("1. batch_stalled_at_injured_players (2 events)"),
        "{text}"
    );
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    let bq = [
        "--bigquery-project",
        "p",
        "--bigquery-emulator-host",
        "127.0.0.1:1",
    ];
    let too_long = [
        &bq[..],
        &[
            "--trend",
            "day",
            "--start",
            "1990-01-01",
            "--end",
            "2026-01-01",
        ],
    ]
    .concat();
    let csv_without_trend = [&bq[..], &["--output", "csv"]].concat();
    let slack_without_webhook = [&bq[..], &["--slack"]].concat();
    let cases: [(&[&str], &str); 10] = [
        (&too_long, "more than the 3660 a trend shows"),
        (&csv_without_trend, "add --trend day|week"),
        (
            &slack_without_webhook,
            "SLACK_WEBHOOK_URL, which is not set",
        ),
        (&["--policy", "p.yaml"], "--propose"),
        (&["--start", "yesterday"], "YYYY-MM-DD HH:MM"),
        (
            &["--start", "2026-11-25 00:00", "--end", "2026-11-24 00:00"],
            "window is empty",
        ),
        (&["--since", "7x"], "not a span"),
        (&["--source", "nope"], "invalid value"),
        (
            &["--start", "2026-11-24 00:00", "--since", "1d"],
            "cannot be used with",
        ),
        (&["--source", "bigquery"], "--bigquery-project"),
    ];
    for (args, says) in cases {
        let out = analyze(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn an_unreachable_source_exits_1_saying_which() {
    let out = analyze(
        &[
            "--bigquery-project",
            "pipeline-healer-test",
            "--bigquery-emulator-host",
            "127.0.0.1:1",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bigquery"), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\ncurrent-context: gone\nclusters: [{name: gone, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         contexts: [{name: gone, context: {cluster: gone, user: nobody}}]\nusers: [{name: nobody, user: {token: x}}]\n",
    )
    .unwrap();
    let out = analyze(
        &["--source", "cluster"],
        &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kubernetes"), "{stderr}");
}

/// A PredictionBatch of `namespace` whose workers report 100 players: `completed` done,
/// `skipped` and `failing` by reason, the last progress `stalled_for` ago.
fn reported_batch(
    namespace: &str,
    id: &str,
    completed: u32,
    skipped: &[(&str, u32)],
    failing: &[(&str, u32)],
    last_progress: Timestamp,
) -> PredictionBatch {
    let map = |m: &[(&str, u32)]| -> Value {
        m.iter().map(|(r, n)| ((*r).to_owned(), json!(n))).collect()
    };
    serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
        "metadata": {"name": id, "namespace": namespace},
        "spec": {"batchId": id, "source": "status", "expectedPlayers": 100},
        "status": {"report": {
            "completed": completed, "skipped": map(skipped), "failing": map(failing),
            "lastProgressTime": MicroTime(last_progress),
            "createdAt": k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                last_progress - SignedDuration::from_hours(1)),
        }},
    }))
    .expect("a PredictionBatch")
}

/// The BigQuery row the controller exports for its heal of `batch` at `at` under `policy`
/// (named `policy_name`): the decision, the intent and its outcome, as the reconciler makes
/// them.
fn heal_row(
    batch: &PredictionBatch,
    policy_name: &str,
    policy: &StallPolicy,
    at: Timestamp,
    attempt: u32,
    outcome: Outcome,
) -> Value {
    let decision = RecordedDecision {
        policy_name: Some(policy_name.into()),
        policy: policy.clone(),
        observation: observe(batch).expect("reported"),
        at,
    };
    let Verdict::Stalled(stall) = decision.verdict() else {
        panic!(
            "{} is not stalled: {:?}",
            batch.spec.batch_id,
            decision.verdict()
        );
    };
    let mut event = intent(batch, &stall, &decision, Recording::Act, attempt);
    event.status = Some(HealingEventStatus {
        outcome: Some(outcome),
        success: Some(outcome == Outcome::Succeeded),
        ..Default::default()
    });
    serde_json::to_value(HealingEventRow::from_event(&event)).unwrap()
}

/// The defaults less `player_injury_out`: the policy of the original's example.
fn injury_policy() -> StallPolicy {
    let mut policy = StallPolicy::from(&pipeline_healer::api::HealingPolicySpec::default());
    policy.permanent_skip_reasons.remove("player_injury_out");
    policy
}

#[tokio::test]
async fn proposals_replay_the_controllers_records_the_originals_injury_example_is_8_of_13() {
    let ns = support::namespace("analyze-propose").await;
    let dataset = table(&ns, "healing_events", support::events_table_schema()).await;
    let policy = injury_policy();
    let now = Timestamp::now();
    let mut rows = Vec::new();
    // 13 stalls in the test's namespace: 8 outstanding only on injured players, 5 also on
    // feature store timeouts (so still stalled with injuries counted).
    for i in 0..13 {
        let at = now - SignedDuration::from_mins(10 * (i + 1));
        let last = at - SignedDuration::from_mins(16);
        let batch = if i < 8 {
            reported_batch(
                &ns.name,
                &format!("inj-{i}"),
                95,
                &[("player_injury_out", 5)],
                &[],
                last,
            )
        } else {
            reported_batch(
                &ns.name,
                &format!("mix-{i}"),
                90,
                &[("player_injury_out", 5)],
                &[("feature_store_timeout", 5)],
                last,
            )
        };
        rows.push(heal_row(&batch, "nba", &policy, at, 1, Outcome::Succeeded));
    }
    // Another namespace: `late_feed` skips, outstanding in 6 heals, whose players completed
    // afterwards (each batch's second attempt sees fewer of them and more completed).
    let other = format!("{}-late", ns.name);
    for i in 0..3 {
        let at = now - SignedDuration::from_mins(30 + 10 * i);
        let last = at - SignedDuration::from_mins(16);
        let id = format!("late-{i}");
        let first = reported_batch(&other, &id, 96, &[("late_feed", 4)], &[], last);
        rows.push(heal_row(&first, "default", &policy, at, 1, Outcome::Failed));
        let later = SignedDuration::from_secs(40);
        let second = reported_batch(&other, &id, 98, &[("late_feed", 2)], &[], last + later);
        rows.push(heal_row(
            &second,
            "default",
            &policy,
            at + later + later,
            2,
            Outcome::Succeeded,
        ));
    }
    insert(&dataset, "healing_events", rows).await;

    let dir = tempfile::tempdir().unwrap();
    let patch_file = dir.path().join("policy.yaml");
    let patch_path = patch_file.to_str().unwrap();
    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend([
        "--since",
        "1d",
        "--propose",
        "--propose-patch",
        patch_path,
        "--output",
        "json",
    ]);
    let out = report_of(&analyze(&args, &[]));
    let proposals = out["proposals"].as_array().expect("a proposals list");
    assert_eq!(proposals.len(), 1, "{proposals:#?}");
    let p = &proposals[0];
    assert_eq!(p["kind"], "permanent_skip_reason");
    assert_eq!(p["reason"], "player_injury_out");
    assert_eq!(p["namespace"], ns.name.as_str());
    assert_eq!(
        (p["heals_considered"].as_u64(), p["heals_avoided"].as_u64()),
        (Some(13), Some(8))
    );
    assert!(
        p["summary"]
            .as_str()
            .unwrap()
            .contains("8 of 13 heals avoided, 62 %"),
        "{p}"
    );
    let evidence: BTreeSet<&str> = p["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert_eq!(evidence.len(), 8);
    assert!(
        evidence.iter().all(|id| id.contains("-inj-")),
        "{evidence:?}"
    );

    // The manifest is one a person commits as it is: the API server takes it.
    let manifest = std::fs::read_to_string(&patch_file).unwrap();
    assert_eq!(manifest, p["patch"].as_str().unwrap());
    let proposed: HealingPolicy = serde_yaml::from_str(&manifest).expect("a HealingPolicy");
    assert_eq!(proposed.metadata.name.as_deref(), Some("nba"));
    assert!(
        proposed
            .spec
            .permanent_skip_reasons
            .iter()
            .any(|r| r == "player_injury_out")
    );
    assert_eq!(proposed.spec.permanent_skip_reasons.len(), 9);
    let created = ns
        .api::<HealingPolicy>()
        .create(&kube::api::PostParams::default(), &proposed)
        .await
        .expect("the API server admits the proposed policy");
    assert_eq!(created.spec.stall_after.as_str(), "15m");

    // With the person's own file, the patch is that file changed: its other fields stay.
    let own = dir.path().join("own.yaml");
    std::fs::write(
        &own,
        format!(
            "apiVersion: healing.pipeline.dev/v1alpha1\nkind: HealingPolicy\n\
             metadata: {{name: gitops, namespace: {}}}\n\
             spec:\n  dryRun: true\n  alerts: {{cooldown: 2h}}\n",
            ns.name
        ),
    )
    .unwrap();
    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend(["--since", "1d", "--propose", "--output", "json"]);
    args.extend([
        "--policy",
        own.to_str().unwrap(),
        "--propose-patch",
        patch_path,
    ]);
    report_of(&analyze(&args, &[]));
    let changed: HealingPolicy =
        serde_yaml::from_str(&std::fs::read_to_string(&patch_file).unwrap()).unwrap();
    let created = ns
        .api::<HealingPolicy>()
        .create(&kube::api::PostParams::default(), &changed)
        .await
        .expect("the API server admits the changed file");
    assert_eq!(created.metadata.name.as_deref(), Some("gitops"));
    assert!(created.spec.dry_run);
    assert_eq!(created.spec.alerts.cooldown.as_str(), "2h");
    assert_eq!(created.spec.permanent_skip_reasons.len(), 9);
    // A file that is not a HealingPolicy is refused before anything is read.
    std::fs::write(&own, "kind: ConfigMap\nmetadata: {name: x}\n").unwrap();
    let out = analyze(&args, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not HealingPolicy"));

    // The text says the same.
    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend(["--since", "1d", "--propose"]);
    let out = analyze(&args, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "1. [permanent_skip_reason] Add player_injury_out to permanentSkipReasons in namespace {}: 8 of 13 heals avoided, 62 %",
            ns.name
        )),
        "{text}"
    );

    // A window without heals proposes nothing.
    let mut args = bigquery_args(&dataset, "healing_events");
    let (start, end) = (
        (now - SignedDuration::from_hours(48)).to_string(),
        (now - SignedDuration::from_hours(24)).to_string(),
    );
    args.extend([
        "--start",
        &start,
        "--end",
        &end,
        "--propose",
        "--output",
        "json",
    ]);
    let out = report_of(&analyze(&args, &[]));
    assert_eq!(out["proposals"], json!([]));
    assert_eq!(out["total"], 0);

    // The weekly digest: the week's figures against the week before, the top proposal.
    let slack = support::http::RecordingServer::start(200).await;
    let digest = |slack_url: String| {
        let mut args: Vec<String> = bigquery_args(&dataset, "healing_events")
            .into_iter()
            .map(str::to_owned)
            .collect();
        args.extend(["--since", "7d", "--slack"].map(str::to_owned));
        // The binary blocks; the webhook is served by this test's runtime meanwhile.
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            analyze(&args, &[("SLACK_WEBHOOK_URL", &slack_url)])
        })
    };
    let out = digest(format!("{}/services/T000/B000/secret", slack.url))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let posted = slack.requests();
    assert_eq!(posted.len(), 1);
    assert_eq!(posted[0].path, "/services/T000/B000/secret");
    let message = posted[0].json();
    let text = message["blocks"][0]["text"]["text"].as_str().unwrap();
    assert!(text.starts_with("*Weekly healing digest*"), "{text}");
    assert!(text.contains("*Heals:* 19 (0 the period before)"), "{text}");
    assert!(
        text.contains("*Top proposals:*\n1. Add player_injury_out"),
        "{text}"
    );
    assert!(text.contains("8 of 13 heals avoided, 62 %"), "{text}");

    // A webhook that keeps failing fails the run, without showing its URL (a secret).
    slack.answer_with(500);
    let out = digest(format!("{}/services/T000/B000/secret", slack.url))
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the webhook answered 500"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
}

/// The Monday 00:00 UTC that starts the current ISO week.
fn this_monday() -> Timestamp {
    let today = Timestamp::now().to_zoned(jiff::tz::TimeZone::UTC).date();
    let monday = today
        .checked_sub(jiff::Span::new().days(i64::from(today.weekday().to_monday_zero_offset())))
        .unwrap();
    monday
        .to_zoned(jiff::tz::TimeZone::UTC)
        .unwrap()
        .timestamp()
}

#[tokio::test]
async fn the_trend_of_two_weeks_shows_the_week_over_week_change() {
    let ns = support::namespace("analyze-trend").await;
    let dataset = table(&ns, "healing_events", support::events_table_schema()).await;
    let second_week = this_monday() - SignedDuration::from_hours(7 * 24);
    let first_week = second_week - SignedDuration::from_hours(7 * 24);
    let minutes_ago = |t: Timestamp| Timestamp::now().duration_since(t).as_mins();
    let batch = ("PredictionBatch", Some("pipeline"), "b");
    let mut events = Vec::new();
    // Week one: 6 heals (one failed) of 3 root causes; week two: 3 heals of one of them.
    for (i, cause) in [
        "injury",
        "injury",
        "timeout",
        "timeout",
        "no_progress",
        "injury",
    ]
    .iter()
    .enumerate()
    {
        let at = first_week + SignedDuration::from_hours(20 * i as i64 + 1);
        let outcome = if i == 1 {
            Outcome::Failed
        } else {
            Outcome::Succeeded
        };
        events.push(action(
            &format!("w1-{i}"),
            minutes_ago(at),
            "batch_cleanup",
            cause,
            batch,
            outcome,
            false,
            Some(10.0),
        ));
    }
    for i in 0..3 {
        let at = second_week + SignedDuration::from_hours(30 * i + 1);
        events.push(action(
            &format!("w2-{i}"),
            minutes_ago(at),
            "batch_cleanup",
            "injury",
            batch,
            Outcome::Succeeded,
            false,
            Some(10.0),
        ));
    }
    let rows = events
        .into_iter()
        .map(|(mut event, status)| {
            event.status = Some(status);
            serde_json::to_value(HealingEventRow::from_event(&event)).unwrap()
        })
        .collect();
    insert(&dataset, "healing_events", rows).await;

    let (start, end) = (first_week.to_string(), this_monday().to_string());
    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend([
        "--start", &start, "--end", &end, "--trend", "week", "--output", "json",
    ]);
    let out = report_of(&analyze(&args, &[]));
    let periods = out["trend"]["periods"].as_array().expect("periods");
    assert_eq!(periods.len(), 2, "{periods:#?}");
    let (one, two) = (&periods[0], &periods[1]);
    assert_eq!(
        (one["heals"].as_u64(), two["heals"].as_u64()),
        (Some(6), Some(3))
    );
    assert_eq!(
        (one["root_causes"].as_u64(), two["root_causes"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(two["recurring"], 3);
    assert_eq!(one["change"], Value::Null);
    assert_eq!(two["change"]["heals"], -3);
    assert_eq!(two["change"]["heals_percent"], -50.0);
    assert_eq!(two["change"]["root_causes"], -2);
    let points = two["change"]["success_rate_points"].as_f64().unwrap();
    assert!((points - 100.0 / 6.0).abs() < 1e-9, "{points}");

    // The same as CSV, a row per week.
    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend([
        "--start", &start, "--end", &end, "--trend", "week", "--output", "csv",
    ]);
    let out = analyze(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader = csv::Reader::from_reader(out.stdout.as_slice());
    let header = reader.headers().unwrap().clone();
    let column = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(&rows[1][column("heals")], "3");
    assert_eq!(&rows[1][column("heals_change")], "-3");
    assert_eq!(&rows[1][column("heals_change_percent")], "-50.0000");
    assert_eq!(&rows[0][column("heals_batch_cleanup")], "6");

    // The pictures: the plot alone, and the page that holds it, rendered by a browser.
    let dir = tempfile::tempdir().unwrap();
    let (page, plot) = (dir.path().join("report.html"), dir.path().join("trend.svg"));
    let mut args = bigquery_args(&dataset, "healing_events");
    args.extend([
        "--start",
        &start,
        "--end",
        &end,
        "--trend",
        "week",
        "--propose",
    ]);
    args.extend([
        "--html",
        page.to_str().unwrap(),
        "--plot",
        plot.to_str().unwrap(),
    ]);
    let out = analyze(&args, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&plot).unwrap();
    let texts: Vec<String> = svg
        .split("<text")
        .skip(1)
        .filter_map(|t| {
            Some(
                t.split_once('>')?
                    .1
                    .split_once("</text>")?
                    .0
                    .trim()
                    .to_owned(),
            )
        })
        .collect();
    // Each week's heals, success rate and median time to heal (onset 15 min before the
    // threshold, seen healthy 10 s after it), and every root cause in the legend.
    for number in [
        "6",
        "3",
        "83.3%",
        "100.0%",
        "910.0 s",
        "injury",
        "timeout",
        "no_progress",
    ] {
        assert!(
            texts.iter().any(|t| t == number),
            "{number} not in the plot: {texts:?}"
        );
    }
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.contains(&svg), "the page embeds the plot");
    for fetches in ["src=", "<link", "url(", "@import"] {
        assert!(
            !html.contains(fetches),
            "the page would fetch something: {fetches}"
        );
    }
    let png = dir.path().join("report.png");
    support::render_page(&page, &png);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((width, height), support::PAGE_SIZE);
    // A blank page compresses to a few kB; one with three plots and the report does not.
    assert!(
        bytes.len() > 60_000,
        "the PNG is only {} bytes",
        bytes.len()
    );
}
