//! `PredictionBatch`: one prediction batch of the pipeline, mirrored as a Kubernetes object.
//!
//! The spec says where the batch's truth lives; the status is what the controller observed and
//! decided. For `source: status` batches, workers (or their coordinator) report progress in
//! `status.report`, a field the controller only reads.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::event::SinkExport;
use super::schema::{GameDate, PositiveDuration, bounded_integers};

/// Where a batch's progress is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BatchSource {
    /// A Firestore document in the original's `prediction_batches` shape.
    Firestore,
    /// The object's own `status.report`, patched by the workers.
    Status,
}

/// One prediction batch: expectations and where its progress is observed.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "healing.pipeline.dev",
    version = "v1alpha1",
    kind = "PredictionBatch",
    plural = "predictionbatches",
    shortname = "pb",
    category = "pipeline",
    namespaced,
    status = "PredictionBatchStatus",
    doc = "A prediction batch the controller watches for stalls and heals",
    printcolumn(name = "Game-Date", type_ = "string", json_path = ".spec.gameDate"),
    printcolumn(name = "Expected", type_ = "integer", json_path = ".status.expected"),
    printcolumn(name = "Completed", type_ = "integer", json_path = ".status.completed"),
    printcolumn(
        name = "Pct",
        type_ = "number",
        json_path = ".status.completionPercent"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Pauses",
        type_ = "integer",
        json_path = ".status.pauses",
        priority = 1
    ),
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.source",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.source != 'firestore' || has(self.documentPath)")
        .message("documentPath is required when source is firestore")
        .field_path(".documentPath")
        .reason(Reason::FieldValueRequired),
    validation = Rule::new("self.source != 'status' || has(self.expectedPlayers)")
        .message("expectedPlayers is required when source is status")
        .field_path(".expectedPlayers")
        .reason(Reason::FieldValueRequired))]
pub struct PredictionBatchSpec {
    /// The pipeline's batch id, e.g. `batch_2026-11-24_1795480001`.
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("batchId is immutable"))]
    pub batch_id: String,
    /// Absent only for mirrored documents whose `game_date` cannot be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub game_date: Option<GameDate>,
    #[x_kube(validation = Rule::new("self == oldSelf").message("source is immutable"))]
    pub source: BatchSource,
    /// Firestore document path (`prediction_batches/<batch_id>`); for `source: firestore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 3, max = 1500),
        regex(pattern = r"^[^/\s]+/[^/\s]+(/[^/\s]+/[^/\s]+)*$")
    )]
    #[x_kube(validation = Rule::new("self == oldSelf").message("documentPath is immutable"))]
    pub document_path: Option<String>,
    /// Players the batch must cover; for `source: status` (Firestore documents carry their own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub expected_players: Option<u32>,
    /// The pipeline's correlation id for this batch, copied into healing events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub correlation_id: Option<String>,
}

/// A batch's progress as its source reports it: the workers for `source: status`, the
/// controller's Firestore mirror for `source: firestore`. The decision reads only this.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BatchReport {
    /// Players the batch must cover, when the source says (else `spec.expectedPlayers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub expected: Option<u32>,
    /// Players finished with predictions.
    #[schemars(range(min = 0, max = u32::MAX))]
    pub completed: u32,
    /// Players finished without predictions, by reason (e.g. `player_injury_out: 3`).
    // `range` cannot reach a map's values: the transform bounds them as u32.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_integers)]
    pub skipped: BTreeMap<String, u32>,
    /// Players whose last attempt failed and who are still outstanding, by the failure reason.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_integers)]
    pub failing: BTreeMap<String, u32>,
    /// A sample of the outstanding players, for the healing record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    pub missing_players: Vec<String>,
    /// When any player last finished (to the microsecond).
    // The stall threshold is measured from it: a whole-second time (`Time`) would have a batch
    // healed up to a second early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_progress_time: Option<MicroTime>,
    /// When the batch was created at its source (else the object's creation time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Time>,
    /// The source already counts the batch complete.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub complete: bool,
    /// The healing id that auto-completed the batch at its source (Firestore's
    /// `auto_completion_healing_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_completed_by: Option<String>,
    /// The source's version of what was observed (Firestore's `update_time`, exact): a heal
    /// of a Firestore batch only applies while the document is still at this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub source_version: Option<String>,
}

/// The controller's reading of a batch, as `kubectl get pb` shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum BatchState {
    /// Not yet observed.
    Pending,
    /// Workers are still finishing players.
    Progressing,
    /// No progress for the policy's stall period at or above the minimum completion.
    Stalled,
    /// Every expected player finished.
    Complete,
    /// Completed by the controller after a stall.
    AutoCompleted,
    /// Older than the policy's maximum age without completing; left alone.
    Expired,
    /// The source could not be read or made no sense; see the conditions.
    Invalid,
}

/// What the controller observed and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PredictionBatchStatus {
    /// The source's progress: written by workers for `source: status`, by the controller's
    /// mirror for `source: firestore`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<BatchReport>,
    /// Why the source could not be read (a malformed Firestore document), field by field.
    /// Written by the mirror; cleared once the source reads again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BatchState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub expected: Option<u32>,
    /// Players counted as done: finished with predictions or skipped for a permanent reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub completed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub completion_percent: Option<f64>,
    /// The instant the batch becomes (or became) stalled if nothing changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_at: Option<Time>,
    /// When the batch reached Complete, AutoCompleted or Expired. Mirrored batches are
    /// deleted one retention period (the policy's `retention`) later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// The HealingEvent of the last heal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_healing_event: Option<String>,
    /// While the batch is paused (no progress for at least the policy's `watchAfter`, at or
    /// above the minimum completion): its last progress before the pause.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<MicroTime>,
    /// Pauses that ended without a heal: the batch progressed or completed by itself.
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub pauses: u32,
    /// The longest of those pauses, from the last progress before it to the progress that
    /// ended it (as the controller first saw it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_pause: Option<PositiveDuration>,
    /// The export of the finished batch's outcome to BigQuery's `batch_outcomes`: exported
    /// with the time, or failing with the attempts, the last error and the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome_export: Option<SinkExport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Progressing, Stalled, Complete, AutoCompleted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The part of a batch's status the outcome export owns (field manager
/// `pipeline-healer-export`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeExport {
    pub outcome_export: Option<SinkExport>,
}

/// The part of a batch's status the batch reconciler owns and applies (server-side, under
/// its own field manager): exactly these fields. The report and sourceError belong to the
/// workers and the mirror, lastHealingEvent to the heal. [`BatchSummary::of`] reads them out
/// of a whole status by decoding it as this type, so the owned fields are listed nowhere but
/// here; a test checks that each is a field of [`PredictionBatchStatus`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BatchState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_percent: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stall_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused_since: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub pauses: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub longest_pause: Option<PositiveDuration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl BatchSummary {
    /// The summary `status` shows now (empty for no status).
    pub fn of(status: Option<&PredictionBatchStatus>) -> Self {
        status
            .and_then(|s| serde_json::to_value(s).ok())
            .and_then(|v| serde_json::from_value(v).ok())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_summary_field_is_a_status_field_and_reads_back_from_a_whole_status() {
        let summary = BatchSummary {
            state: Some(BatchState::Stalled),
            expected: Some(10),
            completed: Some(9),
            completion_percent: Some(90.0),
            stall_at: Some(Time("2026-11-24T10:15:00Z".parse().unwrap())),
            finished_at: Some(Time("2026-11-24T10:20:00Z".parse().unwrap())),
            paused_since: Some(MicroTime("2026-11-24T10:05:00Z".parse().unwrap())),
            pauses: 2,
            longest_pause: Some("7m30.5s".parse().unwrap()),
            observed_generation: Some(2),
            conditions: vec![Condition {
                type_: "Stalled".into(),
                status: "True".into(),
                reason: "NoProgress".into(),
                message: "m".into(),
                last_transition_time: Time("2026-11-24T10:15:00Z".parse().unwrap()),
                observed_generation: Some(2),
            }],
        };
        // Through the whole status type: a summary field it lacked would be lost here.
        let value = serde_json::to_value(&summary).unwrap();
        let mut status: PredictionBatchStatus = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&status).unwrap(), value);
        status.report = Some(BatchReport {
            completed: 9,
            ..Default::default()
        });
        status.last_healing_event = Some("h".into());
        assert_eq!(
            BatchSummary::of(Some(&status)),
            summary,
            "others' fields are not the summary's"
        );
        assert_eq!(BatchSummary::of(None), BatchSummary::default());
    }
}
