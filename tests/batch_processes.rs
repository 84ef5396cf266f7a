//! The real binary, started twice against one cluster and one Firestore: two controller
//! processes (as two replicas without leader election would be) heal each batch once.

mod support;

use std::time::Duration;

use firestore::FirestoreDb;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use pipeline_healer::api::HealingEvent;
use serde_json::{Value, json};
use support::{ControllerProcess, firestore_db, namespace};

async fn document(db: &FirestoreDb, collection: &str, id: &str) -> Value {
    db.fluent()
        .select()
        .by_id_in(collection)
        .obj()
        .one(id)
        .await
        .unwrap()
        .unwrap_or_default()
}

#[tokio::test]
async fn two_controller_processes_heal_each_batch_once() {
    let ns = namespace("two-processes").await;
    let db = firestore_db().await;
    let collection = format!("batches_{}", ns.name.replace('-', "_"));
    let stalled_since = (Timestamp::now() - SignedDuration::from_mins(20)).to_string();
    let created = (Timestamp::now() - SignedDuration::from_hours(1)).to_string();
    let ids: Vec<String> = (0..20)
        .map(|i| format!("batch_2026-11-24_17954800{i:02}"))
        .collect();
    for id in &ids {
        let body = json!({
            "batch_id": id, "game_date": "2026-11-24", "expected_players": 50,
            "completed_players": (0..46).map(|p| format!("player{p}")).collect::<Vec<_>>(),
            "is_complete": false, "created_at": created, "updated_at": stalled_since,
        });
        db.fluent()
            .update()
            .in_col(&collection)
            .document_id(id)
            .object(&body)
            .execute::<Value>()
            .await
            .unwrap();
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

    let events = ns
        .api::<HealingEvent>()
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
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
