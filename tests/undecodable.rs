//! An object the controller cannot decode stops nothing else: on a real API server whose
//! PredictionBatch CRD lacks the integer bounds (applied by hand, or an older schema), a
//! worker reports a count above u32::MAX on one batch. The controller names it in a Warning
//! Event, stays up, and heals an ordinary stalled batch of the same namespace as usual.
//! (A binary of its own: it loosens the CRD of its control plane.)

mod support;

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use pipeline_healer::api::batch::BatchState;
use pipeline_healer::api::event::Outcome;
use pipeline_healer::api::{HealingPolicy, PredictionBatch};
use serde_json::{Value, json};
use support::status_batch::batch;
use support::{ControllerProcess, eventually, k8s_events, namespace};

/// Drops every `maximum` from a schema, as a CRD written before the bounds had none.
fn without_maxima(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            fields.remove("maximum");
            fields.values_mut().for_each(without_maxima);
        }
        Value::Array(items) => items.iter_mut().for_each(without_maxima),
        _ => {}
    }
}

/// Replaces the CRD `name` with one without its maxima.
async fn loosen(client: &kube::Client, name: &str) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crd = serde_json::to_value(crds.get(name).await.unwrap()).unwrap();
    without_maxima(&mut crd["spec"]);
    let crd = serde_json::from_value(crd).unwrap();
    crds.replace(name, &PostParams::default(), &crd)
        .await
        .expect("loosen the CRD");
}

/// `kubectl` in `namespace`, asserting success (this crate's types cannot hold what the
/// tests write).
fn kubectl(namespace: &str, args: &[&str]) -> String {
    let out = support::cluster()
        .kubectl()
        .args(["-n", namespace])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A batch's `status.state` as kubectl reads it.
fn kubectl_state(namespace: &str, name: &str) -> String {
    kubectl(
        namespace,
        &["get", "pb", name, "-o", "jsonpath={.status.state}"],
    )
}

/// The namespace's default HealingPolicy, with a stall threshold of 2 s.
async fn fast_policy(ns: &support::TestNamespace) {
    let policy: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"}, "spec": {"stallAfter": "2s"}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}

fn start_controller(ns: &support::TestNamespace) -> ControllerProcess {
    ControllerProcess::start_with(
        &ns.name,
        "undecodable",
        &["--batch-collection", &ns.own_name("batches")],
        &[],
    )
}

#[tokio::test]
async fn a_batch_that_cannot_be_decoded_is_named_and_stops_no_other_heal() {
    let ns = namespace("undecodable").await;
    loosen(&ns.client, "predictionbatches.healing.pipeline.dev").await;
    fast_policy(&ns).await;
    // The bad batch first, so that the controller's first list holds it.
    batch(&ns, "too-big", Timestamp::now()).await;
    // As a worker patches it; the loosened CRD admits the count.
    kubectl(
        &ns.name,
        &[
            "patch",
            "pb",
            "too-big",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"report":{"completed":4294967296}}}"#,
        ],
    );
    let mut controller = start_controller(&ns);

    // An ordinary batch that stalls after the controller started, and one before.
    batch(
        &ns,
        "ordinary",
        Timestamp::now() - SignedDuration::from_mins(20),
    )
    .await;
    batch(&ns, "later", Timestamp::now()).await;
    let batches = ns.api::<PredictionBatch>();
    for name in ["ordinary", "later"] {
        eventually(60, &format!("{name} healed"), || async {
            let pb = batches.get(name).await.ok()?;
            (pb.status?.state == Some(BatchState::AutoCompleted)).then_some(())
        })
        .await;
    }
    let warning = eventually(30, "the Undecodable Warning Event", || async {
        k8s_events(&ns, "Undecodable").await.into_iter().next()
    })
    .await;
    let note = warning.note.unwrap_or_default();
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(
        warning.regarding.and_then(|r| r.name).as_deref(),
        Some("too-big")
    );
    assert!(note.contains("status.report.completed"), "{note}");
    assert!(note.contains("4294967296"), "{note}");
    // The bad batch is left alone, and the controller is still running.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_ne!(kubectl_state(&ns.name, "too-big"), "AutoCompleted");
    assert!(
        controller.0.try_wait().unwrap().is_none(),
        "the controller exited"
    );
}

#[tokio::test]
async fn a_namespace_whose_policy_cannot_be_decoded_heals_in_dry_run_only() {
    let ns = namespace("undecodable-policy").await;
    loosen(&ns.client, "healingpolicies.healing.pipeline.dev").await;
    fast_policy(&ns).await;
    // A status this controller cannot read (as if another version had written it).
    kubectl(
        &ns.name,
        &[
            "patch",
            "hp",
            "default",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"healingTypes":{"batch_cleanup":{"counts":{"inYellowWindow":4294967296,"inRedWindow":0,"inCriticalWindow":0,"failedInCriticalWindow":0}}}}}"#,
        ],
    );
    let _controller = start_controller(&ns);
    batch(
        &ns,
        "stalled",
        Timestamp::now() - SignedDuration::from_mins(20),
    )
    .await;

    // Its policy might pause healing or ask for a dry run: the heal is recorded, not made.
    let event = eventually(60, "the heal recorded", || async {
        let event = support::healing_events(&ns).await.into_iter().next()?;
        event.status.as_ref()?.outcome?;
        Some(event)
    })
    .await;
    assert!(event.spec.dry_run, "{event:?}");
    assert_eq!(event.status.and_then(|s| s.outcome), Some(Outcome::Skipped));
    assert_ne!(kubectl_state(&ns.name, "stalled"), "AutoCompleted");
    let warning = eventually(30, "the Undecodable Warning Event", || async {
        k8s_events(&ns, "Undecodable").await.into_iter().next()
    })
    .await;
    let note = warning.note.unwrap_or_default();
    assert!(note.contains("status.healingTypes"), "{note}");
}
