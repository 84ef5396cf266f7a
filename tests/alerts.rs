//! Pattern alerts and the circuit breaker, on a real API server with the controller binary
//! running and a local HTTP server standing in for Slack's webhooks.

mod support;

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ListParams, PostParams};
use pipeline_healer::api::batch::BatchState;
use pipeline_healer::api::event::{HealingEventStatus, Outcome};
use pipeline_healer::api::health::{AlertLevel, CircuitState, TypeHealth};
use pipeline_healer::api::{HealingEvent, HealingPolicy, PredictionBatch};
use pipeline_healer::controller::health::HEALTH_CONFIGMAP;
use serde_json::json;
use support::events::{record_outcomes, worker_retry};
use support::http::{Recorded, RecordingServer};
use support::status_batch::batch;
use support::{ControllerProcess, TestNamespace, eventually, free_port, k8s_events, namespace};

/// A finished action of `healing_type`, recorded as any component records one.
fn action(i: usize, healing_type: &str, success: bool) -> (HealingEvent, HealingEventStatus) {
    let mut event = worker_retry(i, None);
    let id = format!("{}-{i:03}", healing_type.replace('_', "-"));
    event.metadata.name = Some(id.clone());
    event.spec.healing_id = id;
    event.spec.healing_type = healing_type.into();
    let status = HealingEventStatus {
        outcome: Some(if success {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        }),
        success: Some(success),
        finished_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::now(),
        )),
        ..Default::default()
    };
    (event, status)
}

async fn actions(
    ns: &TestNamespace,
    range: std::ops::Range<usize>,
    healing_type: &str,
    success: bool,
) {
    record_outcomes(
        ns,
        range.map(|i| action(i, healing_type, success)).collect(),
    )
    .await;
}

fn start_controller(
    ns: &TestNamespace,
    slack: &RecordingServer,
    metrics_port: u16,
) -> ControllerProcess {
    let metrics = format!("127.0.0.1:{metrics_port}");
    ControllerProcess::start_with(
        &ns.name,
        "alerts",
        &["--metrics-addr", &metrics],
        &[
            ("SLACK_WEBHOOK_URL", &format!("{}/warning", slack.url)),
            ("SLACK_WEBHOOK_URL_ERROR", &format!("{}/error", slack.url)),
        ],
    )
}

async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits for the controller's caches (its /readyz).
async fn ready(port: u16) {
    let url = format!("http://127.0.0.1:{port}/readyz");
    eventually(60, "the controller is ready", || {
        let url = url.clone();
        async move { get(&url).await.filter(|(code, _)| *code == 200) }
    })
    .await;
}

/// The samples of a Prometheus text exposition; panics on a line that does not parse.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (series, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("sample line: {l}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("sample value: {l}"));
            (series.to_owned(), value)
        })
        .collect()
}

fn sample(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|(_, v)| *v)
}

fn slack_texts(requests: &[Recorded]) -> Vec<(String, String)> {
    requests
        .iter()
        .map(|r| {
            let text = r.json()["blocks"][0]["text"]["text"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (r.path.clone(), text)
        })
        .collect()
}

/// How often a Kubernetes Event with `reason` was published (the recorder folds repeats
/// into one object's series).
async fn events_with_reason(ns: &TestNamespace, reason: &str) -> i32 {
    k8s_events(ns, reason)
        .await
        .into_iter()
        .map(|e| e.series.map_or(1, |s| s.count))
        .sum()
}

/// Settles: whatever the controller would still send has had time to arrive.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(4)).await;
}

#[tokio::test]
async fn bands_alert_once_each_and_a_restart_sends_nothing_again() {
    let ns = namespace("alerts-bands").await;
    let slack = RecordingServer::start(200).await;
    let port = free_port();
    let controller = start_controller(&ns, &slack, port);
    ready(port).await;

    // Two actions in the hour: normal. The third: one yellow message.
    actions(&ns, 0..2, "retry", true).await;
    settle().await;
    assert!(
        slack.requests().is_empty(),
        "{:?}",
        slack_texts(&slack.requests())
    );
    actions(&ns, 2..3, "retry", true).await;
    eventually(30, "a yellow alert", || async {
        (slack.requests().len() == 1).then_some(())
    })
    .await;
    // More yellow within the cooldown: nothing more.
    actions(&ns, 3..9, "retry", true).await;
    settle().await;
    assert_eq!(slack.requests().len(), 1);
    // The tenth in 24 h: red, at once.
    actions(&ns, 9..10, "retry", true).await;
    eventually(30, "a red alert", || async {
        (slack.requests().len() == 2).then_some(())
    })
    .await;
    let texts = slack_texts(&slack.requests());
    assert_eq!(texts[0].0, "/warning");
    assert!(
        texts[0].1.contains("*Level:* YELLOW (3 retry actions"),
        "{}",
        texts[0].1
    );
    assert_eq!(texts[1].0, "/warning");
    assert!(
        texts[1].1.contains("*Level:* RED (10 retry actions"),
        "{}",
        texts[1].1
    );
    assert!(
        texts[1]
            .1
            .contains("FROM `nba_orchestration.healing_events`")
    );
    assert_eq!(
        texts[1]
            .1
            .matches("root cause `feature_store_timeout`")
            .count(),
        3
    );

    // Without a HealingPolicy the state lives in the controller's ConfigMap.
    let map = ns.api::<ConfigMap>().get(HEALTH_CONFIGMAP).await.unwrap();
    let stored: std::collections::BTreeMap<String, TypeHealth> =
        serde_json::from_str(&map.data.unwrap()["healingTypes"]).unwrap();
    assert_eq!(stored["retry"].alert.level, AlertLevel::Red);
    assert_eq!(events_with_reason(&ns, "PatternAlert").await, 2);

    // A restart re-evaluates every event and sends nothing again.
    drop(controller);
    let port = free_port();
    let _controller = start_controller(&ns, &slack, port);
    ready(port).await;
    settle().await;
    assert_eq!(
        slack.requests().len(),
        2,
        "{:?}",
        slack_texts(&slack.requests())
    );
}

#[tokio::test]
async fn failures_open_the_circuit_and_a_successful_trial_closes_it() {
    let ns = namespace("alerts-breaker").await;
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"},
        "spec": {"circuitBreaker": {"cooldown": "8s"}}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
    let slack = RecordingServer::start(200).await;
    let port = free_port();
    let _controller = start_controller(&ns, &slack, port);
    ready(port).await;
    let metrics_url = format!("http://127.0.0.1:{port}/metrics");
    let (code, before) = get(&metrics_url).await.expect("metrics");
    assert_eq!(code, 200);
    let before = samples(&before);

    // 3 of 5 batch_cleanup actions failed within the hour: critical, circuit open.
    actions(&ns, 0..3, "batch_cleanup", false).await;
    actions(&ns, 3..5, "batch_cleanup", true).await;
    let policies = ns.api::<HealingPolicy>();
    eventually(30, "the circuit opens", || async {
        let status = policies.get("default").await.ok()?.status?;
        (status.open_circuits == ["batch_cleanup"]).then_some(())
    })
    .await;
    let status = policies.get("default").await.unwrap().status.unwrap();
    assert_eq!(status.level, AlertLevel::Critical);
    let open = status
        .conditions
        .iter()
        .find(|c| c.type_ == "CircuitOpen")
        .unwrap();
    assert_eq!(open.status, "True");
    // Stored first, then sent: the message follows the status.
    eventually(10, "the critical alert", || async {
        (!slack.requests().is_empty()).then_some(())
    })
    .await;
    let texts = slack_texts(&slack.requests());
    assert_eq!(texts.len(), 1, "{texts:?}");
    assert_eq!(texts[0].0, "/error");
    assert!(
        texts[0]
            .1
            .contains("CRITICAL (3 of 5 batch_cleanup actions failed")
    );
    assert!(texts[0].1.contains("*Circuit breaker:* OPEN"));

    // A batch stalls while the circuit is open: recorded as skipped, left alone.
    let last = Timestamp::now() - jiff::SignedDuration::from_mins(20);
    batch(&ns, "b1", last).await;
    let healing = ns.api::<HealingEvent>();
    let skipped = eventually(20, "a skipped heal", || async {
        healing
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.spec.target.name == "b1"
                    && e.status.as_ref().and_then(|s| s.outcome) == Some(Outcome::Skipped)
            })
    })
    .await;
    assert_eq!(
        skipped.status.unwrap().message.as_deref(),
        Some("skipped: circuit_open")
    );
    let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
    assert_ne!(
        pb.status.and_then(|s| s.state),
        Some(BatchState::AutoCompleted)
    );

    // After the cooldown, one trial heal completes the batch and closes the circuit.
    eventually(40, "the trial heal completes the batch", || async {
        let pb = ns.api::<PredictionBatch>().get("b1").await.ok()?;
        (pb.status?.state == Some(BatchState::AutoCompleted)).then_some(())
    })
    .await;
    eventually(20, "the circuit closes", || async {
        let status = policies.get("default").await.ok()?.status?;
        let closed = status.open_circuits.is_empty()
            && status.healing_types.get("batch_cleanup")?.circuit.state == CircuitState::Closed;
        closed.then_some(())
    })
    .await;
    let b1_events: Vec<HealingEvent> = healing
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|e| e.spec.target.name == "b1")
        .collect();
    let outcomes: Vec<Option<Outcome>> = b1_events
        .iter()
        .map(|e| e.status.as_ref().and_then(|s| s.outcome))
        .collect();
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(
        outcomes.contains(&Some(Outcome::Skipped)) && outcomes.contains(&Some(Outcome::Succeeded))
    );
    assert_eq!(events_with_reason(&ns, "CircuitOpened").await, 1);
    assert_eq!(events_with_reason(&ns, "CircuitClosed").await, 1);

    // The metrics parse and moved: one heal succeeded; the circuit gauge is back to closed.
    let after = samples(&get(&metrics_url).await.expect("metrics").1);
    let healed =
        r#"pipeline_healer_healings_total{healing_type="batch_cleanup",result="Succeeded"}"#;
    assert_eq!(sample(&before, healed), None);
    assert_eq!(sample(&after, healed), Some(1.0));
    let circuit = format!(
        r#"pipeline_healer_circuit_state{{namespace="{}",healing_type="batch_cleanup"}}"#,
        ns.name
    );
    assert_eq!(sample(&after, &circuit), Some(0.0));
    let level = format!(
        r#"pipeline_healer_alert_level{{namespace="{}",healing_type="batch_cleanup"}}"#,
        ns.name
    );
    assert_eq!(sample(&after, &level), Some(3.0));
    assert!(
        sample(
            &after,
            r#"pipeline_healer_heal_latency_seconds_count{healing_type="batch_cleanup"}"#
        ) == Some(1.0)
    );
    assert!(
        sample(
            &after,
            r#"pipeline_healer_reconciles_total{kind="PredictionBatch"}"#
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert_eq!(
        sample(
            &after,
            r#"pipeline_healer_slack_messages_total{channel="error",result="sent"}"#
        ),
        Some(1.0)
    );
    // The events go to the Firestore emulator: a backlog figure for that sink, and no other.
    let backlog = |sink: &str| {
        let series = format!(
            r#"pipeline_healer_export_backlog{{namespace="{}",sink="{sink}"}}"#,
            ns.name
        );
        sample(&after, &series)
    };
    assert!(
        backlog("firestore").is_some_and(|n| n >= 0.0),
        "{:?}",
        backlog("firestore")
    );
    assert_eq!(backlog("bigquery"), None);
}
