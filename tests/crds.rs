//! The CRDs on a real kube-apiserver: served, the examples round-trip through the API and the
//! Rust types unchanged, and invalid objects are refused on admission naming the field.

mod support;

use kube::CustomResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use pipeline_healer::api::{HealingEvent, HealingPolicy, PhaseRun, PredictionBatch};
use serde::Deserialize;
use serde_json::{Value, json};
use support::{TestNamespace, namespace, project_root};

#[test]
fn committed_crds_match_the_code() {
    let stale = pipeline_healer::crdgen::stale(&project_root().join("crds")).unwrap();
    assert!(
        stale.is_empty(),
        "out of date in crds/ (run `pipeline-healer crds`): {stale:?}"
    );
}

fn api_resource(kind: &str) -> ApiResource {
    match kind {
        "PredictionBatch" => PredictionBatch::api_resource(),
        "PhaseRun" => PhaseRun::api_resource(),
        "HealingEvent" => HealingEvent::api_resource(),
        "HealingPolicy" => HealingPolicy::api_resource(),
        other => panic!("unexpected kind {other}"),
    }
}

fn dynamic_api(ns: &TestNamespace, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(ns.client.clone(), &ns.name, &api_resource(kind))
}

/// Every document of every file in examples/, with its file name.
fn examples() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(project_root().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            out.push((
                path.file_name().unwrap().to_string_lossy().into_owned(),
                value,
            ));
        }
    }
    out
}

fn example(file: &str) -> Value {
    examples()
        .into_iter()
        .find(|(f, _)| f == file)
        .unwrap_or_else(|| panic!("no example {file}"))
        .1
}

/// `expected` is contained in `actual`: every field it has is there with an equal value
/// (numbers compared by value, so 90 equals 90.0). Returns the first difference.
fn contained(expected: &Value, actual: &Value, path: &str) -> Result<(), String> {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, v) in e {
                let p = format!("{path}.{k}");
                contained(v, a.get(k).unwrap_or(&Value::Null), &p)?;
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                contained(ev, av, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
        (Value::Number(e), Value::Number(a)) if e.as_f64() == a.as_f64() => Ok(()),
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{path}: expected {e}, got {a}")),
    }
}

#[tokio::test]
async fn every_crd_is_served_and_established() {
    let ns = namespace("served").await;
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(ns.client.clone());
    for crd in pipeline_healer::api::crds() {
        let name = crd.metadata.name.unwrap();
        let served = crds.get(&name).await.unwrap();
        let established = served
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .into_iter()
            .any(|c| c.type_ == "Established" && c.status == "True");
        assert!(established, "{name} is not established");
    }
    // And each kind can be listed in a namespace through the typed API.
    ns.api::<PredictionBatch>()
        .list(&Default::default())
        .await
        .unwrap();
    ns.api::<PhaseRun>()
        .list(&Default::default())
        .await
        .unwrap();
    ns.api::<HealingEvent>()
        .list(&Default::default())
        .await
        .unwrap();
    ns.api::<HealingPolicy>()
        .list(&Default::default())
        .await
        .unwrap();
}

/// Parses `value` as the Rust type of its kind and serialises it back.
fn through_rust_type(kind: &str, value: &Value) -> Value {
    fn round<K: serde::de::DeserializeOwned + serde::Serialize>(v: &Value) -> Value {
        let typed: K = serde_json::from_value(v.clone()).unwrap();
        serde_json::to_value(typed).unwrap()
    }
    match kind {
        "PredictionBatch" => round::<PredictionBatch>(value),
        "PhaseRun" => round::<PhaseRun>(value),
        "HealingEvent" => round::<HealingEvent>(value),
        "HealingPolicy" => round::<HealingPolicy>(value),
        other => panic!("unexpected kind {other}"),
    }
}

#[tokio::test]
async fn examples_apply_and_read_back_unchanged() {
    let ns = namespace("examples").await;
    let all = examples();
    assert!(
        all.len() >= 6,
        "expected examples of every kind, found {}",
        all.len()
    );
    let mut kinds = std::collections::BTreeSet::new();
    for (file, doc) in all {
        let kind = doc["kind"].as_str().unwrap().to_owned();
        kinds.insert(kind.clone());
        let obj: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        let created = dynamic_api(&ns, &kind)
            .create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("{file}: refused: {e}"));
        let stored = serde_json::to_value(&created).unwrap();
        contained(&doc["spec"], &stored["spec"], "spec").unwrap_or_else(|e| panic!("{file}: {e}"));
        // The Rust types read what the API server stored and lose nothing of it.
        let reread = through_rust_type(&kind, &stored);
        contained(&stored["spec"], &reread["spec"], "spec")
            .unwrap_or_else(|e| panic!("{file}: the Rust type changed the spec: {e}"));
    }
    assert_eq!(
        kinds.len(),
        4,
        "examples must cover every kind, got {kinds:?}"
    );
}

#[tokio::test]
async fn kubectl_get_shows_the_printer_columns() {
    let ns = namespace("columns").await;
    let status = support::cluster()
        .kubectl()
        .args(["apply", "--server-side", "-n", &ns.name, "-f"])
        .arg(project_root().join("examples"))
        .status()
        .unwrap();
    assert!(status.success());
    for (resource, columns) in [
        (
            "healingevents",
            &[
                "NAME",
                "TYPE",
                "TARGET",
                "ROOT-CAUSE",
                "SUCCESS",
                "DRY-RUN",
                "AGE",
            ][..],
        ),
        (
            "predictionbatches",
            &[
                "NAME",
                "GAME-DATE",
                "EXPECTED",
                "COMPLETED",
                "PCT",
                "STATE",
                "AGE",
            ],
        ),
        (
            "phaseruns",
            &["NAME", "PHASE", "DATE", "MISSING", "STATE", "AGE"],
        ),
        (
            "healingpolicies",
            &[
                "NAME",
                "STALL-AFTER",
                "MIN-PCT",
                "DRY-RUN",
                "LEVEL",
                "OPEN-CIRCUITS",
                "AGE",
            ],
        ),
    ] {
        let out = support::cluster()
            .kubectl()
            .args(["get", resource, "-n", &ns.name])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let header: Vec<&str> = text
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .collect();
        assert_eq!(header, columns, "{resource}:\n{text}");
    }
    // Short names work, and the values land in their columns.
    let out = support::cluster()
        .kubectl()
        .args(["get", "hp", "default", "-n", &ns.name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let row: Vec<&str> = text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(&row[..4], ["default", "15m", "90", "false"], "{text}");
    let out = support::cluster()
        .kubectl()
        .args(["get", "he", "-n", &ns.name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("retry") && text.contains("feature_store_timeout"),
        "{text}"
    );
}

/// An invalid variant of an example: `edits` are (JSON pointer, new value or None to remove).
struct Invalid {
    what: &'static str,
    example: &'static str,
    edits: Vec<(&'static str, Option<Value>)>,
    /// Must all appear in the API server's message: the field, and the reason where useful.
    expect: &'static [&'static str],
}

fn set(doc: &mut Value, pointer: &str, value: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let parent = doc
        .pointer_mut(parent)
        .unwrap_or_else(|| panic!("no {parent}"));
    match (parent, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(key.to_owned(), v);
        }
        (Value::Object(m), None) => {
            m.remove(key);
        }
        (Value::Array(a), Some(v)) => a[key.parse::<usize>().unwrap()] = v,
        (Value::Array(a), None) => {
            a.remove(key.parse::<usize>().unwrap());
        }
        (other, _) => panic!("cannot edit {pointer} in {other}"),
    }
}

fn invalid_cases() -> Vec<Invalid> {
    const HP: &str = "healingpolicy.yaml";
    const PB_FS: &str = "predictionbatch-firestore.yaml";
    const PB_ST: &str = "predictionbatch-status.yaml";
    const PR: &str = "phaserun-phase4.yaml";
    const PR2: &str = "phaserun-phase2.yaml";
    const HE: &str = "healingevent-retry.yaml";
    let job = json!({"template": {"spec": {}}});
    vec![
        Invalid {
            what: "completion above 100 %",
            example: HP,
            edits: vec![("/spec/minCompletionPercent", Some(json!(190)))],
            expect: &["spec.minCompletionPercent", "less than or equal to 100"],
        },
        Invalid {
            what: "negative completion",
            example: HP,
            edits: vec![("/spec/minCompletionPercent", Some(json!(-5)))],
            expect: &["spec.minCompletionPercent", "greater than or equal to 0"],
        },
        Invalid {
            what: "zero stall period",
            example: HP,
            edits: vec![("/spec/stallAfter", Some(json!("0s")))],
            expect: &["spec.stallAfter", "positive duration"],
        },
        Invalid {
            what: "stall period in words",
            example: HP,
            edits: vec![("/spec/stallAfter", Some(json!("fifteen minutes")))],
            expect: &["spec.stallAfter"],
        },
        Invalid {
            what: "negative max age",
            example: HP,
            edits: vec![("/spec/maxAge", Some(json!("-1h")))],
            expect: &["spec.maxAge"],
        },
        Invalid {
            what: "yellow not below red",
            example: HP,
            edits: vec![("/spec/alerts/yellow/count", Some(json!(10)))],
            expect: &[
                "spec.alerts.yellow.count",
                "yellow.count must be less than red.count",
            ],
        },
        Invalid {
            what: "yellow window longer than red",
            example: HP,
            edits: vec![("/spec/alerts/yellow/window", Some(json!("48h")))],
            expect: &["spec.alerts.yellow.window", "must not be longer"],
        },
        Invalid {
            what: "zero red count",
            example: HP,
            edits: vec![("/spec/alerts/red/count", Some(json!(0)))],
            expect: &["spec.alerts.red.count"],
        },
        Invalid {
            what: "failure rate above 100 %",
            example: HP,
            edits: vec![("/spec/alerts/critical/failureRatePercent", Some(json!(150)))],
            expect: &["spec.alerts.critical.failureRatePercent"],
        },
        Invalid {
            what: "skip reason with spaces",
            example: HP,
            edits: vec![("/spec/permanentSkipReasons/0", Some(json!("Player Injury")))],
            expect: &["spec.permanentSkipReasons[0]"],
        },
        Invalid {
            what: "backoff start above its cap",
            example: HP,
            edits: vec![("/spec/phaseHealing/initialBackoff", Some(json!("1h")))],
            expect: &[
                "spec.phaseHealing.initialBackoff",
                "must not exceed maxBackoff",
            ],
        },
        Invalid {
            what: "zero attempts",
            example: HP,
            edits: vec![("/spec/phaseHealing/maxAttempts", Some(json!(0)))],
            expect: &["spec.phaseHealing.maxAttempts"],
        },
        Invalid {
            what: "unknown breaker trigger",
            example: HP,
            edits: vec![("/spec/circuitBreaker/openOn", Some(json!("Yellow")))],
            expect: &["spec.circuitBreaker.openOn", "Unsupported value"],
        },
        Invalid {
            what: "date in another format",
            example: PB_FS,
            edits: vec![("/spec/gameDate", Some(json!("24/11/2026")))],
            expect: &["spec.gameDate"],
        },
        Invalid {
            what: "date that does not exist",
            example: PB_FS,
            edits: vec![("/spec/gameDate", Some(json!("2026-02-30")))],
            expect: &["spec.gameDate"],
        },
        Invalid {
            what: "unknown source",
            example: PB_FS,
            edits: vec![("/spec/source", Some(json!("s3")))],
            expect: &["spec.source", "Unsupported value"],
        },
        Invalid {
            what: "firestore batch without a document",
            example: PB_FS,
            edits: vec![("/spec/documentPath", None)],
            expect: &["spec.documentPath", "required when source is firestore"],
        },
        Invalid {
            what: "document path that is a collection",
            example: PB_FS,
            edits: vec![("/spec/documentPath", Some(json!("prediction_batches")))],
            expect: &["spec.documentPath"],
        },
        Invalid {
            what: "status batch without expectations",
            example: PB_ST,
            edits: vec![("/spec/expectedPlayers", None)],
            expect: &["spec.expectedPlayers", "required when source is status"],
        },
        Invalid {
            what: "zero expected players",
            example: PB_ST,
            edits: vec![("/spec/expectedPlayers", Some(json!(0)))],
            expect: &["spec.expectedPlayers", "greater than or equal to 1"],
        },
        Invalid {
            what: "SQL in a table name",
            example: PR,
            edits: vec![(
                "/spec/processors/0/table",
                Some(json!("nba_raw.t; DROP TABLE x")),
            )],
            expect: &["spec.processors[0].table"],
        },
        Invalid {
            what: "backticks in a table name",
            example: PR,
            edits: vec![("/spec/processors/0/table", Some(json!("nba_raw.`t`")))],
            expect: &["spec.processors[0].table"],
        },
        Invalid {
            what: "quote in a schedule table",
            example: PR,
            edits: vec![("/spec/schedule/table", Some(json!("nba_raw.x'--")))],
            expect: &["spec.schedule.table"],
        },
        Invalid {
            what: "space in a column name",
            example: PR,
            edits: vec![(
                "/spec/processors/0/dateColumn",
                Some(json!("analysis date")),
            )],
            expect: &["spec.processors[0].dateColumn"],
        },
        Invalid {
            what: "zero minimum rows",
            example: PR,
            edits: vec![("/spec/processors/0/minRows", Some(json!(0)))],
            expect: &["spec.processors[0].minRows"],
        },
        Invalid {
            what: "dependency on an unknown processor",
            example: PR,
            edits: vec![("/spec/processors/3/dependsOn/0", Some(json!("TeamDefence")))],
            expect: &["spec.processors", "must name a processor of this PhaseRun"],
        },
        Invalid {
            what: "processor depending on itself",
            example: PR,
            edits: vec![(
                "/spec/processors/0/dependsOn",
                Some(json!(["TeamDefenseZoneAnalysis"])),
            )],
            expect: &["spec.processors", "cannot depend on itself"],
        },
        Invalid {
            what: "duplicate processor names",
            example: PR,
            edits: vec![(
                "/spec/processors/1/name",
                Some(json!("TeamDefenseZoneAnalysis")),
            )],
            expect: &["spec.processors", "unique"],
        },
        Invalid {
            what: "two trigger kinds",
            example: PR,
            edits: vec![("/spec/processors/0/trigger/job", Some(job))],
            expect: &["spec.processors[0].trigger", "exactly one of http or job"],
        },
        Invalid {
            what: "no trigger kind",
            example: PR2,
            edits: vec![("/spec/processors/3/trigger", Some(json!({})))],
            expect: &["spec.processors[3].trigger", "exactly one of http or job"],
        },
        Invalid {
            what: "non-HTTP trigger URL",
            example: PR,
            edits: vec![(
                "/spec/processors/0/trigger",
                Some(json!({"http": {"url": "ftp://x/run"}})),
            )],
            expect: &["spec.processors[0].trigger.http.url"],
        },
        Invalid {
            what: "no processors",
            example: PR,
            edits: vec![("/spec/processors", Some(json!([])))],
            expect: &["spec.processors"],
        },
        Invalid {
            what: "name other than the healing id",
            example: HE,
            edits: vec![("/metadata/name", Some(json!("something-else")))],
            expect: &["metadata.name must equal spec.healingId"],
        },
        Invalid {
            what: "healing type in words",
            example: HE,
            edits: vec![("/spec/healingType", Some(json!("Batch Cleanup")))],
            expect: &["spec.healingType"],
        },
        Invalid {
            what: "root cause with numbers and spaces",
            example: HE,
            edits: vec![(
                "/spec/rootCause",
                Some(json!("Stalled at 91.2% for 17 minutes")),
            )],
            expect: &["spec.rootCause"],
        },
        Invalid {
            what: "event without a target",
            example: HE,
            edits: vec![("/spec/target", None)],
            expect: &["spec.target", "Required value"],
        },
    ]
}

#[tokio::test]
async fn invalid_objects_are_refused_naming_the_field() {
    let ns = namespace("invalid").await;
    let cases = invalid_cases();
    assert!(cases.len() >= 20);
    let mut failures = Vec::new();
    for case in cases {
        let mut doc = example(case.example);
        for (pointer, value) in &case.edits {
            set(&mut doc, pointer, value.clone());
        }
        let kind = doc["kind"].as_str().unwrap().to_owned();
        let obj: DynamicObject = serde_json::from_value(doc).unwrap();
        match dynamic_api(&ns, &kind)
            .create(&PostParams::default(), &obj)
            .await
        {
            Ok(_) => failures.push(format!("{}: accepted", case.what)),
            Err(kube::Error::Api(status)) => {
                if status.code != 422 || !case.expect.iter().all(|e| status.message.contains(e)) {
                    failures.push(format!(
                        "{}: {} {:?}, wanted {:?}",
                        case.what, status.code, status.message, case.expect
                    ));
                }
            }
            Err(other) => failures.push(format!("{}: {other}", case.what)),
        }
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

async fn apply_example(ns: &TestNamespace, file: &str) -> (Api<DynamicObject>, DynamicObject) {
    let doc = example(file);
    let api = dynamic_api(ns, doc["kind"].as_str().unwrap());
    let obj: DynamicObject = serde_json::from_value(doc).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    (api, created)
}

fn refused(result: Result<DynamicObject, kube::Error>, expect: &[&str]) {
    match result {
        Ok(_) => panic!("the change was accepted"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            for e in expect {
                assert!(
                    status.message.contains(e),
                    "{:?} does not mention {e:?}",
                    status.message
                );
            }
        }
        Err(other) => panic!("{other}"),
    }
}

#[tokio::test]
async fn a_healing_event_spec_never_changes() {
    let ns = namespace("immutable-event").await;
    let (api, created) = apply_example(&ns, "healingevent-retry.yaml").await;
    let name = created.metadata.name.clone().unwrap();
    let patch = json!({"spec": {"triggerReason": "rewritten history"}});
    refused(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
        &["spec", "immutable"],
    );
    // The status, by contrast, is the controller's to write.
    let status = json!({"status": {"outcome": "Succeeded", "success": true}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_batch_keeps_its_identity() {
    let ns = namespace("immutable-batch").await;
    let (api, created) = apply_example(&ns, "predictionbatch-firestore.yaml").await;
    let name = created.metadata.name.clone().unwrap();
    for (patch, field) in [
        (
            json!({"spec": {"batchId": "batch_2026-11-24_1"}}),
            "spec.batchId",
        ),
        (
            json!({"spec": {"documentPath": "prediction_batches/other"}}),
            "spec.documentPath",
        ),
    ] {
        refused(
            api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            &[field, "immutable"],
        );
    }
    // Expectations may be re-planned.
    let (api, created) = apply_example(&ns, "predictionbatch-status.yaml").await;
    let patch = json!({"spec": {"expectedPlayers": 230}});
    api.patch(
        &created.metadata.name.unwrap(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn an_empty_policy_takes_the_schema_defaults() {
    let ns = namespace("defaults").await;
    let api = ns.api::<HealingPolicy>();
    let empty = HealingPolicy::new("empty", serde_json::from_value(json!({})).unwrap());
    // Create through a dynamic object with an empty spec, as a GitOps repo would.
    let raw: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "empty"}, "spec": {}
    }))
    .unwrap();
    dynamic_api(&ns, "HealingPolicy")
        .create(&PostParams::default(), &raw)
        .await
        .unwrap();
    let stored = api.get("empty").await.unwrap();
    assert_eq!(stored.spec, empty.spec);
    let stored_json = serde_json::to_value(&stored.spec).unwrap();
    assert_eq!(stored_json["stallAfter"], "15m");
    assert_eq!(stored_json["alerts"]["red"]["count"], 10);
}
