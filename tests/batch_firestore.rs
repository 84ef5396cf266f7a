//! Firestore-sourced batches on a real API server and the Firestore emulator: documents are
//! mirrored from the listen stream, stalls are healed in the document under an update-time
//! precondition, and malformed documents show on their batch without stopping anything.

mod support;

use std::time::Duration;

use firestore::FirestoreDb;
use firestore::errors::FirestoreError;
use jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use pipeline_healer::api::batch::{
    BatchSource, BatchState, PredictionBatchSpec, PredictionBatchStatus,
};
use pipeline_healer::api::event::Outcome;
use pipeline_healer::api::{HealingPolicy, HealingPolicySpec, PredictionBatch};
use pipeline_healer::controller::{self, Config, Context, FirestoreSource};
use pipeline_healer::decide::naming::object_name_for_document;
use pipeline_healer::decide::stall::{RecordedDecision, StallPolicy, Verdict};
use pipeline_healer::runtime::policies::PolicyCache;
use pipeline_healer::sink::firestore_heal::{AutoCompletion, HealCommitter, HealWrite};
use pipeline_healer::source::firestore::MirrorConfig;
use pipeline_healer::source::firestore_doc::{fields_of, parse, proto_time};
use pipeline_healer::source::report::observe;
use pipeline_healer::telemetry::Telemetry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use support::firestore_batch::{doc, get, put};
use support::{TestNamespace, eventually, firestore_db, healing_events, namespace};

/// The document as Firestore has it (with its update time).
async fn raw_document(
    db: &FirestoreDb,
    collection: &str,
    id: &str,
) -> firestore::FirestoreDocument {
    db.fluent()
        .select()
        .by_id_in(collection)
        .one(id)
        .await
        .unwrap()
        .expect("document")
}

async fn stall_policy(ns: &TestNamespace, stall_after: &str) {
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"}, "spec": {"stallAfter": stall_after}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
}

fn start_controller(
    ns: &TestNamespace,
    db: FirestoreDb,
    collection: &str,
) -> tokio::task::JoinHandle<()> {
    let config = Config {
        namespace: Some(ns.name.clone()),
        instance: Some("test".into()),
        ..Default::default()
    };
    let source = FirestoreSource {
        db,
        mirror: MirrorConfig {
            collection: collection.into(),
            namespace: ns.name.clone(),
        },
    };
    let client = ns.client.clone();
    tokio::spawn(async move {
        controller::run(
            client,
            config,
            Some(source),
            Telemetry::default(),
            std::future::pending(),
        )
        .await
        .unwrap();
    })
}

async fn batch(ns: &TestNamespace, doc_id: &str) -> Option<PredictionBatch> {
    ns.api::<PredictionBatch>()
        .get_opt(&object_name_for_document(doc_id))
        .await
        .unwrap()
}

async fn state(ns: &TestNamespace, doc_id: &str) -> Option<BatchState> {
    batch(ns, doc_id)
        .await
        .and_then(|b| b.status)
        .and_then(|s| s.state)
}

#[tokio::test]
async fn a_stalled_document_is_mirrored_healed_and_recorded() {
    let ns = namespace("fs-heal").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    stall_policy(&ns, "3s").await;
    let id = "batch_2026-11-24_1795480001";
    put(&db, &collection, id, &doc(id, 46, Timestamp::now())).await;
    let _controller = start_controller(&ns, db.clone(), &collection);

    let pb = eventually(20, "the mirrored batch", || async {
        batch(&ns, id)
            .await
            .filter(|b| b.status.as_ref().and_then(|s| s.state) == Some(BatchState::Progressing))
    })
    .await;
    assert_eq!(
        pb.metadata.name.as_deref(),
        Some("batch-2026-11-24-1795480001")
    );
    assert_eq!(
        pb.spec.document_path.as_deref(),
        Some(format!("{collection}/{id}").as_str())
    );
    assert_eq!(pb.spec.correlation_id.as_deref(), Some("7f3c2a1e"));
    assert_eq!(pb.status.unwrap().completion_percent, Some(92.0));

    let healed = eventually(20, "the heal in Firestore", || async {
        let d = get(&db, &collection, id).await;
        d.is_complete.then_some(d)
    })
    .await;
    assert_eq!(healed.auto_completed, Some(true));
    assert!(
        healed
            .auto_completion_reason
            .unwrap()
            .starts_with("Stalled at 92.0% for 0 minutes")
    );
    let events = healing_events(&ns).await;
    assert_eq!(events.len(), 1);
    assert_eq!(
        healed.auto_completion_healing_id.as_deref(),
        events[0].metadata.name.as_deref()
    );
    assert_eq!(events[0].spec.root_cause, "worker_failed");
    eventually(10, "AutoCompleted", || async {
        (state(&ns, id).await == Some(BatchState::AutoCompleted)).then_some(())
    })
    .await;
    let outcome = healing_events(&ns).await[0]
        .status
        .as_ref()
        .and_then(|s| s.outcome);
    assert_eq!(outcome, Some(Outcome::Succeeded));
}

#[tokio::test]
async fn a_completion_written_before_the_heal_wins() {
    let ns = namespace("fs-late").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    let id = "batch_2026-11-24_1795480002";
    put(
        &db,
        &collection,
        id,
        &doc(id, 46, Timestamp::now() - SignedDuration::from_mins(20)),
    )
    .await;
    // What the mirror observed: the document read and parsed as the mirror does.
    let raw = raw_document(&db, &collection, id).await;
    let parsed = parse(
        id,
        &fields_of(&raw),
        None,
        raw.update_time.as_ref().and_then(proto_time),
    )
    .unwrap();
    let mut observed = PredictionBatch::new(
        &object_name_for_document(id),
        PredictionBatchSpec {
            batch_id: id.into(),
            game_date: Some(parsed.game_date),
            source: BatchSource::Firestore,
            document_path: Some(format!("{collection}/{id}")),
            expected_players: None,
            correlation_id: None,
        },
    );
    observed.metadata.namespace = Some(ns.name.clone());
    observed.status = Some(PredictionBatchStatus {
        report: Some(parsed.report),
        ..Default::default()
    });
    let decision = RecordedDecision {
        policy_name: None,
        policy: StallPolicy::from(&HealingPolicySpec::default()),
        observation: observe(&observed).unwrap(),
        at: Timestamp::now(),
    };
    let Verdict::Stalled(stall) = decision.verdict() else {
        panic!("not stalled")
    };

    // The last players finish before the heal acts.
    put(&db, &collection, id, &doc(id, 50, Timestamp::now())).await;

    let ctx = Context::new(
        ns.client.clone(),
        Config::default(),
        PolicyCache::empty(),
        Some(db.clone()),
    );
    let progress = controller::batch::heal(&ctx, &observed, &stall, &decision, false)
        .await
        .unwrap();
    assert_eq!(
        progress,
        controller::batch::HealProgress::Finished(Outcome::Superseded)
    );
    let after = get(&db, &collection, id).await;
    assert!(
        !after.is_complete && after.auto_completed.is_none(),
        "the stale heal overwrote a completion"
    );
    assert_eq!(after.completed_players.len(), 50);
    let events = healing_events(&ns).await;
    assert_eq!(
        events[0].status.as_ref().and_then(|s| s.outcome),
        Some(Outcome::Superseded)
    );
}

#[tokio::test]
async fn malformed_documents_show_on_their_batch_and_stop_nothing() {
    let ns = namespace("fs-malformed").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    stall_policy(&ns, "3s").await;
    let now = Timestamp::now().to_string();
    let base = json!({"game_date": "2026-11-24", "expected_players": 50, "completed_players": ["a"], "is_complete": false, "created_at": now, "updated_at": now});
    let with = |edit: serde_json::Value| {
        let mut d = base.clone();
        for (k, v) in edit.as_object().unwrap() {
            if v.is_null() {
                d.as_object_mut().unwrap().remove(k);
            } else {
                d[k] = v.clone();
            }
        }
        d
    };
    let cases = [
        (
            "bad_missing_expected",
            with(json!({"expected_players": null})),
            "expected_players is missing",
        ),
        (
            "bad_expected_string",
            with(json!({"expected_players": "50"})),
            "expected_players must be an integer",
        ),
        (
            "bad_negative_expected",
            with(json!({"expected_players": -50})),
            "expected_players is -50",
        ),
        (
            "bad_negative_count",
            with(json!({"completed_players": null, "completed_count": -3})),
            "completed_count is -3",
        ),
        (
            "bad_players_string",
            with(json!({"completed_players": "a,b"})),
            "completed_players must be an array",
        ),
        (
            "bad_player_number",
            with(json!({"completed_players": ["a", 7]})),
            "completed_players[1] must be a string",
        ),
        (
            "bad_no_progress",
            with(json!({"completed_players": null})),
            "neither completed_players nor completed_count",
        ),
        (
            "bad_date",
            with(json!({"game_date": "24/11/2026"})),
            "game_date",
        ),
        (
            "bad_updated_at",
            with(json!({"updated_at": "yesterday"})),
            "updated_at \"yesterday\" is not a timestamp",
        ),
        (
            "bad_flag",
            with(json!({"is_complete": "no"})),
            "is_complete must be a boolean",
        ),
        (
            "bad_huge_expected",
            with(json!({"expected_players": 5_000_000})),
            "expected_players is 5000000",
        ),
    ];
    for (id, body, _) in &cases {
        put(&db, &collection, id, body).await;
    }
    // A healthy stalled batch among them is still healed.
    let good = "batch_2026-11-24_1795480003";
    put(&db, &collection, good, &doc(good, 46, Timestamp::now())).await;
    let _controller = start_controller(&ns, db.clone(), &collection);

    for (id, _, expect) in &cases {
        // Generous: CI once waited more than 20 s for the first of them, on a loaded machine.
        let pb = eventually(60, id, || async {
            batch(&ns, id)
                .await
                .filter(|b| b.status.as_ref().and_then(|s| s.state) == Some(BatchState::Invalid))
        })
        .await;
        let condition = pb
            .status
            .unwrap()
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Progressing")
            .unwrap();
        assert_eq!(condition.reason, "InvalidSource");
        assert!(
            condition.message.contains(expect),
            "{id}: {:?} does not say {expect:?}",
            condition.message
        );
    }
    eventually(20, "the healthy batch healed", || async {
        get(&db, &collection, good).await.is_complete.then_some(())
    })
    .await;

    // A document that is fixed reads again.
    put(&db, &collection, "bad_flag", &with(json!({}))).await;
    // (1 of 50 done and quiet for longer than the stall period: stalled below the minimum.)
    let fixed = eventually(20, "the fixed batch", || async {
        batch(&ns, "bad_flag")
            .await
            .filter(|b| b.status.as_ref().and_then(|s| s.state) == Some(BatchState::Stalled))
    })
    .await;
    assert!(fixed.status.unwrap().source_error.is_none());
}

#[tokio::test]
async fn a_counter_mode_document_is_healed_too() {
    let ns = namespace("fs-counter").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    stall_policy(&ns, "3s").await;
    let id = "batch_2026-11-24_1795480004";
    #[derive(Serialize, Deserialize)]
    struct CounterDoc {
        batch_id: String,
        game_date: String,
        expected_players: i64,
        completed_count: i64,
        is_complete: bool,
        #[serde(with = "firestore::serialize_as_timestamp")]
        created_at: Timestamp,
        #[serde(with = "firestore::serialize_as_timestamp")]
        last_updated: Timestamp,
    }
    let counter = CounterDoc {
        batch_id: id.into(),
        game_date: "2026-11-24".into(),
        expected_players: 40,
        completed_count: 38,
        is_complete: false,
        created_at: Timestamp::now() - SignedDuration::from_hours(2),
        last_updated: Timestamp::now(),
    };
    put(&db, &collection, id, &counter).await;
    let _controller = start_controller(&ns, db.clone(), &collection);
    eventually(20, "the heal", || async {
        get_value(&db, &collection, id).await["is_complete"]
            .as_bool()
            .filter(|c| *c)
    })
    .await;
    eventually(10, "AutoCompleted", || async {
        (state(&ns, id).await == Some(BatchState::AutoCompleted)).then_some(())
    })
    .await;
}

async fn get_value(db: &FirestoreDb, collection: &str, id: &str) -> serde_json::Value {
    support::firestore_batch::read(db, collection, id)
        .await
        .unwrap_or_default()
}

#[tokio::test]
async fn a_finished_mirrored_batch_is_removed_after_the_retention_period() {
    let ns = namespace("fs-retention").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    let hp: HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"}, "spec": {"stallAfter": "2s", "retention": "3s"}
    }))
    .unwrap();
    ns.api::<HealingPolicy>()
        .create(&PostParams::default(), &hp)
        .await
        .unwrap();
    let id = "batch_2026-11-24_1795480005";
    put(&db, &collection, id, &doc(id, 46, Timestamp::now())).await;
    let _controller = start_controller(&ns, db.clone(), &collection);

    let finished = eventually(20, "AutoCompleted", || async {
        batch(&ns, id)
            .await
            .and_then(|b| b.status)
            .filter(|s| s.state == Some(BatchState::AutoCompleted))
    })
    .await;
    let finished_at = finished.finished_at.expect("finishedAt is set").0;
    eventually(20, "the object's removal", || async {
        batch(&ns, id).await.is_none().then_some(())
    })
    .await;
    let removed_after = Timestamp::now().duration_since(finished_at);
    assert!(
        removed_after >= SignedDuration::from_secs(2),
        "removed {removed_after:?} after finishing"
    );

    // The document stays, and a later change to it (complete now) does not bring it back.
    let mut healed = get(&db, &collection, id).await;
    assert!(healed.is_complete);
    healed.correlation_id = "touched".into();
    put(&db, &collection, id, &healed).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        batch(&ns, id).await.is_none(),
        "a complete document was mirrored again"
    );
}

#[tokio::test]
async fn documents_waiting_for_the_mirror_namespace_are_not_lost() {
    let ns = namespace("fs-late-ns").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    let mirror_ns = format!("{}-mirror", ns.name);
    let id = "batch_2026-11-24_1795480006";
    // Already stalled (default policy: 15 minutes) before the controller starts.
    put(
        &db,
        &collection,
        id,
        &doc(id, 46, Timestamp::now() - SignedDuration::from_mins(20)),
    )
    .await;
    let config = Config {
        namespace: Some(mirror_ns.clone()),
        ..Default::default()
    };
    let source = FirestoreSource {
        db: db.clone(),
        mirror: MirrorConfig {
            collection: collection.clone(),
            namespace: mirror_ns.clone(),
        },
    };
    let client = ns.client.clone();
    let _controller = tokio::spawn(async move {
        controller::run(
            client,
            config,
            Some(source),
            Telemetry::default(),
            std::future::pending(),
        )
        .await
        .unwrap()
    });

    // The mirror namespace does not exist yet: mirroring fails and is retried.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> =
        kube::Api::all(ns.client.clone());
    let created: k8s_openapi::api::core::v1::Namespace =
        serde_json::from_value(json!({"metadata": {"name": mirror_ns}})).unwrap();
    namespaces
        .create(&PostParams::default(), &created)
        .await
        .unwrap();
    eventually(40, "the heal after the namespace appeared", || async {
        get(&db, &collection, id).await.is_complete.then_some(())
    })
    .await;
}

#[tokio::test]
async fn two_documents_mapping_to_one_name_do_not_overwrite_each_other() {
    let ns = namespace("fs-collide").await;
    let db = firestore_db().await;
    let collection = ns.own_name("batches");
    // `_` and `-` both map to `-`: one object name for two documents.
    let (a, b) = ("batch_2026-11-24_17", "batch-2026-11-24-17");
    assert_eq!(object_name_for_document(a), object_name_for_document(b));
    put(&db, &collection, a, &doc(a, 10, Timestamp::now())).await;
    put(&db, &collection, b, &doc(b, 40, Timestamp::now())).await;
    let _controller = start_controller(&ns, db.clone(), &collection);

    let mirrored = eventually(20, "the batch", || async {
        batch(&ns, a)
            .await
            .filter(|p| p.status.as_ref().is_some_and(|s| s.report.is_some()))
    })
    .await;
    // Both documents have been through the mirror by now (one listen snapshot); a later write
    // to the other one must not land on this object either.
    let path = mirrored.spec.document_path.clone().expect("document path");
    let (other, other_done) = if path.ends_with(a) { (b, 41) } else { (a, 11) };
    put(
        &db,
        &collection,
        other,
        &doc(other, other_done, Timestamp::now()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = batch(&ns, a).await.expect("the batch");
    assert_eq!(after.spec.document_path.as_deref(), Some(path.as_str()));
    let completed = after.status.and_then(|s| s.report).map(|r| r.completed);
    let own = if path.ends_with(a) { 10 } else { 40 };
    assert_eq!(completed, Some(own), "the other document's report landed");
}

/// Heals committed together (one atomic Commit) where one document changed meanwhile: that
/// Commit is refused as a whole, so each heal is committed again alone and gets its own
/// answer. The changed document keeps its late completion; every other heal is applied.
#[tokio::test]
async fn heals_committed_together_each_get_their_own_answer() {
    let db = firestore_db().await;
    let collection = format!("heals_{}", std::process::id());
    let stalled = Timestamp::now() - SignedDuration::from_mins(30);
    let ids: Vec<String> = (0..6).map(|i| format!("batch_2026-11-24_{i}")).collect();
    let mut versions = Vec::new();
    for id in &ids {
        put(&db, &collection, id, &doc(id, 46, stalled)).await;
        let written = raw_document(&db, &collection, id).await;
        versions.push(written.update_time.as_ref().and_then(proto_time).unwrap());
    }
    // A late completion of one batch after its version was observed.
    let late = &ids[3];
    let mut completed = doc(late, 50, Timestamp::now());
    completed.is_complete = true;
    put(&db, &collection, late, &completed).await;

    let committer = HealCommitter::start(db.clone(), None);
    let answers = futures::future::join_all(ids.iter().zip(&versions).map(|(id, version)| {
        committer.write(HealWrite {
            collection: collection.clone(),
            doc_id: id.clone(),
            version: *version,
            fields: AutoCompletion {
                is_complete: true,
                completion_time: Timestamp::now(),
                auto_completed: true,
                auto_completion_reason: "Stalled at 92.0% for 30 minutes".into(),
                auto_completion_healing_id: format!("heal-{id}"),
                updated_at: Timestamp::now(),
            },
        })
    }))
    .await;
    for (id, answer) in ids.iter().zip(&answers) {
        let stored = get(&db, &collection, id).await;
        if id == late {
            assert!(
                matches!(answer, Err(FirestoreError::DatabaseError(e)) if e.public.code == "FailedPrecondition"),
                "{answer:?}"
            );
            assert_eq!(stored.completed_players.len(), 50);
            assert_eq!(stored.auto_completion_healing_id, None);
        } else {
            assert!(answer.is_ok(), "{id}: {answer:?}");
            assert_eq!(
                stored.auto_completion_healing_id.as_deref(),
                Some(format!("heal-{id}").as_str())
            );
            assert!(stored.is_complete && stored.auto_completed == Some(true));
            // The update mask kept the rest of the document.
            assert_eq!(stored.completed_players.len(), 46);
        }
    }
}

/// While the mirror's listen stream is sending its snapshot, heals wait (the emulator
/// corrupts a stream whose snapshot a write interrupts); once the snapshot is read, the heals
/// that gathered are committed.
#[tokio::test]
async fn heals_wait_while_the_mirror_reads_its_snapshot() {
    let db = firestore_db().await;
    let collection = format!("gated_{}", std::process::id());
    let id = "batch_2026-11-24_gated";
    put(&db, &collection, id, &doc(id, 46, Timestamp::now())).await;
    let version = raw_document(&db, &collection, id)
        .await
        .update_time
        .as_ref()
        .and_then(proto_time)
        .unwrap();

    let (snapshot, snapshot_read) = tokio::sync::watch::channel(false);
    let committer = HealCommitter::start(db.clone(), Some(snapshot_read));
    let heal = HealWrite {
        collection: collection.clone(),
        doc_id: id.into(),
        version,
        fields: AutoCompletion {
            is_complete: true,
            completion_time: Timestamp::now(),
            auto_completed: true,
            auto_completion_reason: "Stalled at 92.0% for 30 minutes".into(),
            auto_completion_healing_id: "heal-gated".into(),
            updated_at: Timestamp::now(),
        },
    };
    let answer = tokio::spawn(async move { committer.write(heal).await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stored = get(&db, &collection, id).await;
    assert_eq!(
        stored.auto_completion_healing_id, None,
        "committed during the snapshot"
    );
    assert!(!answer.is_finished());

    snapshot.send_replace(true);
    let answer = tokio::time::timeout(Duration::from_secs(3), answer)
        .await
        .expect("the heal is committed once the snapshot is read")
        .expect("join");
    assert!(answer.is_ok(), "{answer:?}");
    let stored = get(&db, &collection, id).await;
    assert_eq!(
        stored.auto_completion_healing_id.as_deref(),
        Some("heal-gated")
    );
}
