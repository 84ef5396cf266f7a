//! Phase completeness healing on a real API server, the BigQuery and Firestore emulators,
//! and local HTTP processor endpoints that fill their tables when called.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use pipeline_healer::api::HealingPolicy;
use pipeline_healer::api::event::Outcome;
use pipeline_healer::api::phase::{PhaseRun, PhaseState};
use pipeline_healer::source::bigquery::RowCounter;
use serde_json::{Value, json};
use support::http::RecordingServer;
use support::{ControllerProcess, TestNamespace, emulators, eventually, healing_events, namespace};

const DATE: &str = "2026-11-24";

/// A dataset of its own for the test, and its tables, each with a date column.
struct Tables {
    dataset: String,
}

impl Tables {
    async fn create(ns: &TestNamespace, tables: &[(&str, &str)]) -> Self {
        let project = &emulators().project;
        let dataset = ns.own_name("ph");
        let bq = support::bigquery_client().await;
        bq.dataset()
            .create(Dataset::new(project, &dataset))
            .await
            .expect("create dataset");
        for (table, column) in tables {
            let schema = TableSchema::new(vec![
                TableFieldSchema::date(column),
                TableFieldSchema::string("player"),
            ]);
            bq.table()
                .create(Table::new(project, &dataset, table, schema))
                .await
                .expect("create table");
        }
        Self { dataset }
    }

    fn name(&self, table: &str) -> String {
        format!("{}.{table}", self.dataset)
    }

    async fn fill(&self, table: &str, column: &str, date: &str, rows: usize) {
        let mut request = TableDataInsertAllRequest::new();
        for i in 0..rows {
            request
                .add_row(None, json!({column: date, "player": format!("player{i}")}))
                .unwrap();
        }
        let response = support::bigquery_client()
            .await
            .tabledata()
            .insert_all(&emulators().project, &self.dataset, table, request)
            .await
            .expect("insertAll");
        assert!(response.insert_errors.unwrap_or_default().is_empty());
    }
}

/// The original's Phase 4: (processor, table, date column, dependencies).
const PHASE4: [(&str, &str, &str, &[&str]); 5] = [
    (
        "TeamDefenseZoneAnalysis",
        "team_defense_zone_analysis",
        "analysis_date",
        &[],
    ),
    (
        "PlayerShotZoneAnalysis",
        "player_shot_zone_analysis",
        "analysis_date",
        &[],
    ),
    ("PlayerDailyCache", "player_daily_cache", "game_date", &[]),
    (
        "PlayerCompositeFactors",
        "player_composite_factors",
        "analysis_date",
        &[
            "TeamDefenseZoneAnalysis",
            "PlayerShotZoneAnalysis",
            "PlayerDailyCache",
        ],
    ),
    (
        "MLFeatureStore",
        "ml_feature_store_v2",
        "game_date",
        &[
            "TeamDefenseZoneAnalysis",
            "PlayerShotZoneAnalysis",
            "PlayerDailyCache",
            "PlayerCompositeFactors",
        ],
    ),
];

async fn fast_policy(ns: &TestNamespace) {
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"},
        "spec": {"phaseHealing": {"initialBackoff": "1s", "maxBackoff": "4s", "maxAttempts": 2}}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
}

async fn create_phase(ns: &TestNamespace, name: &str, spec: Value) {
    let run: PhaseRun = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PhaseRun",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap();
    ns.api::<PhaseRun>()
        .create(&PostParams::default(), &run)
        .await
        .unwrap();
}

/// The controller, allowed to POST under `url_prefixes` (the operator's allowlist) and
/// with `args` besides.
fn start_controller(ns: &TestNamespace, url_prefixes: &[&str], args: &[&str]) -> ControllerProcess {
    let mut all: Vec<&str> = url_prefixes
        .iter()
        .flat_map(|p| ["--trigger-allowed-url-prefix", p])
        .collect();
    all.extend_from_slice(args);
    ControllerProcess::start_with(
        &ns.name,
        "phases",
        &all,
        &[("BIGQUERY_EMULATOR_HOST", emulators().bigquery.as_str())],
    )
}

async fn state_becomes(ns: &TestNamespace, name: &str, state: PhaseState) -> PhaseRun {
    let api = ns.api::<PhaseRun>();
    eventually(60, &format!("{name} becomes {state:?}"), || async {
        let run = api.get(name).await.ok()?;
        (run.status.as_ref()?.state == Some(state)).then_some(run)
    })
    .await
}

/// Fills a processor's table shortly after its endpoint is called, as a processor would.
fn fill_on_request(
    server: Arc<RecordingServer>,
    tables: Arc<Tables>,
    fills: BTreeMap<String, (String, String)>,
) {
    tokio::spawn(async move {
        let mut served = 0;
        loop {
            let requests = server.requests();
            for request in &requests[served..] {
                let processor = request
                    .path
                    .trim_start_matches('/')
                    .split('?')
                    .next()
                    .unwrap_or_default();
                if let Some((table, column)) = fills.get(processor) {
                    tables.fill(table, column, DATE, 3).await;
                }
            }
            served = requests.len();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

#[tokio::test]
async fn an_empty_daily_cache_reruns_exactly_it_and_what_depends_on_it_in_order() {
    let ns = namespace("phase4").await;
    fast_policy(&ns).await;
    let specs: Vec<(&str, &str)> = PHASE4.iter().map(|(_, t, c, _)| (*t, *c)).collect();
    let tables = Arc::new(Tables::create(&ns, &specs).await);
    for (_, table, column, _) in PHASE4 {
        if table != "player_daily_cache" {
            tables.fill(table, column, DATE, 5).await;
        }
    }
    // Other dates' rows do not count.
    tables
        .fill("player_daily_cache", "game_date", "2026-11-23", 5)
        .await;
    let server = Arc::new(RecordingServer::start(200).await);
    let fills = PHASE4
        .iter()
        .map(|(p, t, c, _)| ((*p).to_owned(), ((*t).to_owned(), (*c).to_owned())))
        .collect();
    fill_on_request(server.clone(), tables.clone(), fills);
    let processors: Vec<Value> = PHASE4
        .iter()
        .map(|(name, table, column, deps)| {
            json!({
                "name": name, "table": tables.name(table), "dateColumn": column, "dependsOn": deps,
                "trigger": {"http": {"url": format!("{}/{{processor}}?analysis_date={{date}}", server.url)}},
            })
        })
        .collect();
    create_phase(
        &ns,
        "phase4",
        json!({"phase": "phase4", "date": DATE, "processors": processors}),
    )
    .await;
    let _controller = start_controller(&ns, &[&format!("{}/", server.url)], &[]);

    let run = state_becomes(&ns, "phase4", PhaseState::Complete).await;
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        [
            format!("/PlayerDailyCache?analysis_date={DATE}"),
            format!("/PlayerCompositeFactors?analysis_date={DATE}"),
            format!("/MLFeatureStore?analysis_date={DATE}"),
        ]
    );
    let first = &server.requests()[0];
    let body = first.json();
    let correlation = body["correlation_id"].as_str().unwrap().to_owned();
    assert_eq!(body["processor"], "PlayerDailyCache");
    assert_eq!(body["date"], DATE);
    assert_eq!(first.header("X-Correlation-Id"), Some(correlation.as_str()));
    // One pass: every trigger carries the same correlation id.
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.json()["correlation_id"] == correlation.as_str())
    );

    let status = run.status.unwrap();
    assert_eq!(
        status.plan,
        [
            vec!["PlayerDailyCache"],
            vec!["PlayerCompositeFactors"],
            vec!["MLFeatureStore"]
        ]
    );
    assert_eq!(status.record_counts[&tables.name("player_daily_cache")], 3);
    assert!(status.missing_processors.is_empty());
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(complete.status, "True");

    let events = healing_events(&ns).await;
    let mut causes: Vec<String> = events.iter().map(|e| e.spec.root_cause.clone()).collect();
    causes.sort();
    assert_eq!(
        causes,
        [
            format!("missing_rows:{}", tables.name("player_daily_cache")),
            format!("upstream_rerun:{}", tables.name("ml_feature_store_v2")),
            format!("upstream_rerun:{}", tables.name("player_composite_factors")),
        ]
    );
    assert!(events.iter().all(|e| e.spec.healing_type == "phase_rerun"
        && e.spec.correlation_id.as_deref() == Some(correlation.as_str())
        && e.status.as_ref().and_then(|s| s.success) == Some(true)));
    // Each re-run is a success because its table was seen with its rows, not because its
    // endpoint answered; its time to heal runs from the first sight of the missing rows.
    let cache = events
        .iter()
        .find(|e| e.spec.root_cause.starts_with("missing_rows:"))
        .unwrap();
    let cache_status = cache.status.as_ref().unwrap();
    assert_eq!(cache_status.outcome, Some(Outcome::Succeeded));
    assert_eq!(
        cache_status.after_state,
        Some(json!({"triggered": true, "rows_before": 0, "rows_after": 3}))
    );
    let onset = cache.spec.onset_time.as_ref().unwrap().0;
    let detected = cache.spec.detected_time.as_ref().unwrap().0;
    let healed = cache_status.healed_time.as_ref().unwrap().0;
    assert!(
        onset <= detected && detected < healed,
        "{onset} {detected} {healed}"
    );
    let to_heal = cache_status.time_to_heal_seconds.unwrap();
    assert!(
        (to_heal - healed.duration_since(onset).as_secs_f64()).abs() < 1e-3,
        "{to_heal}"
    );
    assert!(to_heal > 0.0);
    for event in &events {
        let status = event.status.as_ref().unwrap();
        assert!(status.healed_time.is_some(), "{}", event.spec.healing_id);
        assert!(status.time_to_heal_seconds.is_some());
    }

    // The original's history document, for its queries.
    let id = format!("{DATE}_phase4_{}", &correlation[..8]);
    let doc: Option<Value> = support::firestore_db()
        .await
        .fluent()
        .select()
        .by_id_in("self_heal_history")
        .obj()
        .one(&id)
        .await
        .unwrap();
    let doc = doc.expect("the self_heal_history document");
    assert_eq!(doc["missing_components"], json!(["PlayerDailyCache"]));
    assert_eq!(
        doc["healing_result"]["triggered"],
        json!(["PlayerDailyCache"])
    );
    assert_eq!(doc["correlation_id"], correlation.as_str());
}

#[tokio::test]
async fn an_endpoint_that_answers_200_and_writes_nothing_fails_as_ineffective_and_turns_critical() {
    let ns = namespace("phase-ineffective").await;
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"},
        "spec": {
            "phaseHealing": {"initialBackoff": "1s", "maxBackoff": "2s", "maxAttempts": 2},
            "alerts": {"critical": {"minEvents": 2, "failureRatePercent": 50, "window": "1h"}},
        }
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
    let tables = Tables::create(&ns, &[("player_daily_cache", "game_date")]).await;
    // A processor that answers 200 and writes nothing.
    let server = RecordingServer::start(200).await;
    create_phase(
        &ns,
        "phase4",
        json!({"phase": "phase4", "date": DATE, "processors": [{
            "name": "PlayerDailyCache", "table": tables.name("player_daily_cache"),
            "dateColumn": "game_date", "minRows": 2,
            "trigger": {"http": {"url": format!("{}/{{processor}}", server.url)}},
        }]}),
    )
    .await;
    let _controller = start_controller(&ns, &[&format!("{}/", server.url)], &[]);

    state_becomes(&ns, "phase4", PhaseState::GaveUp).await;
    assert_eq!(
        server.requests().len(),
        2,
        "both attempts were sent and answered 200"
    );
    let table = tables.name("player_daily_cache");
    let events = final_events(&ns, 2).await;
    assert_eq!(events.len(), 2, "{events:?}");
    for (cause, outcome, message) in &events {
        assert_eq!(cause, &format!("rerun_ineffective:{table}"));
        assert_eq!(outcome, "Failed");
        assert!(message.contains("has 0 of its 2 rows"), "{message}");
    }
    let records = healing_events(&ns).await;
    for event in &records {
        let status = event.status.as_ref().unwrap();
        assert_eq!(status.success, Some(false));
        assert_eq!(status.healed_time, None);
        assert_eq!(status.after_state.as_ref().unwrap()["rows_after"], 0);
        assert_eq!(
            event.spec.root_cause,
            format!("missing_rows:{table}"),
            "the intent keeps what was seen before the action"
        );
    }
    // The verified failures count: two of two re-runs failed, so phase_rerun is critical.
    let policies = ns.api::<HealingPolicy>();
    eventually(30, "phase_rerun turns critical", || async {
        let status = policies.get("default").await.ok()?.status?;
        let level = status.healing_types.get("phase_rerun")?.alert.level;
        (level == pipeline_healer::api::health::AlertLevel::Critical).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_failed_query_triggers_nothing_and_a_date_without_games_is_not_required() {
    let ns = namespace("phase-unknown").await;
    fast_policy(&ns).await;
    let tables = Tables::create(
        &ns,
        &[
            ("nbac_schedule", "game_date_est"),
            ("gamebook", "game_date"),
        ],
    )
    .await;
    tables
        .fill("nbac_schedule", "game_date_est", "2026-11-23", 4)
        .await;
    let server = RecordingServer::start(200).await;
    let trigger = json!({"http": {"url": format!("{}/{{processor}}", server.url)}});
    // A table that does not exist: the count is unknown, not zero.
    create_phase(&ns, "unknown", json!({"phase": "phase2", "date": DATE, "processors": [
        {"name": "gamebook", "table": format!("{}.no_such_table", tables.dataset), "dateColumn": "game_date", "trigger": trigger},
    ]}))
    .await;
    // The schedule has no games on the date: nothing is required, whatever is empty.
    create_phase(&ns, "no-games", json!({"phase": "phase2", "date": DATE,
        "schedule": {"table": tables.name("nbac_schedule"), "dateColumn": "game_date_est"},
        "processors": [{"name": "gamebook", "table": tables.name("gamebook"), "dateColumn": "game_date", "trigger": trigger}],
    }))
    .await;
    let _controller = start_controller(&ns, &[&server.url], &[]);

    let unknown = state_becomes(&ns, "unknown", PhaseState::ObservationFailed).await;
    let condition = unknown
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "ObservationFailed")
        .unwrap();
    assert_eq!(condition.status, "True");
    assert!(
        condition.message.contains("no_such_table"),
        "{}",
        condition.message
    );
    let no_games = state_becomes(&ns, "no-games", PhaseState::NotRequired).await;
    assert!(
        no_games
            .status
            .unwrap()
            .conditions
            .iter()
            .any(|c| c.type_ == "NotRequired" && c.status == "True")
    );
    // Several backoffs later, still nothing triggered.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(healing_events(&ns).await.is_empty());
}

#[tokio::test]
async fn a_job_trigger_creates_an_owned_job_and_its_success_completes_the_phase() {
    let ns = namespace("phase-job").await;
    fast_policy(&ns).await;
    let tables = Tables::create(&ns, &[("bdl_player_boxscores", "game_date")]).await;
    create_phase(&ns, "boxscores", json!({"phase": "phase2", "date": DATE, "processors": [{
        "name": "bdl_player_boxscores", "table": tables.name("bdl_player_boxscores"), "dateColumn": "game_date",
        "trigger": {"job": {"template": {"spec": {"backoffLimit": 1, "template": {"spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "scraper", "image": "scrapers/bdl:1", "args": ["--date", "{date}", "--scraper", "{processor}"]}],
        }}}}}},
    }]}))
    .await;
    let _controller = start_controller(&ns, &[], &[]);

    let jobs = ns.api::<Job>();
    let job = eventually(30, "the Job is created", || async {
        jobs.list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .next()
    })
    .await;
    let run = ns.api::<PhaseRun>().get("boxscores").await.unwrap();
    let owner = &job.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str()),
        ("PhaseRun", run.metadata.uid.as_deref().unwrap())
    );
    let args = job
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(args, ["--date", DATE, "--scraper", "bdl_player_boxscores"]);

    // No kubelet runs it: the rows arrive and the Job is marked succeeded by hand.
    tables
        .fill("bdl_player_boxscores", "game_date", DATE, 3)
        .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        ns.api::<PhaseRun>()
            .get("boxscores")
            .await
            .unwrap()
            .status
            .unwrap()
            .state,
        Some(PhaseState::Healing)
    );
    let now = jiff::Timestamp::now().to_string();
    jobs.patch_status(
        &job.metadata.name.clone().unwrap(),
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"startTime": now, "succeeded": 1}})),
    )
    .await
    .expect("mark the Job succeeded");
    state_becomes(&ns, "boxscores", PhaseState::Complete).await;
    // One trigger, recorded once: the Job outlived the longest wait (4 s) without a second
    // one racing it, and no reconcile that read a stale PhaseRun started the pass again.
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        1
    );
    assert_eq!(healing_events(&ns).await.len(), 1);
}

#[tokio::test]
async fn a_hostile_table_name_never_reaches_bigquery() {
    let ns = namespace("phase-hostile").await;
    let tables = Tables::create(&ns, &[("victim", "game_date")]).await;
    tables.fill("victim", "game_date", DATE, 2).await;
    let counter = RowCounter::new(
        support::bigquery_client().await,
        emulators().project.clone(),
    );
    let date: jiff::civil::Date = DATE.parse().unwrap();
    for hostile in [
        format!(
            "{}.victim` WHERE 1=1; DROP TABLE `{}.victim",
            tables.dataset, tables.dataset
        ),
        format!("{}.victim; --", tables.dataset),
        "a.b.c.d".to_owned(),
    ] {
        let error = counter
            .count(&hostile, "game_date", date)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("table name"), "{error}");
    }
    let error = counter
        .count(&tables.name("victim"), "game_date` = game_date OR `1", date)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("column"), "{error}");
    // The table is untouched and the valid query counts it.
    assert_eq!(
        counter
            .count(&tables.name("victim"), "game_date", date)
            .await
            .expect("the valid query counts"),
        2
    );
}

/// The condition `type_` of a PhaseRun, once it is True.
async fn condition_true(ns: &TestNamespace, name: &str, type_: &str) -> String {
    let api = ns.api::<PhaseRun>();
    eventually(60, &format!("{name} shows {type_}"), || async {
        let run = api.get(name).await.ok()?;
        let condition = run
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == type_ && c.status == "True")?;
        Some(condition.message)
    })
    .await
}

/// Every HealingEvent of the namespace once it is final, with the root cause and message.
async fn final_events(ns: &TestNamespace, count: usize) -> Vec<(String, String, String)> {
    eventually(60, &format!("{count} final HealingEvents"), || async {
        let events = healing_events(ns).await;
        let finals: Vec<(String, String, String)> = events
            .iter()
            .filter_map(|e| {
                let status = e.status.as_ref()?;
                let outcome = status.outcome?;
                outcome.is_final().then(|| {
                    (
                        e.root_cause().to_owned(),
                        format!("{outcome:?}"),
                        status.message.clone().unwrap_or_default(),
                    )
                })
            })
            .collect();
        (finals.len() >= count).then_some(finals)
    })
    .await
}

#[tokio::test]
async fn a_trigger_outside_the_allowlist_sends_nothing_and_is_recorded_refused() {
    const MARKER: &str = "s3cretMarker7781";
    let ns = namespace("phase-refused").await;
    fast_policy(&ns).await;
    let tables = Arc::new(
        Tables::create(
            &ns,
            &[
                ("allowed", "game_date"),
                ("elsewhere", "game_date"),
                ("confused", "game_date"),
            ],
        )
        .await,
    );
    let allowed = Arc::new(RecordingServer::start(200).await);
    let evil = RecordingServer::start(200).await;
    let evil_host = evil.url.trim_start_matches("http://").to_owned();
    fill_on_request(
        allowed.clone(),
        tables.clone(),
        BTreeMap::from([(
            "Allowed".to_owned(),
            ("allowed".to_owned(), "game_date".to_owned()),
        )]),
    );
    create_phase(&ns, "mixed", json!({"phase": "phase4", "date": DATE, "processors": [
        {"name": "Allowed", "table": tables.name("allowed"), "dateColumn": "game_date",
         "trigger": {"http": {"url": format!("{}/{{processor}}", allowed.url)}}},
        // Another host, an audience it would mint a token for, and a key in the query.
        {"name": "Elsewhere", "table": tables.name("elsewhere"), "dateColumn": "game_date",
         "trigger": {"http": {"url": format!("{}/run?key={MARKER}", evil.url), "audience": "https://bank.example"}}},
        // The allowed prefix as a user name: the request would go to the other host.
        {"name": "Confused", "table": tables.name("confused"), "dateColumn": "game_date",
         "trigger": {"http": {"url": format!("{}@{evil_host}/run", allowed.url)}}},
    ]}))
    .await;
    let _controller = start_controller(&ns, &[&format!("{}/", allowed.url)], &[]);

    let message = condition_true(&ns, "mixed", "TriggerRefused").await;
    let evil_origin = evil.url.clone();
    assert!(message.contains(&evil_origin), "{message}");
    assert!(
        message.contains("--trigger-allowed-url-prefix"),
        "{message}"
    );
    assert!(
        message.contains("Elsewhere") && message.contains("Confused"),
        "{message}"
    );
    let events = final_events(&ns, 3).await;
    let mut refused: Vec<&(String, String, String)> = events
        .iter()
        .filter(|(cause, _, _)| cause == "trigger_not_allowed")
        .collect();
    refused.sort();
    assert_eq!(refused.len(), 2, "{events:?}");
    assert!(
        refused.iter().all(|(_, outcome, _)| outcome == "Failed"),
        "{events:?}"
    );
    // The allowed processor is not held back by its refused neighbours.
    let api = ns.api::<PhaseRun>();
    eventually(60, "the allowed table counted full", || async {
        let run = api.get("mixed").await.ok()?;
        (run.status?.record_counts.get(&tables.name("allowed")) == Some(&3)).then_some(())
    })
    .await;
    assert_eq!(allowed.requests().len(), 1, "{:?}", allowed.requests());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(evil.requests().is_empty(), "{:?}", evil.requests());

    // The key in the refused URL is in no status, HealingEvent or Kubernetes Event.
    assert!(message.contains(&format!("{evil_origin}/run")), "{message}");
    let everything = written_by_the_controller(&ns, "mixed").await;
    assert!(
        !everything.contains(MARKER),
        "the URL's key leaked:\n{everything}"
    );
}

#[tokio::test]
async fn a_job_template_that_borrows_an_identity_or_the_host_creates_no_job() {
    let ns = namespace("phase-job-refused").await;
    fast_policy(&ns).await;
    let tables = Tables::create(&ns, &[("boxscores", "game_date")]).await;
    create_phase(
        &ns,
        "hostile-job",
        json!({"phase": "phase2", "date": DATE, "processors": [{
            "name": "boxscores", "table": tables.name("boxscores"), "dateColumn": "game_date",
            "trigger": {"job": {"template": {"spec": {"template": {"spec": {
                "restartPolicy": "Never",
                "serviceAccountName": "pipeline-healer",
                "hostPID": true,
                "volumes": [{"name": "root", "hostPath": {"path": "/"}}],
                "containers": [{"name": "scraper", "image": "scrapers/bdl:1",
                    "securityContext": {"privileged": true}}],
            }}}}}},
        }]}),
    )
    .await;
    let _controller = start_controller(&ns, &[], &["--job-allowed-service-account", "scraper"]);

    let message = condition_true(&ns, "hostile-job", "TriggerRefused").await;
    for named in [
        "serviceAccountName \"pipeline-healer\"",
        "hostPID",
        "hostPath",
        "privileged",
        "--job-allowed-service-account",
    ] {
        assert!(message.contains(named), "{named} not in {message}");
    }
    let events = final_events(&ns, 1).await;
    assert_eq!(events[0].0, "trigger_not_allowed", "{events:?}");
    assert_eq!(events[0].1, "Failed", "{events:?}");
    assert!(
        ns.api::<Job>()
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn a_table_in_a_project_not_allowed_is_refused_before_any_query() {
    let ns = namespace("phase-project").await;
    let tables = Tables::create(&ns, &[("ours", "game_date")]).await;
    let server = RecordingServer::start(200).await;
    let trigger = json!({"http": {"url": format!("{}/{{processor}}", server.url)}});
    create_phase(&ns, "foreign", json!({"phase": "phase2", "date": DATE, "processors": [
        {"name": "ours", "table": tables.name("ours"), "dateColumn": "game_date", "trigger": trigger},
        {"name": "theirs", "table": "billing-prod.ledger.payments", "dateColumn": "game_date", "trigger": trigger},
    ]}))
    .await;
    let _controller = start_controller(&ns, &[&server.url], &[]);

    let message = condition_true(&ns, "foreign", "TableRefused").await;
    assert!(message.contains("billing-prod"), "{message}");
    assert!(message.contains("--phase-allowed-project"), "{message}");
    let run = state_becomes(&ns, "foreign", PhaseState::Invalid).await;
    // Nothing was counted, not even the allowed table.
    assert!(run.status.unwrap().record_counts.is_empty());
    let events = final_events(&ns, 1).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(
        (events[0].0.as_str(), events[0].1.as_str()),
        ("table_not_allowed", "Failed")
    );
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn no_webhook_url_trigger_query_or_token_reaches_a_log_event_or_status() {
    const MARKER: &str = "s3cretWebhookMarker4410";
    let ns = namespace("phase-secrets").await;
    // Fast heals, and an alert on the first failure, so the Slack webhook is called.
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"},
        "spec": {"phaseHealing": {"initialBackoff": "1s", "maxBackoff": "2s", "maxAttempts": 2},
                 "alerts": {"yellow": {"count": 1, "window": "1h"}, "red": {"count": 50, "window": "24h"}}}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
    let tables = Tables::create(
        &ns,
        &[("refusing", "game_date"), ("unreachable", "game_date")],
    )
    .await;
    let refusing = RecordingServer::start(500).await;
    // Nothing listens here: the client's error would name the whole URL.
    let dead = format!("http://127.0.0.1:{}", support::free_port());
    create_phase(
        &ns,
        "secrets",
        json!({"phase": "phase4", "date": DATE, "processors": [
            {"name": "Refusing", "table": tables.name("refusing"), "dateColumn": "game_date",
             "trigger": {"http": {"url": format!("{}/run?key={MARKER}", refusing.url)}}},
            {"name": "Unreachable", "table": tables.name("unreachable"), "dateColumn": "game_date",
             "trigger": {"http": {"url": format!("{dead}/run?key={MARKER}")}}},
        ]}),
    )
    .await;
    let webhook = format!("{dead}/services/T000/B000/{MARKER}?token={MARKER}");
    let prefixes = [format!("{}/", refusing.url), format!("{dead}/")];
    let args: Vec<&str> = prefixes
        .iter()
        .flat_map(|p| ["--trigger-allowed-url-prefix", p.as_str()])
        .collect();
    let (_controller, log) = ControllerProcess::start_logged(
        &ns.name,
        "secrets",
        &args,
        &[
            ("BIGQUERY_EMULATOR_HOST", emulators().bigquery.as_str()),
            ("SLACK_WEBHOOK_URL", &webhook),
            ("SLACK_WEBHOOK_URL_ERROR", &webhook),
        ],
        "debug,firestore=info,kube=info,hyper=info,h2=info,tower=info,rustls=info,tonic=info,reqwest=info",
    );

    // Both triggers fail, and the alert's delivery fails after its retries.
    eventually(60, "the Slack delivery given up", || async {
        log.text()
            .contains("Slack message not delivered")
            .then_some(())
    })
    .await;
    assert!(!refusing.requests().is_empty());
    let events = final_events(&ns, 2).await;
    let messages: Vec<&str> = events.iter().map(|(_, _, m)| m.as_str()).collect();
    assert!(
        messages.iter().any(|m| m.contains("answered 500")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains(&format!("{dead}/run"))),
        "{messages:?}"
    );

    let everything = format!(
        "{}{}",
        log.text(),
        written_by_the_controller(&ns, "secrets").await
    );
    assert!(everything.contains("Slack message not delivered"));
    assert!(
        !everything.contains(MARKER),
        "a secret leaked:\n{everything}"
    );
    assert!(
        !everything.contains("key="),
        "a query string leaked:\n{everything}"
    );
}

/// What the controller wrote about PhaseRun `name`, as text: its status (the spec is the
/// user's own), the namespace's HealingEvents and Kubernetes Events.
async fn written_by_the_controller(ns: &TestNamespace, name: &str) -> String {
    let status = ns.api::<PhaseRun>().get(name).await.unwrap().status;
    let events = ns
        .api::<k8s_openapi::api::events::v1::Event>()
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    format!(
        "{}{}{}",
        serde_json::to_string(&status).unwrap(),
        serde_json::to_string(&healing_events(ns).await).unwrap(),
        serde_json::to_string(&events).unwrap(),
    )
}

/// A status an earlier release wrote by merge patch (recorded as `pipeline-healer`,
/// operation Update) does not outlive the whole-status writer: the field it leaves out goes,
/// where a bare apply would leave it (that entry still owns it).
#[tokio::test]
async fn a_field_an_earlier_release_wrote_is_removed_when_the_status_is_applied_without_it() {
    use pipeline_healer::api::phase::PhaseRunStatus;
    use pipeline_healer::runtime::status::{Precondition, apply_whole_status};
    let ns = namespace("phase-legacy-status").await;
    create_phase(
        &ns,
        "legacy",
        json!({"phase": "phase4", "date": "2026-11-24", "processors": [
            {"name": "a", "table": "d.a", "dateColumn": "game_date"}]}),
    )
    .await;
    let api = ns.api::<PhaseRun>();
    let legacy = json!({"status": {"state": "Healing", "currentWave": 1, "plan": [["a"]],
                                   "attempts": {"a": 1, "gone": 2}}});
    api.patch_status(
        "legacy",
        &PatchParams {
            field_manager: Some("pipeline-healer".into()),
            ..Default::default()
        },
        &Patch::Merge(&legacy),
    )
    .await
    .unwrap();
    let settled = PhaseRunStatus {
        state: Some(PhaseState::Complete),
        plan: vec![vec!["a".into()]],
        attempts: BTreeMap::from([("a".into(), 1)]),
        ..Default::default()
    };
    let run = api.get("legacy").await.unwrap();
    let written = apply_whole_status(
        &api,
        "legacy",
        "pipeline-healer",
        Precondition::decided_from(&run),
        &settled,
        "writing the status",
    )
    .await
    .unwrap()
    .expect("no conflict");
    let status = written.status.expect("a status");
    assert_eq!(status.state, Some(PhaseState::Complete));
    assert_eq!(status.current_wave, None, "the pass's wave is gone");
    assert_eq!(status.attempts, BTreeMap::from([("a".into(), 1)]));
    assert_eq!(status.plan, [vec!["a".to_owned()]]);
    let again = api.get("legacy").await.unwrap().status.unwrap();
    assert_eq!(again.current_wave, None);
}
