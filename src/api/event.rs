//! `HealingEvent`: the audit record of one healing action, and the outbox for its export.
//!
//! The spec is the intent, written before the action and never changed; the status is the
//! outcome and each sink's export state. The object is named by its `healingId`, so creating
//! it twice (a retry, a restart, a second replica) fails with a conflict instead of recording
//! twice.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::schema::{SNAKE_CASE_PATTERN, free_form_object};

/// Stable root-cause key: a snake_case category, optionally `:` and a subject, e.g.
/// `no_progress`, `feature_store_timeout`, `missing_rows:nba_raw.nbac_schedule`.
pub const ROOT_CAUSE_PATTERN: &str = r"^[a-z][a-z0-9_]{0,62}(:[A-Za-z0-9_.:/-]{1,190})?$";

/// The healing type of a stalled batch marked complete (the original's name).
pub const BATCH_CLEANUP: &str = "batch_cleanup";
/// The healing type of a processor re-run for a phase's missing rows.
pub const PHASE_RERUN: &str = "phase_rerun";

/// Holds a deleted HealingEvent (by hand, by namespace deletion, by retention) until the
/// outbox has exported it, or `--export-finalizer-timeout` has passed.
pub const EXPORT_FINALIZER: &str = "healing.pipeline.dev/export";

/// One healing action: what was seen, why, and what was done.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "healing.pipeline.dev",
    version = "v1alpha1",
    kind = "HealingEvent",
    plural = "healingevents",
    shortname = "he",
    category = "pipeline",
    namespaced,
    status = "HealingEventStatus",
    doc = "The audit record of one healing action, exported to Firestore and BigQuery",
    validation = Rule::new("self.metadata.name == self.spec.healingId")
        .message("metadata.name must equal spec.healingId"),
    // On the object, not its status: a rule on the status is skipped when the new object
    // has none (a patch of `status: null`). Final means the outcome and its time stay, so of
    // two actors finishing one action only the first records (and tells, and counts) it.
    validation = Rule::new(FINAL_OUTCOME_RULE).message(OUTCOME_IS_FINAL),
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.healingType"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target.name"),
    printcolumn(name = "Root-Cause", type_ = "string", json_path = ".spec.rootCause"),
    printcolumn(name = "Outcome", type_ = "string", json_path = ".status.outcome"),
    printcolumn(name = "Success", type_ = "boolean", json_path = ".status.success"),
    printcolumn(name = "Dry-Run", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(name = "Time-To-Heal", type_ = "number", json_path = ".status.timeToHealSeconds", priority = 1),
    printcolumn(name = "Firestore", type_ = "string", json_path = ".status.exports.firestore.state", priority = 1),
    printcolumn(name = "BigQuery", type_ = "string", json_path = ".status.exports.bigquery.state", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf")
    .message("spec is immutable: a healing event is an audit record"))]
pub struct HealingEventSpec {
    /// Deterministic id of the action; also the object's name and the sinks' idempotency key.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    )]
    pub healing_id: String,
    /// When the action was decided (microseconds, as BigQuery keeps them).
    pub timestamp: MicroTime,
    /// `batch_cleanup`, `phase_rerun`, `retry`, `fallback`, `circuit_breaker_reset`, ...
    #[schemars(regex(pattern = SNAKE_CASE_PATTERN))]
    pub healing_type: String,
    /// Why, in words (may name ids and numbers; `rootCause` is the stable key).
    #[schemars(length(min = 1, max = 2048))]
    pub trigger_reason: String,
    /// What was (or, for dry-run, would have been) done.
    #[schemars(length(min = 1, max = 2048))]
    pub action_taken: String,
    /// Stable key that groups events with the same cause.
    #[schemars(length(max = 254), regex(pattern = ROOT_CAUSE_PATTERN))]
    pub root_cause: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub correlation_id: Option<String>,
    /// The object that was healed.
    pub target: TargetRef,
    /// A dry-run event records what would have been done; nothing was changed.
    #[serde(default)]
    pub dry_run: bool,
    /// When the condition that called for the heal began (the stall threshold instant);
    /// heal latency is measured from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_time: Option<MicroTime>,
    /// When the problem began: a batch's last progress, a phase's first observation of the
    /// missing table. Time to heal runs from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onset_time: Option<MicroTime>,
    /// When the problem was noticed: the observation the action was decided on. Time to
    /// detect runs to here, from the instant the problem became detectable (the threshold
    /// instant where there is one, else the onset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detected_time: Option<MicroTime>,
    /// The target's state before the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub before_state: Option<serde_json::Value>,
    /// Anything else worth keeping (the original's `metadata` column, e.g. missing players).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub details: Option<serde_json::Value>,
}

/// A reference to the healed object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

impl TargetRef {
    /// A reference to `object`, as a HealingEvent names its target.
    pub fn of<K: kube::Resource<DynamicType = ()>>(object: &K) -> Self {
        let meta = object.meta();
        Self {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: K::kind(&()).into_owned(),
            namespace: meta.namespace.clone(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone(),
        }
    }
}

impl HealingEvent {
    /// The root cause the record is grouped by: the outcome's, else the intent's.
    pub fn root_cause(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.root_cause.as_deref())
            .unwrap_or(&self.spec.root_cause)
    }
}

/// The API server's answer to a write that would change a final outcome.
pub const OUTCOME_IS_FINAL: &str = "an outcome is final: once recorded it does not change";

/// Once the outcome is final (neither Pending nor Verifying), the status keeps it and its
/// `finishedAt`.
const FINAL_OUTCOME_RULE: &str = "!has(oldSelf.status) || !has(oldSelf.status.outcome) \
    || oldSelf.status.outcome == 'Pending' || oldSelf.status.outcome == 'Verifying' \
    || (has(self.status) && has(self.status.outcome) \
        && self.status.outcome == oldSelf.status.outcome \
        && has(self.status.finishedAt) == has(oldSelf.status.finishedAt) \
        && (!has(oldSelf.status.finishedAt) || self.status.finishedAt == oldSelf.status.finishedAt))";

/// How the action ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Outcome {
    /// Recorded; the action has not finished yet.
    Pending,
    /// The action was carried out; the controller has not yet seen its target healthy
    /// (a re-run processor's rows, a healed batch read back). Not final: it ends
    /// Succeeded once the target is seen healthy, Failed when it is not in time.
    Verifying,
    /// The target was seen healthy after the action.
    Succeeded,
    Failed,
    /// The target changed before the action (a late completion won); nothing was done.
    Superseded,
    /// Deliberately not acted on (dry-run, paused type, open circuit).
    Skipped,
    /// Its actor stopped before recording how the action ended, and what the target shows
    /// now cannot tell (the message says why): recorded so that no intent stays open.
    Abandoned,
}

impl Outcome {
    /// Whether the outcome is the action's last word: it no longer changes, and the event
    /// is exported, counted and analysed.
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Pending | Self::Verifying)
    }
}

/// A sink's export state for this event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum ExportState {
    Pending,
    Exported,
    Failing,
    /// The event must reach this sink (it was configured when the outcome became final), but
    /// the controller now runs without it: the event is kept until its retention plus a
    /// grace period, unless the sink is configured again.
    Unconfigured,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkExport {
    pub state: ExportState,
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exported_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Microseconds: a backoff of under a second must survive the round trip through the
    /// API server, or the retry would fall due at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<MicroTime>,
}

/// The action's outcome and each sink's export state.
///
/// An outcome other than Pending is final: the API server refuses a write that changes or
/// removes it or its `finishedAt`, so of two actors that finish one action (a slow actor and
/// the one that took its heal over) the first one's record stands, and what was exported
/// stays true.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealingEventStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<bool>,
    /// The target's state after the action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub after_state: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Seconds from `spec.thresholdTime` to the outcome being recorded (the measure before
    /// outcomes were verified; `timeToHealSeconds` is the one that says how long the
    /// pipeline was broken).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heal_latency_seconds: Option<f64>,
    /// While Verifying: by when the target must be seen healthy, or the action has failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_by: Option<MicroTime>,
    /// When the target was seen healthy after the action (Succeeded only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healed_time: Option<MicroTime>,
    /// Seconds from the problem becoming detectable (`spec.thresholdTime`, else
    /// `spec.onsetTime`) to `spec.detectedTime`: how late it was noticed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_detect_seconds: Option<f64>,
    /// Seconds from `spec.onsetTime` to `healedTime`: how long the target was broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_heal_seconds: Option<f64>,
    /// The root cause as the outcome showed it, where that differs from the intent's
    /// `spec.rootCause` (a re-run that wrote no rows: `rerun_ineffective:<table>`; a heal
    /// whose consolidation failed: `consolidation_failed`). Records group by this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 254), regex(pattern = ROOT_CAUSE_PATTERN))]
    pub root_cause: Option<String>,
    /// Export state per sink (`firestore`, `bigquery`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exports: BTreeMap<String, SinkExport>,
    /// The sinks this event must reach before it is deleted: those configured when its
    /// outcome became final (and any configured since). A later process's flags do not
    /// shorten the list, so restarting without a sink does not delete what it never got.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub required_sinks: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
