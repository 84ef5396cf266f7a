//! One healing action as the analysis sees it, whichever source it came from: a BigQuery row
//! (the original's nine columns, or ours) or a HealingEvent object.

use jiff::Timestamp;

use crate::api::HealingEvent;
use crate::sink::row::HealingEventRow;

#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub healing_id: String,
    /// The namespace the record was filed under (`target_namespace`); None in the
    /// original's rows. A healing id is unique only within it.
    pub namespace: Option<String>,
    pub timestamp: Timestamp,
    pub healing_type: String,
    pub trigger_reason: String,
    pub action_taken: String,
    pub success: bool,
    /// State columns as stored: JSON text, or Python repr in the original's rows.
    pub before_state: Option<String>,
    pub after_state: Option<String>,
    pub metadata: Option<String>,
    /// Absent in the original's rows: the report derives one from the trigger reason.
    pub root_cause: Option<String>,
    pub correlation_id: Option<String>,
    /// `kind/namespace/name`, or `kind/name` for a target without a namespace.
    pub target: Option<String>,
    pub dry_run: bool,
    pub outcome: Option<String>,
    /// Threshold instant to recorded outcome (the measure before outcomes were verified).
    pub heal_latency_seconds: Option<f64>,
    /// The problem detectable to noticed; None in rows written before it was recorded.
    pub time_to_detect_seconds: Option<f64>,
    /// The problem's onset to its target seen healthy (verified successes only).
    pub time_to_heal_seconds: Option<f64>,
}

#[cfg(test)]
impl Record {
    /// A succeeded `batch_cleanup` named `id` at `at` with `root_cause`, and nothing else: the
    /// analysis' unit tests change what they are about.
    pub fn sample(id: &str, at: Timestamp, root_cause: &str) -> Self {
        Self {
            healing_id: id.into(),
            namespace: Some("ns".into()),
            timestamp: at,
            healing_type: crate::api::event::BATCH_CLEANUP.into(),
            trigger_reason: "stalled".into(),
            action_taken: "marked complete".into(),
            success: true,
            before_state: None,
            after_state: None,
            metadata: None,
            root_cause: Some(root_cause.into()),
            correlation_id: None,
            target: None,
            dry_run: false,
            outcome: None,
            heal_latency_seconds: None,
            time_to_detect_seconds: None,
            time_to_heal_seconds: None,
        }
    }
}

/// How a target is named in the report.
pub fn target_key(
    kind: Option<&str>,
    namespace: Option<&str>,
    name: Option<&str>,
) -> Option<String> {
    let name = name.filter(|n| !n.is_empty())?;
    let kind = kind.filter(|k| !k.is_empty()).unwrap_or("Object");
    Some(match namespace.filter(|n| !n.is_empty()) {
        Some(ns) => format!("{kind}/{ns}/{name}"),
        None => format!("{kind}/{name}"),
    })
}

impl Record {
    /// The record of an event whose action has finished, with the same texts the BigQuery
    /// export writes (so both sources give the same report); None while it is still Pending,
    /// which is neither exported nor analysed.
    pub fn from_event(event: &HealingEvent) -> Option<Self> {
        let outcome = event.status.as_ref().and_then(|s| s.outcome)?;
        if !outcome.is_final() {
            return None;
        }
        let row = HealingEventRow::from_event(event);
        Some(Self {
            healing_id: row.healing_id,
            namespace: row.target_namespace.clone(),
            timestamp: event.spec.timestamp.0,
            healing_type: row.healing_type,
            trigger_reason: row.trigger_reason,
            action_taken: row.action_taken,
            success: row.success,
            before_state: row.before_state,
            after_state: row.after_state,
            metadata: row.metadata,
            root_cause: row.root_cause,
            correlation_id: row.correlation_id,
            target: target_key(
                row.target_kind.as_deref(),
                row.target_namespace.as_deref(),
                row.target_name.as_deref(),
            ),
            dry_run: row.dry_run.unwrap_or(false),
            outcome: row.outcome,
            heal_latency_seconds: row.heal_latency_seconds,
            time_to_detect_seconds: row.time_to_detect_seconds,
            time_to_heal_seconds: row.time_to_heal_seconds,
        })
    }

    /// Skipped on purpose (a paused type or an open circuit), not a dry run.
    pub fn circuit_skipped(&self) -> bool {
        !self.dry_run && self.outcome.as_deref() == Some("Skipped")
    }
}

/// A finished batch as the analysis sees it: a `batch_outcomes` row or a PredictionBatch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRecord {
    pub namespace: Option<String>,
    pub batch_id: String,
    /// How it finished (`completed`, `auto_completed`, `expired`, `invalid`).
    pub finished: String,
    pub finished_time: Timestamp,
    /// Pauses that ended without a heal.
    pub pauses: u64,
    pub longest_pause_seconds: Option<f64>,
}

impl BatchRecord {
    /// The record of a PredictionBatch that has finished; None for one that has not.
    pub fn from_batch(batch: &crate::api::PredictionBatch) -> Option<Self> {
        let status = batch.status.as_ref()?;
        let finished = crate::decide::batch_status::finished_how(status.state, false)?;
        Some(Self {
            namespace: batch.metadata.namespace.clone(),
            batch_id: batch.spec.batch_id.clone(),
            finished: finished.as_str().to_owned(),
            finished_time: status.finished_at.as_ref()?.0,
            pauses: u64::from(status.pauses),
            longest_pause_seconds: status
                .longest_pause
                .as_ref()
                .map(|d| d.as_std().as_secs_f64()),
        })
    }

    /// Whether its workers finished every player (no heal of ours completed it).
    pub fn completed_by_its_workers(&self) -> bool {
        self.finished == crate::decide::batch_status::Finished::Completed.as_str()
    }
}
