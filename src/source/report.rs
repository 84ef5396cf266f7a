//! A PredictionBatch's observation, read from its `status.report` (written by the workers
//! or by the Firestore mirror) with the spec and object metadata filling gaps.

use crate::api::PredictionBatch;
use crate::api::batch::BatchState;
use crate::decide::stall::BatchObservation;

/// None until the source has reported at all.
pub fn observe(batch: &PredictionBatch) -> Option<BatchObservation> {
    let status = batch.status.as_ref();
    let report = status.and_then(|s| s.report.as_ref())?;
    let widen = |m: &std::collections::BTreeMap<String, u32>| {
        m.iter().map(|(k, v)| (k.clone(), u64::from(*v))).collect()
    };
    Some(BatchObservation {
        expected: report
            .expected
            .or(batch.spec.expected_players)
            .map(i64::from),
        completed: u64::from(report.completed),
        skipped: widen(&report.skipped),
        failing: widen(&report.failing),
        created_at: report
            .created_at
            .as_ref()
            .or(batch.metadata.creation_timestamp.as_ref())
            .map(|t| t.0),
        last_progress: report.last_progress_time.as_ref().map(|t| t.0),
        // Auto-completion is recorded by the controller itself and is final.
        marked_complete: report.complete
            || status.and_then(|s| s.state) == Some(BatchState::AutoCompleted),
    })
}
