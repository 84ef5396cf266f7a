//! The CRDs on a real kube-apiserver: served, the examples round-trip through the API and the
//! Rust types unchanged, and invalid objects are refused on admission naming the field.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use kube::CustomResourceExt;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use pipeline_healer::api::schema::{
    DURATION_PATTERN, MAX_DURATION_HOURS, PositiveDuration, duration_bound_rule,
};
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
                "OUTCOME",
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
            what: "stall period beyond a century",
            example: HP,
            edits: vec![("/spec/stallAfter", Some(json!("876001h")))],
            expect: &["spec.stallAfter", "at most 876000h"],
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
            what: "pause watch longer than the stall",
            example: HP,
            edits: vec![("/spec/watchAfter", Some(json!("1h")))],
            expect: &["spec.watchAfter", "must not be longer than stallAfter"],
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
async fn a_healing_event_spec_never_changes_nor_a_final_outcome() {
    let ns = namespace("immutable-event").await;
    let (api, created) = apply_example(&ns, "healingevent-retry.yaml").await;
    let name = created.metadata.name.clone().unwrap();
    let patch = json!({"spec": {"triggerReason": "rewritten history"}});
    refused(
        api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await,
        &["spec", "immutable"],
    );
    // The status, by contrast, is the controller's to write: Pending, then an outcome.
    for outcome in ["Pending", "Succeeded"] {
        let status = json!({"status": {"outcome": outcome}});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .unwrap_or_else(|e| panic!("{outcome}: {e}"));
    }
    // Once final, the outcome stays: neither changed nor removed; the rest may change.
    for status in [
        json!({"status": {"outcome": "Abandoned"}}),
        json!({"status": {"outcome": null}}),
        json!({"status": null}),
        // A second actor's record of the same outcome, at its own time.
        json!({"status": {"outcome": "Succeeded", "finishedAt": "2026-11-24T23:59:00Z"}}),
    ] {
        refused(
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                .await,
            &[pipeline_healer::api::event::OUTCOME_IS_FINAL],
        );
    }
    let exports = json!({"status": {"outcome": "Succeeded", "success": true}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&exports))
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

// Bounds: the API server admits exactly the integers and durations the Rust types decode, so
// no worker's patch can make a kind unlistable for the controller.

/// A step from a schema node to a child: a named field, any array item, any map value.
#[derive(Clone, Debug, PartialEq)]
enum Step {
    Field(String),
    Item,
    MapValue,
}

/// A node of a CRD schema that needs a bound: an integer, or a `PositiveDuration` string.
#[derive(Clone, Debug)]
struct Bounded {
    path: Vec<Step>,
    schema: Value,
}

impl Bounded {
    /// The node's path, e.g. `status.report.skipped.*` or `spec.processors[].minRows`.
    fn name(&self) -> String {
        let mut name = String::new();
        for step in &self.path {
            match step {
                Step::Field(field) => {
                    if !name.is_empty() {
                        name.push('.');
                    }
                    name.push_str(field);
                }
                Step::Item => name.push_str("[]"),
                Step::MapValue => name.push_str(".*"),
            }
        }
        name
    }

    fn is_integer(&self) -> bool {
        self.schema["type"] == "integer"
    }

    fn number(&self, key: &str) -> Option<f64> {
        self.schema.get(key).and_then(Value::as_f64)
    }
}

/// Every integer and duration node under `schema`, through `properties`, `items` and
/// `additionalProperties` (and `anyOf`/`oneOf`/`allOf`, at the same path).
fn bounded_nodes(schema: &Value, path: &mut Vec<Step>, out: &mut Vec<Bounded>) {
    let duration = schema["type"] == "string" && schema["pattern"] == DURATION_PATTERN;
    if schema["type"] == "integer" || duration {
        out.push(Bounded {
            path: path.clone(),
            schema: schema.clone(),
        });
    }
    if let Some(properties) = schema["properties"].as_object() {
        for (name, child) in properties {
            path.push(Step::Field(name.clone()));
            bounded_nodes(child, path, out);
            path.pop();
        }
    }
    for (key, step) in [
        ("items", Step::Item),
        ("additionalProperties", Step::MapValue),
    ] {
        if schema[key].is_object() {
            path.push(step);
            bounded_nodes(&schema[key], path, out);
            path.pop();
        }
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for child in schema[key].as_array().into_iter().flatten() {
            bounded_nodes(child, path, out);
        }
    }
}

fn bounded_of(schema: &Value) -> Vec<Bounded> {
    let mut out = Vec::new();
    bounded_nodes(schema, &mut Vec::new(), &mut out);
    out
}

const KINDS: [&str; 4] = [
    "PredictionBatch",
    "PhaseRun",
    "HealingEvent",
    "HealingPolicy",
];

fn open_api_schema(
    crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let crd = serde_json::to_value(crd).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The schema of `kind` as its Rust type generates it: integer formats name the Rust type.
fn generated_schema(kind: &str) -> Value {
    open_api_schema(match kind {
        "PredictionBatch" => PredictionBatch::crd(),
        "PhaseRun" => PhaseRun::crd(),
        "HealingEvent" => HealingEvent::crd(),
        "HealingPolicy" => HealingPolicy::crd(),
        other => panic!("unexpected kind {other}"),
    })
}

/// The schema of `kind` as `api::crds()` renders it for crds/ and the API server.
fn installed_schema(kind: &str) -> Value {
    let crd = pipeline_healer::api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("api::crds() has no {kind}"));
    open_api_schema(crd)
}

/// What the Rust type behind an integer `format` decodes; `None`: all of int64, which is all
/// the API server stores anyway.
fn rust_range(format: Option<&str>) -> Result<Option<(f64, f64)>, String> {
    let range = match format {
        Some("int8") => (f64::from(i8::MIN), f64::from(i8::MAX)),
        Some("int16") => (f64::from(i16::MIN), f64::from(i16::MAX)),
        Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
        Some("uint8") => (0.0, f64::from(u8::MAX)),
        Some("uint16") => (0.0, f64::from(u16::MAX)),
        Some("uint32") => (0.0, f64::from(u32::MAX)),
        Some("uint64" | "uint") => (0.0, i64::MAX as f64),
        Some("int64" | "int") => return Ok(None),
        other => return Err(format!("format {other:?} names no Rust integer type")),
    };
    Ok(Some(range))
}

/// Paths the walk must reach (a walk that found nothing would pass everything).
const MUST_BE_BOUNDED: &[&str] = &[
    "PredictionBatch spec.expectedPlayers",
    "PredictionBatch status.report.completed",
    "PredictionBatch status.report.skipped.*",
    "PredictionBatch status.report.failing.*",
    "PredictionBatch status.completed",
    "PhaseRun spec.processors[].minRows",
    "PhaseRun status.attempts.*",
    "PhaseRun status.checks",
    "HealingEvent status.exports.*.attempts",
    "HealingPolicy spec.alerts.red.count",
    "HealingPolicy spec.phaseHealing.maxAttempts",
    "HealingPolicy status.healingTypes.*.counts.inYellowWindow",
    "HealingPolicy spec.stallAfter",
    "HealingPolicy spec.alerts.yellow.window",
    "HealingPolicy spec.phaseHealing.maxBackoff",
];

#[test]
fn every_integer_and_duration_is_bounded_as_its_rust_type_decodes() {
    let bound_rule = duration_bound_rule();
    let mut failures = Vec::new();
    let mut seen = BTreeSet::new();
    for kind in KINDS {
        let installed: BTreeMap<String, Value> = bounded_of(&installed_schema(kind))
            .into_iter()
            .map(|node| (node.name(), node.schema))
            .collect();
        for node in bounded_of(&generated_schema(kind)) {
            let name = format!("{kind} {}", node.name());
            if node.is_integer() {
                match rust_range(node.schema["format"].as_str()) {
                    Err(e) => failures.push(format!("{name}: {e}")),
                    Ok(None) => {}
                    Ok(Some((lowest, highest))) => {
                        match node.number("minimum") {
                            Some(min) if min >= lowest => {}
                            other => failures.push(format!(
                                "{name}: minimum {other:?}, its Rust type needs one of at least {lowest}"
                            )),
                        }
                        match node.number("maximum") {
                            Some(max) if max <= highest => {}
                            other => failures.push(format!(
                                "{name}: maximum {other:?}, its Rust type needs one of at most {highest}"
                            )),
                        }
                    }
                }
            } else {
                let rules: Vec<&str> = node.schema["x-kubernetes-validations"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|rule| rule["rule"].as_str())
                    .collect();
                if !rules.contains(&bound_rule.as_str()) {
                    failures.push(format!("{name}: no rule {bound_rule:?}, only {rules:?}"));
                }
            }
            // What crds/ holds and the API server enforces keeps the same bounds.
            let served = installed.get(&node.name());
            for key in ["minimum", "maximum", "x-kubernetes-validations"] {
                if served.map(|s| &s[key]) != Some(&node.schema[key]) {
                    failures.push(format!(
                        "{name}: api::crds() has {key} {:?}, the Rust type {}",
                        served.map(|s| &s[key]),
                        node.schema[key]
                    ));
                }
            }
            seen.insert(name);
        }
    }
    for expected in MUST_BE_BOUNDED {
        if !seen.contains(*expected) {
            failures.push(format!("the walk did not reach {expected}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} unbounded:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // And Rust reads durations up to the same bound, and not one nanosecond further.
    let max = format!("{MAX_DURATION_HOURS}h");
    assert_eq!(bound_rule, format!("duration(self) <= duration('{max}')"));
    let at_max: PositiveDuration = max.parse().unwrap();
    assert_eq!(
        at_max.as_std(),
        std::time::Duration::from_secs(MAX_DURATION_HOURS * 3600)
    );
    for over in [format!("{}h", MAX_DURATION_HOURS + 1), format!("{max}1ns")] {
        assert!(over.parse::<PositiveDuration>().is_err(), "{over} was read");
    }
}

/// One place a value was set: its JSON pointer, and its field as the API server names it
/// (a map key as `.key`, or as `[key]`).
#[derive(Clone, Debug, Default)]
struct Place {
    pointer: String,
    field: String,
    field_keyed: String,
}

impl Place {
    fn child(&self, pointer: &str, field: &str, field_keyed: &str) -> Place {
        Place {
            pointer: format!("{}/{pointer}", self.pointer),
            field: format!("{}{field}", self.field),
            field_keyed: format!("{}{field_keyed}", self.field_keyed),
        }
    }
}

/// Sets `value` at every place `path` reaches in `doc`, creating what is missing on the way:
/// an object for a field, one element in an empty array, one key `bound` in an empty map.
/// The places set are added to `out`.
fn set_along(doc: &mut Value, path: &[Step], value: &Value, at: &Place, out: &mut Vec<Place>) {
    let Some((step, rest)) = path.split_first() else {
        *doc = value.clone();
        out.push(at.clone());
        return;
    };
    let container = || {
        if rest.first() == Some(&Step::Item) {
            json!([])
        } else {
            json!({})
        }
    };
    match step {
        Step::Field(name) => {
            if !doc.is_object() {
                *doc = json!({});
            }
            let dot = if at.field.is_empty() { "" } else { "." };
            let next = at.child(name, &format!("{dot}{name}"), &format!("{dot}{name}"));
            let child = doc
                .as_object_mut()
                .unwrap()
                .entry(name.clone())
                .or_insert_with(container);
            set_along(child, rest, value, &next, out);
        }
        Step::Item => {
            if !doc.is_array() {
                *doc = json!([]);
            }
            let items = doc.as_array_mut().unwrap();
            if items.is_empty() {
                items.push(container());
            }
            for (i, item) in items.iter_mut().enumerate() {
                let index = format!("[{i}]");
                let next = at.child(&i.to_string(), &index, &index);
                set_along(item, rest, value, &next, out);
            }
        }
        Step::MapValue => {
            if !doc.is_object() {
                *doc = json!({});
            }
            let map = doc.as_object_mut().unwrap();
            if map.is_empty() {
                map.insert("bound".to_owned(), container());
            }
            for (key, item) in map.iter_mut() {
                let next = at.child(key, &format!(".{key}"), &format!("[{key}]"));
                set_along(item, rest, value, &next, out);
            }
        }
    }
}

/// `name`, read through the typed API of its kind (so it decodes), as JSON.
async fn read_typed(ns: &TestNamespace, kind: &str, name: &str) -> Result<Value, kube::Error> {
    async fn get<K>(ns: &TestNamespace, name: &str) -> Result<Value, kube::Error>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + serde::Serialize,
        <K as kube::Resource>::DynamicType: Default,
    {
        let object: K = ns.api::<K>().get(name).await?;
        Ok(serde_json::to_value(object).unwrap())
    }
    match kind {
        "PredictionBatch" => get::<PredictionBatch>(ns, name).await,
        "PhaseRun" => get::<PhaseRun>(ns, name).await,
        "HealingEvent" => get::<HealingEvent>(ns, name).await,
        "HealingPolicy" => get::<HealingPolicy>(ns, name).await,
        other => panic!("unexpected kind {other}"),
    }
}

/// Equal values, numbers compared by value (4294967295 equals 4294967295.0).
fn same(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::Number(a)), Some(Value::Number(b))) => a.as_f64() == b.as_f64(),
        (a, b) => a == b,
    }
}

/// Per kind, one object that holds the largest value at every integer and duration of its
/// schema (found by the walk above, so a new field is covered without a change here): the
/// API server admits it, the typed API reads it back unchanged, and one more at any single
/// place is refused with a message naming that field.
#[tokio::test]
async fn the_bounds_are_admitted_and_read_back_and_one_past_them_refused() {
    let ns = namespace("bounds").await;
    let max_duration = format!("{MAX_DURATION_HOURS}h");
    let past_duration = format!("{}h", MAX_DURATION_HOURS + 1);
    let mut he = example("healingevent-retry.yaml");
    // What the walk cannot invent: the required state of each sink's export (and of the
    // batch outcome's, below).
    he["status"] = json!({"exports": {
        "firestore": {"state": "Failing"},
        "bigquery": {"state": "Exported"},
    }});
    let mut pb = example("predictionbatch-status.yaml");
    pb["status"]["outcomeExport"] = json!({"state": "Failing"});
    let objects = [
        ("PredictionBatch", pb),
        ("PhaseRun", example("phaserun-phase4.yaml")),
        ("HealingEvent", he),
        ("HealingPolicy", example("healingpolicy.yaml")),
    ];
    let mut covered = BTreeSet::new();
    let mut failures = Vec::new();
    for (kind, mut doc) in objects {
        // (where, one past the bound, what the refusal says)
        let mut places: Vec<(Place, Option<Value>, &str)> = Vec::new();
        for node in bounded_of(&generated_schema(kind)) {
            let (at_bound, past, reason) = if node.is_integer() {
                // int64 (observedGeneration, row counts): the API server's own range.
                let Some(max) = node.number("maximum") else {
                    continue;
                };
                let max = max as i64;
                let past = max.checked_add(1).map(Value::from);
                (json!(max), past, "less than or equal to")
            } else {
                (json!(max_duration), Some(json!(past_duration)), "at most")
            };
            let mut set = Vec::new();
            set_along(&mut doc, &node.path, &at_bound, &Place::default(), &mut set);
            assert!(!set.is_empty(), "{kind} {}: set nowhere", node.name());
            covered.insert(format!("{kind} {}", node.name()));
            places.extend(set.into_iter().map(|p| (p, past.clone(), reason)));
        }
        // The one rule across fields that the largest value everywhere breaks.
        if kind == "HealingPolicy" {
            let red = doc["spec"]["alerts"]["red"]["count"].as_i64().unwrap();
            doc["spec"]["alerts"]["yellow"]["count"] = json!(red - 1);
        }

        let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
        let status = doc.as_object_mut().unwrap().remove("status");
        let api = dynamic_api(&ns, kind);
        let object: DynamicObject = serde_json::from_value(doc.clone()).unwrap();
        if let Err(e) = api.create(&PostParams::default(), &object).await {
            panic!("{kind} at its bounds was refused: {e}");
        }
        if let Some(status) = status {
            let patch = json!({ "status": status });
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                panic!("{kind}'s status at its bounds was refused: {e}");
            }
            doc["status"] = status;
        }
        let back = read_typed(&ns, kind, &name)
            .await
            .unwrap_or_else(|e| panic!("{kind} at its bounds does not read back typed: {e}"));
        for (place, _, _) in &places {
            let (sent, got) = (doc.pointer(&place.pointer), back.pointer(&place.pointer));
            if !same(sent, got) {
                failures.push(format!(
                    "{kind} {}: sent {sent:?}, read back {got:?}",
                    place.field
                ));
            }
        }

        for (place, past, reason) in &places {
            let Some(past) = past else { continue };
            let mut over = doc.clone();
            *over.pointer_mut(&place.pointer).unwrap() = past.clone();
            let result = if place.pointer.starts_with("/status/") {
                let patch = json!({ "status": over["status"] });
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            } else {
                let patch = json!({ "spec": over["spec"] });
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
            };
            match result {
                Err(kube::Error::Api(status))
                    if status.code == 422
                        && (status.message.contains(&place.field)
                            || status.message.contains(&place.field_keyed))
                        && status.message.contains(reason) => {}
                Err(kube::Error::Api(status)) => failures.push(format!(
                    "{kind} {} = {past}: {} {:?}",
                    place.field, status.code, status.message
                )),
                Err(other) => failures.push(format!("{kind} {} = {past}: {other}", place.field)),
                Ok(_) => failures.push(format!("{kind} {} = {past}: admitted", place.field)),
            }
        }
    }
    for expected in MUST_BE_BOUNDED {
        if !covered.contains(*expected) {
            failures.push(format!("not covered: {expected}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );

    // Through the typed fields, the cases that prompted the bounds.
    let pb_name = example("predictionbatch-status.yaml")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let pb = ns.api::<PredictionBatch>().get(&pb_name).await.unwrap();
    let report = pb.status.and_then(|s| s.report).unwrap();
    assert_eq!(report.completed, u32::MAX);
    assert!(!report.skipped.is_empty() && report.skipped.values().all(|&n| n == u32::MAX));
    assert!(!report.failing.is_empty() && report.failing.values().all(|&n| n == u32::MAX));
    let pr_name = example("phaserun-phase4.yaml")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let pr = ns.api::<PhaseRun>().get(&pr_name).await.unwrap();
    assert!(pr.spec.processors.iter().all(|p| p.min_rows == u32::MAX));
    let pr_attempts = pr.status.unwrap().attempts;
    assert!(!pr_attempts.is_empty() && pr_attempts.values().all(|&n| n == u32::MAX));
    let he_name = example("healingevent-retry.yaml")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_owned();
    let he = ns.api::<HealingEvent>().get(&he_name).await.unwrap();
    let exports = he.status.unwrap().exports;
    assert_eq!(exports.len(), 2);
    assert!(exports.values().all(|e| e.attempts == u32::MAX));
    let hp = ns.api::<HealingPolicy>().get("default").await.unwrap();
    assert_eq!(hp.spec.phase_healing.max_attempts, 100);
    assert_eq!(hp.spec.stall_after.as_str(), max_duration);
    assert_eq!(
        hp.spec.stall_after.as_std(),
        std::time::Duration::from_secs(MAX_DURATION_HOURS * 3600)
    );
}
