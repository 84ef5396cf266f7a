//! Recording a healing action from Rust, as a worker, a fallback or a circuit breaker would:
//! create the HealingEvent first (its name is the healing id, so a retry of this code finds
//! the existing event instead of recording twice), act, then record the outcome on the
//! status. The controller exports it to Firestore and BigQuery.
//!
//!     cargo run --example record_healing_event -- <namespace> <player>

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use pipeline_healer::api::event::TargetRef;
use pipeline_healer::api::{HealingEvent, HealingEventSpec};
use pipeline_healer::decide::naming::healing_id;
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    pipeline_healer::gcp::install_crypto_provider();
    let mut args = std::env::args().skip(1);
    let (Some(namespace), Some(player)) = (args.next(), args.next()) else {
        return Err("usage: record_healing_event <namespace> <player>".into());
    };
    let events: Api<HealingEvent> = Api::namespaced(kube::Client::try_default().await?, &namespace);

    // The id is derived from what is healed and which attempt this is: the same inputs give
    // the same id, whoever computes it.
    let id = healing_id("retry", &player, &["attempt-2"]);
    // When the problem began (the first attempt's start) and was noticed (its timeout): the
    // records' time to detect and time to heal run from these.
    let detected = Timestamp::now();
    let onset = detected - jiff::SignedDuration::from_secs(30);
    let spec = HealingEventSpec {
        healing_id: id.clone(),
        timestamp: MicroTime(detected),
        healing_type: "retry".into(),
        trigger_reason: format!("{player}: the feature store timed out after 30 s"),
        action_taken: "retried the prediction once".into(),
        root_cause: "feature_store_timeout".into(),
        correlation_id: None,
        target: TargetRef {
            api_version: None,
            kind: "Player".into(),
            namespace: None,
            name: player,
            uid: None,
        },
        dry_run: false,
        threshold_time: None,
        onset_time: Some(MicroTime(onset)),
        detected_time: Some(MicroTime(detected)),
        before_state: Some(json!({"attempt": 1})),
        details: None,
    };
    match events
        .create(&PostParams::default(), &HealingEvent::new(&id, spec))
        .await
    {
        Ok(_) => {}
        // Already recorded by an earlier run of this very action: do not act twice.
        Err(kube::Error::Api(e)) if e.code == 409 => {
            println!("{id} is already recorded");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    }

    // ... act here ...

    // The outcome makes the event final; only then is it exported. A success says when the
    // target was seen healthy, and the times that follow from it.
    let healed = Timestamp::now();
    let outcome = json!({"status": {
        "outcome": "Succeeded",
        "success": true,
        "afterState": {"attempt": 2},
        "finishedAt": healed,
        "healedTime": MicroTime(healed),
        "timeToDetectSeconds": 0.0,
        "timeToHealSeconds": healed.duration_since(onset).as_secs_f64(),
    }});
    events
        .patch_status(&id, &PatchParams::default(), &Patch::Merge(&outcome))
        .await?;
    println!("recorded {id}");
    Ok(())
}
