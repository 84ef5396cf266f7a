//! Stalled-batch healing for `source: status` batches, on a real API server with the
//! controller running in-process (one or two instances, as replicas would).

mod support;

use std::time::Duration;

use jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use pipeline_healer::api::batch::BatchState;
use pipeline_healer::api::event::Outcome;
use pipeline_healer::api::{HealingEvent, HealingPolicy, PredictionBatch};
use pipeline_healer::controller::{self, Config, Context};
use pipeline_healer::decide::stall::{RecordedDecision, Stall, StallPolicy, Verdict};
use pipeline_healer::runtime::policies::PolicyCache;
use pipeline_healer::sink::consolidation::Consolidation;
use pipeline_healer::source::report::observe;
use pipeline_healer::telemetry::Telemetry;
use serde_json::json;
use support::http::RecordingServer;
use support::status_batch::{batch, report};
use support::{TestNamespace, eventually, healing_events, k8s_events, namespace};
use tokio::task::JoinHandle;

/// A policy with a short stall period, so tests cross it in seconds.
async fn policy(ns: &TestNamespace, stall_after: &str, dry_run: bool) {
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"},
        "spec": {"stallAfter": stall_after, "dryRun": dry_run}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
}

/// The default policy and the stall it finds in `batch` now.
/// The decision the reconciler makes on `batch` now (the built-in policy), and its stall.
fn stalled(batch: &PredictionBatch) -> (RecordedDecision, Stall) {
    let decision = RecordedDecision {
        policy_name: None,
        policy: StallPolicy::from(&pipeline_healer::api::HealingPolicySpec::default()),
        observation: observe(batch).expect("reported"),
        at: Timestamp::now(),
    };
    match decision.verdict() {
        Verdict::Stalled(stall) => (decision, stall),
        other => panic!("not stalled: {other:?}"),
    }
}

fn start_controller(
    ns: &TestNamespace,
    instance: &str,
    abandoned_after: Duration,
) -> JoinHandle<()> {
    let config = Config {
        namespace: Some(ns.name.clone()),
        instance: Some(instance.into()),
        abandoned_heal_after: abandoned_after,
        ..Config::default()
    };
    run_controller(ns, config)
}

fn run_controller(ns: &TestNamespace, config: Config) -> JoinHandle<()> {
    let client = ns.client.clone();
    tokio::spawn(async move {
        controller::run(
            client,
            config,
            None,
            Telemetry::default(),
            std::future::pending(),
        )
        .await
        .unwrap();
    })
}

async fn state(ns: &TestNamespace, name: &str) -> Option<BatchState> {
    ns.api::<PredictionBatch>()
        .get(name)
        .await
        .unwrap()
        .status
        .and_then(|s| s.state)
}

#[tokio::test]
async fn a_stalled_batch_is_healed_at_the_threshold_and_recorded() {
    let ns = namespace("status-heal").await;
    policy(&ns, "3s", false).await;
    let last = Timestamp::now();
    batch(&ns, "b1", last).await;
    let _controller = start_controller(&ns, "replica-a", Duration::from_secs(30));

    // Before the threshold: progressing, with the instant it will stall.
    let pb = eventually(10, "the batch to be observed", || async {
        let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
        (pb.status.as_ref().and_then(|s| s.state) == Some(BatchState::Progressing)).then_some(pb)
    })
    .await;
    let status = pb.status.unwrap();
    assert_eq!(status.completion_percent, Some(90.0));
    // metav1.Time carries whole seconds on the wire.
    assert_eq!(
        status.stall_at.unwrap().0.as_second(),
        (last + jiff::SignedDuration::from_secs(3)).as_second()
    );
    assert!(
        healing_events(&ns).await.is_empty(),
        "healed before the threshold"
    );

    let event = eventually(20, "the heal", || async {
        healing_events(&ns)
            .await
            .into_iter()
            .find(|e| e.status.as_ref().and_then(|s| s.outcome) == Some(Outcome::Succeeded))
    })
    .await;
    assert_eq!(event.spec.healing_type, "batch_cleanup");
    assert_eq!(event.spec.root_cause, "feature_store_timeout");
    assert_eq!(event.spec.target.name, "b1");
    assert!(!event.spec.dry_run);
    assert_eq!(
        event.spec.before_state.as_ref().unwrap()["completed_players"],
        9
    );
    let latency = event.status.as_ref().unwrap().heal_latency_seconds.unwrap();
    println!("heal latency from the threshold instant: {latency:.3}s");
    assert!(latency >= 0.0);

    // The heal sets the state; the reconcile it triggers then writes the conditions.
    let pb = eventually(10, "AutoCompleted", || async {
        let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
        let status = pb.status.as_ref()?;
        let written = status.conditions.iter().any(|c| c.type_ == "AutoCompleted");
        (status.state == Some(BatchState::AutoCompleted) && written).then_some(pb)
    })
    .await;
    let status = pb.status.unwrap();
    assert_eq!(
        status.last_healing_event.as_deref(),
        Some(event.spec.healing_id.as_str())
    );
    let auto = status
        .conditions
        .iter()
        .find(|c| c.type_ == "AutoCompleted")
        .unwrap();
    assert_eq!(auto.status, "True");
    let notes = eventually(10, "the Kubernetes Event", || async {
        let e = k8s_events(&ns, "AutoCompleted").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert_eq!(notes.len(), 1);
    assert_eq!(healing_events(&ns).await.len(), 1);
}

#[tokio::test]
async fn a_completion_arriving_before_the_heal_wins() {
    let ns = namespace("status-late").await;
    let last = Timestamp::now() - jiff::SignedDuration::from_mins(20);
    let observed = batch(&ns, "b1", last).await;
    // The controller decided on `observed`...
    let (decision, stall) = stalled(&observed);
    // ...and the last player finishes before the action runs.
    report(&ns, "b1", 10, Timestamp::now()).await;

    let ctx = Context::new(
        ns.client.clone(),
        Config::default(),
        PolicyCache::empty(),
        None,
    );
    let progress = controller::batch::heal(&ctx, &observed, &stall, &decision, false)
        .await
        .unwrap();
    assert_eq!(
        progress,
        controller::batch::HealProgress::Finished(Outcome::Superseded)
    );

    let events = healing_events(&ns).await;
    assert_eq!(events.len(), 1);
    let status = events[0].status.as_ref().unwrap();
    assert_eq!(status.outcome, Some(Outcome::Superseded));
    assert_eq!(status.success, Some(false));
    let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
    assert_ne!(
        pb.status.as_ref().and_then(|s| s.state),
        Some(BatchState::AutoCompleted)
    );
    assert!(pb.status.unwrap().last_healing_event.is_none());
    assert_eq!(k8s_events(&ns, "HealSuperseded").await.len(), 1);
}

#[tokio::test]
async fn a_restart_between_intent_and_action_heals_once() {
    let ns = namespace("status-restart").await;
    let last = Timestamp::now() - jiff::SignedDuration::from_mins(20);
    let observed = batch(&ns, "b1", last).await;
    // A previous instance recorded its intent and died before acting.
    let (decision, stall) = stalled(&observed);
    let intent = pipeline_healer::decide::heal::intent(
        &observed,
        &stall,
        &decision,
        pipeline_healer::decide::heal::Recording::Act,
        1,
    );
    ns.api::<HealingEvent>()
        .create(&PostParams::default(), &intent)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let _controller = start_controller(&ns, "restarted", Duration::from_secs(1));
    eventually(20, "AutoCompleted", || async {
        (state(&ns, "b1").await == Some(BatchState::AutoCompleted)).then_some(())
    })
    .await;
    let events = healing_events(&ns).await;
    assert_eq!(
        events.len(),
        1,
        "healed again instead of carrying the recorded heal through"
    );
    assert_eq!(events[0].metadata.name, intent.metadata.name);
    eventually(10, "the outcome", || async {
        let e = healing_events(&ns).await;
        (e[0].status.as_ref().and_then(|s| s.outcome) == Some(Outcome::Succeeded)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_controllers_heal_once() {
    let ns = namespace("status-two").await;
    policy(&ns, "2s", false).await;
    let _a = start_controller(&ns, "replica-a", Duration::from_secs(30));
    let _b = start_controller(&ns, "replica-b", Duration::from_secs(30));
    for name in ["b1", "b2", "b3"] {
        batch(&ns, name, Timestamp::now()).await;
    }
    // Seconds of margin: CI shares two cores between the API server and seven tests.
    let deadline = std::time::Instant::now() + Duration::from_secs(45);
    for name in ["b1", "b2", "b3"] {
        while state(&ns, name).await != Some(BatchState::AutoCompleted) {
            if std::time::Instant::now() > deadline {
                // Say what the replicas did, so a failure here can be diagnosed.
                let events: Vec<_> = healing_events(&ns)
                    .await
                    .into_iter()
                    .map(|e| (e.metadata.name, e.status))
                    .collect();
                let batch = ns.api::<PredictionBatch>().get(name).await.unwrap();
                panic!(
                    "{name} not AutoCompleted: {:#?}\nevents: {events:#?}",
                    batch.status
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Give a slower replica time to do anything it was going to do twice.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = healing_events(&ns).await;
    assert_eq!(
        events.len(),
        3,
        "{:#?}",
        events.iter().map(|e| &e.metadata.name).collect::<Vec<_>>()
    );
    assert!(
        events
            .iter()
            .all(|e| e.status.as_ref().and_then(|s| s.outcome) == Some(Outcome::Succeeded))
    );
    assert_eq!(k8s_events(&ns, "AutoCompleted").await.len(), 3);
}

#[tokio::test]
async fn dry_run_records_and_changes_nothing() {
    let ns = namespace("status-dry").await;
    policy(&ns, "2s", true).await;
    batch(&ns, "b1", Timestamp::now()).await;
    let _controller = start_controller(&ns, "replica-a", Duration::from_secs(30));
    let event = eventually(20, "the dry-run event", || async {
        healing_events(&ns)
            .await
            .into_iter()
            .find(|e| e.status.as_ref().and_then(|s| s.outcome).is_some())
    })
    .await;
    assert!(event.spec.dry_run);
    assert_eq!(
        event.status.as_ref().unwrap().outcome,
        Some(Outcome::Skipped)
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
    let status = pb.status.unwrap();
    assert_eq!(status.state, Some(BatchState::Stalled));
    assert!(status.last_healing_event.is_none());
    assert_eq!(
        status.report.unwrap().completed,
        9,
        "the workers' report was touched"
    );
    assert_eq!(
        healing_events(&ns).await.len(),
        1,
        "dry-run recorded more than once"
    );
}

#[tokio::test]
async fn a_change_that_is_not_progress_does_not_supersede_the_heal() {
    let ns = namespace("status-noise").await;
    let last = Timestamp::now() - jiff::SignedDuration::from_mins(20);
    let observed = batch(&ns, "b1", last).await;
    let (decision, stall) = stalled(&observed);
    // Someone labels the batch (and so bumps its resourceVersion) before the action.
    let label = json!({"metadata": {"labels": {"team": "predictions"}}});
    ns.api::<PredictionBatch>()
        .patch("b1", &PatchParams::default(), &Patch::Merge(&label))
        .await
        .unwrap();

    let ctx = Context::new(
        ns.client.clone(),
        Config::default(),
        PolicyCache::empty(),
        None,
    );
    let progress = controller::batch::heal(&ctx, &observed, &stall, &decision, false)
        .await
        .unwrap();
    assert_eq!(
        progress,
        controller::batch::HealProgress::Finished(Outcome::Succeeded)
    );
    assert_eq!(state(&ns, "b1").await, Some(BatchState::AutoCompleted));
}

#[tokio::test]
async fn an_auto_completed_batch_is_sent_for_consolidation() {
    let ns = namespace("status-consolidate").await;
    policy(&ns, "2s", false).await;
    let pipeline = RecordingServer::start(200).await;
    let config = Config {
        namespace: Some(ns.name.clone()),
        consolidation: Some(Consolidation::new(format!(
            "{}/consolidate?batch={{batch_id}}",
            pipeline.url
        ))),
        ..Default::default()
    };
    let _controller = run_controller(&ns, config);
    batch(&ns, "b1", Timestamp::now()).await;
    let event = eventually(20, "the heal", || async {
        healing_events(&ns)
            .await
            .into_iter()
            .find(|e| e.status.as_ref().and_then(|s| s.outcome) == Some(Outcome::Succeeded))
    })
    .await;
    let calls = pipeline.requests();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].path, "/consolidate?batch=batch_2026-11-24_b1");
    assert_eq!(
        calls[0].header("x-healing-id"),
        Some(event.spec.healing_id.as_str())
    );
    let body = calls[0].json();
    assert_eq!(body["batch_id"], "batch_2026-11-24_b1");
    assert_eq!(body["game_date"], "2026-11-24");
    assert_eq!(body["healing_id"], event.spec.healing_id.as_str());
    let after = event.status.unwrap().after_state.unwrap();
    assert_eq!(after["consolidation"]["status"], 200);

    // A consolidation endpoint that fails does not undo the heal; it is reported.
    pipeline.answer_with(503);
    batch(&ns, "b2", Timestamp::now()).await;
    eventually(30, "the second heal", || async {
        (state(&ns, "b2").await == Some(BatchState::AutoCompleted)).then_some(())
    })
    .await;
    let failed = eventually(20, "the ConsolidationFailed event", || async {
        let e = k8s_events(&ns, "ConsolidationFailed").await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    assert!(
        failed[0]
            .note
            .as_deref()
            .unwrap_or_default()
            .contains("503"),
        "{:?}",
        failed[0].note
    );
    assert_eq!(
        pipeline.requests().len(),
        1 + 3,
        "one call, then three tries"
    );
}

/// A controller that starts decides with the namespace's policy, never with the defaults
/// before the policy cache has synced: with the defaults (15 minutes) this batch, 20 minutes
/// without progress, would be healed at once; its policy allows an hour.
#[tokio::test]
async fn a_starting_controller_decides_with_the_namespace_policy_not_the_defaults() {
    let ns = namespace("status-policy-first").await;
    policy(&ns, "1h", false).await;
    let last = Timestamp::now() - jiff::SignedDuration::from_mins(20);
    batch(&ns, "b1", last).await;
    let _controller = start_controller(&ns, "replica-a", Duration::from_secs(30));

    let status = eventually(10, "the batch to be observed", || async {
        let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
        pb.status.filter(|s| s.state.is_some())
    })
    .await;
    assert_eq!(status.state, Some(BatchState::Progressing));
    assert_eq!(
        status.stall_at.unwrap().0.as_second(),
        (last + jiff::SignedDuration::from_hours(1)).as_second()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        healing_events(&ns).await.is_empty(),
        "healed on the defaults"
    );
}

#[tokio::test]
async fn a_batch_that_pauses_past_watch_after_and_resumes_by_itself_is_a_self_recovery() {
    let ns = namespace("status-pause").await;
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"},
        "spec": {"stallAfter": "60s", "watchAfter": "2s"}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
    // To the microsecond, as the status carries it.
    let micros = || Timestamp::from_microsecond(Timestamp::now().as_microsecond()).unwrap();
    let last = micros();
    batch(&ns, "b1", last).await;
    let telemetry = Telemetry::default();
    let metrics = telemetry.metrics.clone();
    let config = Config {
        namespace: Some(ns.name.clone()),
        ..Config::default()
    };
    let client = ns.client.clone();
    let _controller = tokio::spawn(async move {
        controller::run(client, config, None, telemetry, std::future::pending())
            .await
            .unwrap();
    });

    // At watchAfter (not before: the batch is first seen progressing) it shows as paused.
    let paused = eventually(15, "the pause", || async {
        let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
        pb.status.and_then(|s| s.paused_since).map(|t| t.0)
    })
    .await;
    assert_eq!(paused, last, "the pause runs from the last progress");
    assert!(
        Timestamp::now() >= last + jiff::SignedDuration::from_secs(2),
        "paused before watchAfter"
    );

    // The last player finishes by itself, well before the stall.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let resumed = micros();
    report(&ns, "b1", 10, resumed).await;
    let status = eventually(15, "the self-recovery in the status", || async {
        let pb = ns.api::<PredictionBatch>().get("b1").await.unwrap();
        let status = pb.status?;
        (status.state == Some(BatchState::Complete) && status.pauses == 1).then_some(status)
    })
    .await;
    assert!(status.paused_since.is_none(), "the pause is closed");
    let longest = status.longest_pause.expect("the longest pause").as_span();
    let expected = resumed.duration_since(last);
    assert!(
        (longest - expected).abs() <= jiff::SignedDuration::from_millis(1),
        "longest pause {longest:?}, from the last progress to the one that ended it {expected:?}"
    );
    assert!(
        healing_events(&ns).await.is_empty(),
        "nothing was healed: it recovered by itself"
    );
    let rendered = metrics.render();
    let counter = format!(
        "pipeline_healer_self_recoveries_total{{namespace=\"{}\"}} 1",
        ns.name
    );
    assert!(rendered.contains(&counter), "{rendered}");
}
