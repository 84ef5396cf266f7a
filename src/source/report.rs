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
        // Auto-completion is recorded by the controller itself and is final: the heal
        // writes the state and the healing id together, and the id is never cleared.
        marked_complete: report.complete
            || status.and_then(|s| s.state) == Some(BatchState::AutoCompleted)
            || status.is_some_and(|s| s.last_healing_event.is_some()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_a_heal_completed_stays_complete_whatever_its_state_says() {
        let mut batch: PredictionBatch = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
            "metadata": {"name": "b1"},
            "spec": {"batchId": "b1", "source": "status", "expectedPlayers": 10},
            "status": {"state": "Stalled", "report": {"completed": 9}},
        }))
        .unwrap();
        assert!(!observe(&batch).unwrap().marked_complete);
        // A stale status write can set the state back; the healing id stays.
        batch.status.as_mut().unwrap().last_healing_event = Some("batch-cleanup-b1-1".into());
        assert!(observe(&batch).unwrap().marked_complete);
    }
}
