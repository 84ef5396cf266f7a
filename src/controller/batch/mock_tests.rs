//! The heal's branches against a mocked API server (kube's client over a `tower-test` pair),
//! without a cluster: each test scripts the requests the heal must make, in order, answers
//! them, and checks what was written. The real-API-server tests in `tests/` drive the same
//! paths end to end; these pin each branch's exact conversation.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Client;
use kube::client::Body;
use kube::runtime::reflector;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::heal::{HealProgress, heal};
use crate::api::PredictionBatch;
use crate::api::event::Outcome;
use crate::controller::health::HEALTH_CONFIGMAP;
use crate::controller::{Config, Context};
use crate::decide::heal::{Recording, healing_id_of};
use crate::decide::stall::{RecordedDecision, Stall, StallPolicy, Verdict};
use crate::runtime::policies::PolicyCache;
use crate::source::report::observe;

const NS: &str = "pipeline";
const EVENTS: &str = "/apis/healing.pipeline.dev/v1alpha1/namespaces/pipeline/healingevents";
const BATCH_STATUS: &str =
    "/apis/healing.pipeline.dev/v1alpha1/namespaces/pipeline/predictionbatches/b1/status";
const BATCH: &str = "/apis/healing.pipeline.dev/v1alpha1/namespaces/pipeline/predictionbatches/b1";
const K8S_EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/pipeline/events";

/// The mocked API server's side: requests in the order they come.
struct ApiServer(tower_test::mock::Handle<Request<Body>, Response<Body>>);

/// A request as the script checks it.
struct Seen {
    query: String,
    body: Value,
}

impl ApiServer {
    /// Takes the next request, which must be `method` on `path`, and answers `status` with
    /// `answer` (None: the request's own body, as a create or an apply returns the object).
    async fn answer(
        &mut self,
        method: Method,
        path: &str,
        status: u16,
        answer: Option<Value>,
    ) -> Seen {
        let (request, respond) =
            tokio::time::timeout(Duration::from_secs(5), self.0.next_request())
                .await
                .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
                .unwrap_or_else(|| panic!("the client went away; expected {method} {path}"));
        assert_eq!(
            (request.method(), request.uri().path()),
            (&method, path),
            "the heal's requests are out of order"
        );
        let query = request.uri().query().unwrap_or_default().to_owned();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        let reply = answer.unwrap_or_else(|| body.clone());
        respond.send_response(
            Response::builder()
                .status(status)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        Seen { query, body }
    }

    /// The heal's intent: a HealingEvent created (201); its name.
    async fn intent(&mut self) -> (String, Seen) {
        let intent = self.answer(Method::POST, EVENTS, 201, None).await;
        let id = intent.body["metadata"]["name"].as_str().unwrap().to_owned();
        (id, intent)
    }

    /// The outcome applied to the event `id` (answered with the event); its status.
    async fn outcome(&mut self, id: &str, event: &Seen) -> Value {
        let path = format!("{EVENTS}/{id}/status");
        let outcome = self
            .answer(Method::PATCH, &path, 200, Some(event.body.clone()))
            .await;
        assert!(
            outcome.query.contains("fieldManager=pipeline-healer"),
            "{}",
            outcome.query
        );
        outcome.body["status"].clone()
    }

    /// The Kubernetes Event that tells it; its reason.
    async fn told(&mut self) -> String {
        let told = self.answer(Method::POST, K8S_EVENTS, 201, None).await;
        told.body["reason"].as_str().unwrap_or_default().to_owned()
    }

    /// No request beyond the script: once the client is dropped, the handle sees the end.
    async fn expect_no_more(mut self) {
        let next = tokio::time::timeout(Duration::from_secs(5), self.0.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected request {} {}", request.method(), request.uri());
        }
    }
}

fn failure(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason,
           "code": code, "message": format!("{reason} (mocked)")})
}

/// A `source: status` batch, 46 of 50 done, last progress 20 minutes ago: stalled.
fn stalled_batch(last_progress: Timestamp) -> PredictionBatch {
    serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
        "metadata": {"name": "b1", "namespace": NS, "uid": "u-1", "resourceVersion": "7",
                     "creationTimestamp": (last_progress - jiff::SignedDuration::from_hours(1)).to_string()},
        "spec": {"batchId": "batch_1", "gameDate": "2026-11-24", "source": "status",
                 "expectedPlayers": 50},
        "status": {"report": {"completed": 46, "lastProgressTime": last_progress.to_string(),
                              "failing": {"feature_store_timeout": 4}}},
    }))
    .unwrap()
}

struct Fixture {
    ctx: Arc<Context>,
    server: ApiServer,
    batch: PredictionBatch,
    stall: Stall,
    decision: RecordedDecision,
}

fn fixture() -> Fixture {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let ctx = Context::new(client, Config::default(), PolicyCache::empty(), None);
    let batch = stalled_batch(Timestamp::now() - jiff::SignedDuration::from_mins(20));
    let decision = RecordedDecision {
        policy_name: None,
        policy: StallPolicy::from(&crate::api::HealingPolicySpec::default()),
        observation: observe(&batch).expect("the fixture batch is reported"),
        at: Timestamp::now(),
    };
    let Verdict::Stalled(stall) = decision.verdict() else {
        panic!("the fixture batch is not stalled");
    };
    Fixture {
        ctx: Arc::new(ctx),
        server: ApiServer(handle),
        batch,
        stall,
        decision,
    }
}

/// Runs the heal against the script `server_side`, which answers its requests in order.
async fn run<F, Fut>(
    fixture: Fixture,
    dry_run: bool,
    server_side: F,
) -> Result<HealProgress, crate::Error>
where
    F: FnOnce(ApiServer) -> Fut + Send + 'static,
    Fut: Future<Output = ApiServer> + Send,
{
    let Fixture {
        ctx,
        server,
        batch,
        stall,
        decision,
    } = fixture;
    let script = tokio::spawn(async move { server_side(server).await });
    let result = heal(&ctx, &batch, &stall, &decision, dry_run).await;
    drop(ctx);
    script.await.expect("the script").expect_no_more().await;
    result
}

#[tokio::test]
async fn a_heal_that_applies_records_success_and_tells_it() {
    let fixture = fixture();
    let batch = serde_json::to_value(&fixture.batch).unwrap();
    let progress = run(fixture, false, |mut server| async move {
        let (id, intent) = server.intent().await;
        assert_eq!(intent.body["spec"]["rootCause"], "feature_store_timeout");
        assert_eq!(intent.body["spec"]["dryRun"], false);
        let completion = server
            .answer(Method::PATCH, BATCH_STATUS, 200, Some(batch.clone()))
            .await;
        assert!(
            completion
                .query
                .contains("fieldManager=pipeline-healer-heal"),
            "{}",
            completion.query
        );
        assert_eq!(
            completion.body["metadata"]["resourceVersion"], "7",
            "conditional on the version decided on"
        );
        assert_eq!(
            completion.body["status"],
            json!({"state": "AutoCompleted", "lastHealingEvent": id})
        );
        let verifying = server.outcome(&id, &intent).await;
        assert_eq!(verifying["outcome"], "Verifying");
        assert_eq!(verifying["afterState"]["is_complete"], true);
        assert!(verifying["verifyBy"].is_string(), "{verifying}");
        // Verified by reading the batch back, not by the write's answer.
        server
            .answer(Method::GET, BATCH, 200, Some(healed(&batch, &id)))
            .await;
        let outcome = server.outcome(&id, &intent).await;
        assert_eq!(outcome["outcome"], "Succeeded");
        assert!(outcome["healedTime"].is_string(), "{outcome}");
        assert!(outcome["timeToHealSeconds"].as_f64().unwrap() >= 1200.0);
        // The fixture stalled 5 minutes before this heal saw it.
        let late = outcome["timeToDetectSeconds"].as_f64().unwrap();
        assert!((299.0..301.0).contains(&late), "{late}");
        assert_eq!(server.told().await, "AutoCompleted");
        server
    })
    .await
    .unwrap();
    assert_eq!(progress, HealProgress::Finished(Outcome::Succeeded));
}

/// `batch` as the heal `id` leaves it: auto-completed, naming the heal.
fn healed(batch: &Value, id: &str) -> Value {
    let mut healed = batch.clone();
    healed["status"]["state"] = json!("AutoCompleted");
    healed["status"]["lastHealingEvent"] = json!(id);
    healed
}

#[tokio::test]
async fn a_heal_whose_batch_reads_back_without_it_did_not_hold() {
    let fixture = fixture();
    let batch = serde_json::to_value(&fixture.batch).unwrap();
    let progress = run(fixture, false, |mut server| async move {
        let (id, intent) = server.intent().await;
        server
            .answer(Method::PATCH, BATCH_STATUS, 200, Some(batch.clone()))
            .await;
        assert_eq!(server.outcome(&id, &intent).await["outcome"], "Verifying");
        let mut overwritten = healed(&batch, "another-heal");
        overwritten["status"]["state"] = json!("Progressing");
        server
            .answer(Method::GET, BATCH, 200, Some(overwritten))
            .await;
        let outcome = server.outcome(&id, &intent).await;
        assert_eq!(outcome["outcome"], "Superseded");
        assert_eq!(outcome.get("healedTime"), None);
        assert_eq!(server.told().await, "HealSuperseded");
        server
    })
    .await
    .unwrap();
    assert_eq!(progress, HealProgress::Finished(Outcome::Superseded));
}

#[tokio::test]
async fn a_heal_whose_read_back_fails_stays_verifying_for_the_outbox() {
    let fixture = fixture();
    let batch = serde_json::to_value(&fixture.batch).unwrap();
    let progress = run(fixture, false, |mut server| async move {
        let (id, intent) = server.intent().await;
        server
            .answer(Method::PATCH, BATCH_STATUS, 200, Some(batch))
            .await;
        assert_eq!(server.outcome(&id, &intent).await["outcome"], "Verifying");
        let unavailable = Some(failure(503, "ServiceUnavailable"));
        server.answer(Method::GET, BATCH, 503, unavailable).await;
        server
    })
    .await
    .unwrap();
    assert_eq!(progress, HealProgress::Finished(Outcome::Verifying));
}

#[tokio::test]
async fn a_late_completion_supersedes_the_heal_and_nothing_is_overwritten() {
    let fixture = fixture();
    let mut completed = serde_json::to_value(&fixture.batch).unwrap();
    completed["metadata"]["resourceVersion"] = json!("8");
    completed["status"]["report"]["completed"] = json!(50);
    let progress = run(fixture, false, |mut server| async move {
        let (id, intent) = server.intent().await;
        // The workers finished the batch first: the conditional write conflicts.
        let conflict = Some(failure(409, "Conflict"));
        server
            .answer(Method::PATCH, BATCH_STATUS, 409, conflict)
            .await;
        server
            .answer(Method::GET, BATCH, 200, Some(completed))
            .await;
        let outcome = server.outcome(&id, &intent).await;
        assert_eq!(
            (&outcome["outcome"], &outcome["success"]),
            (&json!("Superseded"), &json!(false))
        );
        assert_eq!(server.told().await, "HealSuperseded");
        server
    })
    .await
    .unwrap();
    assert_eq!(progress, HealProgress::Finished(Outcome::Superseded));
}

#[tokio::test]
async fn a_failed_action_is_recorded_failed_and_the_error_is_retried() {
    let fixture = fixture();
    let result = run(fixture, false, |mut server| async move {
        let (id, intent) = server.intent().await;
        let unavailable = Some(failure(503, "ServiceUnavailable"));
        server
            .answer(Method::PATCH, BATCH_STATUS, 503, unavailable)
            .await;
        let outcome = server.outcome(&id, &intent).await;
        assert_eq!(outcome["outcome"], "Failed");
        let message = outcome["message"].as_str().unwrap();
        assert!(
            message.starts_with("completing the batch failed: completing the batch"),
            "{message}"
        );
        assert_eq!(server.told().await, "HealFailed");
        server
    })
    .await;
    let error = result.unwrap_err();
    assert!(error.is_transient(), "{error}");
}

#[tokio::test]
async fn a_dry_run_records_what_it_would_do_and_changes_nothing() {
    let fixture = fixture();
    // A dry-run has an id of its own, so the heal that follows is not taken for done.
    let dry_id = healing_id_of(&fixture.batch, &fixture.stall, Recording::DryRun, 1);
    assert_ne!(
        dry_id,
        healing_id_of(&fixture.batch, &fixture.stall, Recording::Act, 1)
    );
    let progress = run(fixture, true, |mut server| async move {
        let (id, intent) = server.intent().await;
        assert_eq!(
            (id.as_str(), &intent.body["spec"]["dryRun"]),
            (dry_id.as_str(), &json!(true))
        );
        let outcome = server.outcome(&id, &intent).await;
        assert_eq!(outcome["outcome"], "Skipped");
        assert_eq!(outcome["message"], "dry-run: nothing changed");
        // No write to the batch, and no Kubernetes Event.
        server
    })
    .await
    .unwrap();
    assert_eq!(progress, HealProgress::Finished(Outcome::Skipped));
}

#[tokio::test]
async fn an_open_circuit_skips_the_heal_until_its_cooldown_ends() {
    let mut fixture = fixture();
    // The namespace's stored health (it has no HealingPolicy): the circuit opened a minute ago.
    let opened = Timestamp::from_second(Timestamp::now().as_second() - 60).unwrap();
    let health = json!({"batch_cleanup": {"level": "Critical", "circuit": {"state": "Open", "since": opened.to_string()}}});
    let map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": HEALTH_CONFIGMAP, "namespace": NS},
        "data": {"healingTypes": health.to_string()},
    }))
    .unwrap();
    let (store, mut writer) = reflector::store::<ConfigMap>();
    writer.apply_watcher_event(&watcher::Event::Apply(map));
    let ctx = Arc::get_mut(&mut fixture.ctx).expect("one owner");
    ctx.health_maps = store;
    let progress = run(fixture, false, |mut server| async move {
        let (id, intent) = server.intent().await;
        let action = &intent.body["spec"]["actionTaken"];
        assert_eq!(
            action,
            "Skipped: circuit_open; the batch was left as it was"
        );
        assert_eq!(server.outcome(&id, &intent).await["outcome"], "Skipped");
        assert_eq!(server.told().await, "HealSkipped");
        server
    })
    .await
    .unwrap();
    let cooldown = crate::api::HealingPolicySpec::default()
        .circuit_breaker
        .cooldown
        .as_span();
    assert_eq!(
        progress,
        HealProgress::Skipped {
            until: Some(opened.checked_add(cooldown).unwrap())
        }
    );
}

#[tokio::test]
async fn an_intent_recorded_by_another_live_actor_is_left_to_it() {
    let fixture = fixture();
    let progress = run(fixture, false, |mut server| async move {
        let intent = server
            .answer(
                Method::POST,
                EVENTS,
                409,
                Some(failure(409, "AlreadyExists")),
            )
            .await;
        let id = intent.body["metadata"]["name"].as_str().unwrap().to_owned();
        // Created a moment ago, still Pending: its actor is at work.
        let mut existing = intent.body.clone();
        existing["metadata"]["creationTimestamp"] = json!(Timestamp::now().to_string());
        server
            .answer(Method::GET, &format!("{EVENTS}/{id}"), 200, Some(existing))
            .await;
        server
    })
    .await
    .unwrap();
    assert_eq!(progress, HealProgress::InProgressElsewhere);
}
