//! The real binary against one cluster and one Firestore: two controller processes (as two
//! replicas without leader election would be) heal each batch once, and a heal that failed
//! while Firestore was unreachable is tried again.

mod support;

use std::time::Duration;

use firestore::FirestoreDb;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use pipeline_healer::api::event::Outcome;
use pipeline_healer::api::{HealingEvent, PredictionBatch};
use pipeline_healer::decide::naming::object_name_for_document;
use serde_json::{Value, json};
use support::proxy::TcpProxy;
use support::{ControllerProcess, emulators, eventually, firestore_db, healing_events, namespace};

async fn document(db: &FirestoreDb, collection: &str, id: &str) -> Value {
    support::firestore_batch::read(db, collection, id)
        .await
        .unwrap_or_default()
}

/// A batch document at 46 of 50 players, whose last progress was at `updated_at`.
async fn put_batch(db: &FirestoreDb, collection: &str, id: &str, updated_at: Timestamp) {
    let body = json!({
        "batch_id": id, "game_date": "2026-11-24", "expected_players": 50,
        "completed_players": (0..46).map(|p| format!("player{p}")).collect::<Vec<_>>(),
        "is_complete": false,
        "created_at": (Timestamp::now() - SignedDuration::from_hours(1)).to_string(),
        "updated_at": updated_at.to_string(),
    });
    db.fluent()
        .update()
        .in_col(collection)
        .document_id(id)
        .object(&body)
        .execute::<Value>()
        .await
        .unwrap();
}

#[tokio::test]
async fn two_controller_processes_heal_each_batch_once() {
    let ns = namespace("two-processes").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    let stalled_since = Timestamp::now() - SignedDuration::from_mins(20);
    let ids: Vec<String> = (0..20)
        .map(|i| format!("batch_2026-11-24_17954800{i:02}"))
        .collect();
    for id in &ids {
        put_batch(&db, &collection, id, stalled_since).await;
    }

    let _a = ControllerProcess::start(&ns.name, &collection, "replica-a");
    let _b = ControllerProcess::start(&ns.name, &collection, "replica-b");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut healed = 0;
        for id in &ids {
            if document(&db, &collection, id).await["is_complete"] == true {
                healed += 1;
            }
        }
        if healed == ids.len() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{healed} of {} healed",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Let both processes finish anything they were going to do twice.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let events = healing_events(&ns).await;
    assert_eq!(events.len(), ids.len(), "one healing record per batch");
    for id in &ids {
        let healed_by = document(&db, &collection, id).await["auto_completion_healing_id"]
            .as_str()
            .map(str::to_owned);
        let event = events
            .iter()
            .find(|e| e.metadata.name == healed_by)
            .unwrap_or_else(|| panic!("{id}: no event {healed_by:?}"));
        assert_eq!(event.spec.healing_type, "batch_cleanup");
        // Created without a field manager of its own (named by the user agent), its status
        // applied by the controller's writers: the outcome's and the exports'.
        let managers: Vec<_> = event
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|f| f.manager.as_deref())
            .collect();
        assert!(
            !managers.is_empty()
                && managers
                    .iter()
                    .all(|m| ["pipeline-healer", "pipeline-healer-export"].contains(m)),
            "{managers:?}"
        );
    }
    let notes: Api<K8sEvent> = Api::namespaced(ns.client.clone(), &ns.name);
    let auto_completed: i32 = notes
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some("AutoCompleted"))
        .map(|e| {
            e.deprecated_count
                .unwrap_or(1)
                .max(e.series.as_ref().map_or(1, |s| s.count))
        })
        .sum();
    assert_eq!(
        auto_completed,
        ids.len() as i32,
        "one AutoCompleted Event per batch"
    );
}

/// A heal whose write cannot reach Firestore is recorded as Failed, and the next attempt,
/// recorded under a healing id of its own, heals the batch once Firestore is back.
#[tokio::test]
async fn a_heal_that_failed_is_tried_again_under_a_new_id() {
    let ns = namespace("heal-retry").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    let id = "batch_2026-11-24_1795490001";
    // The default policy stalls a batch 15 minutes after its last progress: 8 s from now.
    let last_progress =
        Timestamp::now() - SignedDuration::from_mins(15) + SignedDuration::from_secs(8);
    put_batch(&db, &collection, id, last_progress).await;
    let firestore = TcpProxy::start(&emulators().firestore).await;
    let _controller = ControllerProcess::start_with(
        &ns.name,
        "retry",
        &["--batch-collection", collection.as_str()],
        &[("FIRESTORE_EMULATOR_HOST", firestore.host().as_str())],
    );
    let batches = ns.api::<PredictionBatch>();
    eventually(30, "the batch mirrored", || async {
        let batch = batches
            .get_opt(&object_name_for_document(id))
            .await
            .ok()??;
        batch.status?.report.map(|_| ())
    })
    .await;

    // Firestore goes away before the threshold: the heal cannot write.
    firestore.stop();
    let outcomes = || async {
        healing_events(&ns)
            .await
            .into_iter()
            .map(|e| {
                (
                    e.metadata.name.clone().unwrap(),
                    e.status.and_then(|s| s.outcome),
                )
            })
            .collect::<Vec<_>>()
    };
    let failed = eventually(30, "a failed heal", || async {
        outcomes()
            .await
            .into_iter()
            .find(|(_, o)| *o == Some(Outcome::Failed))
            .map(|(name, _)| name)
    })
    .await;
    firestore.resume().await;

    eventually(60, "the batch healed", || async {
        (document(&db, &collection, id).await["is_complete"] == true).then_some(())
    })
    .await;
    let healed_by = document(&db, &collection, id).await["auto_completion_healing_id"]
        .as_str()
        .map(str::to_owned);
    // The outcome is recorded after the document's write.
    let all = eventually(30, "the second attempt's outcome", || async {
        let all = outcomes().await;
        all.iter()
            .any(|(_, o)| *o == Some(Outcome::Succeeded))
            .then_some(all)
    })
    .await;
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.contains(&(failed.clone(), Some(Outcome::Failed))),
        "{all:?}"
    );
    let succeeded = all
        .iter()
        .find(|(_, o)| *o == Some(Outcome::Succeeded))
        .map(|(name, _)| name.clone());
    assert!(succeeded.is_some() && succeeded != Some(failed), "{all:?}");
    assert_eq!(healed_by, succeeded);
    let second = ns
        .api::<HealingEvent>()
        .get(&healed_by.unwrap())
        .await
        .unwrap();
    assert_eq!(second.spec.details.unwrap()["attempt"], 2);
}
