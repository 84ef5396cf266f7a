//! The original's `self_heal_history` documents: one per phase healing pass, and one per
//! phase that had nothing it could trigger, so the queries written against the original keep
//! working. The HealingEvents are the record that must not be lost; these are a courtesy.

use firestore::FirestoreDb;
use jiff::Timestamp;
use serde_json::json;

use crate::Error;
use crate::timeouts::FIRESTORE_REQUEST;

/// The original's collection of phase healing passes.
pub const HISTORY_COLLECTION: &str = "self_heal_history";

/// What one pass (or one "nothing to trigger" observation) of a phase did.
#[derive(Clone, Debug, PartialEq)]
pub struct PassHistory<'a> {
    pub phase: &'a str,
    pub date: String,
    pub correlation_id: &'a str,
    pub missing: &'a [String],
    pub triggered: &'a [String],
    pub failed: &'a [String],
    /// Set when nothing was triggered: every missing processor counts as skipped.
    pub skipped_reason: Option<&'a str>,
}

impl PassHistory<'_> {
    /// The original's id: date, phase and the first 8 characters of the correlation id, so a
    /// pass rewrites its own document.
    pub fn document_id(&self) -> String {
        let short: String = self.correlation_id.chars().take(8).collect();
        format!("{}_{}_{short}", self.date, self.phase)
    }

    /// The document in the original's field names, written at `now`.
    pub fn document(&self, now: Timestamp) -> serde_json::Value {
        let skipped: &[String] = if self.skipped_reason.is_some() {
            self.missing
        } else {
            &[]
        };
        json!({
            "phase": self.phase,
            "target_date": self.date,
            "missing_components": self.missing,
            "healing_result": {
                "triggered": self.triggered,
                "failed": self.failed,
                "skipped": skipped,
                "reason": self.skipped_reason,
            },
            "correlation_id": self.correlation_id,
            "timestamp": now.to_string(),
            "success": self.skipped_reason.is_none() && self.failed.is_empty(),
        })
    }
}

/// Writes (or rewrites) the pass's document.
pub async fn write(db: &FirestoreDb, pass: &PassHistory<'_>) -> Result<(), Error> {
    let document = pass.document(Timestamp::now());
    let write = db
        .fluent()
        .update()
        .in_col(HISTORY_COLLECTION)
        .document_id(pass.document_id())
        .object(&document)
        .execute::<serde_json::Value>();
    tokio::time::timeout(FIRESTORE_REQUEST, write)
        .await
        .map_err(|_| Error::Timeout("writing self_heal_history", FIRESTORE_REQUEST))?
        .map_err(|e| Error::firestore("writing self_heal_history", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_and_a_skip_read_as_the_original_wrote_them() {
        let missing = vec!["a".to_owned(), "b".to_owned()];
        let (triggered, failed) = (vec!["a".to_owned()], vec!["b".to_owned()]);
        let now: Timestamp = "2026-11-24T10:00:00Z".parse().unwrap();
        let pass = PassHistory {
            phase: "phase4",
            date: "2026-11-24".into(),
            correlation_id: "0123456789abcdef",
            missing: &missing,
            triggered: &triggered,
            failed: &failed,
            skipped_reason: None,
        };
        assert_eq!(pass.document_id(), "2026-11-24_phase4_01234567");
        let doc = pass.document(now);
        assert_eq!(doc["healing_result"]["skipped"], json!([]));
        assert_eq!(
            doc["success"],
            json!(false),
            "a failed trigger fails the pass"
        );
        let clean = PassHistory {
            failed: &[],
            ..pass.clone()
        };
        assert_eq!(clean.document(now)["success"], json!(true));
        let skip = PassHistory {
            triggered: &[],
            failed: &[],
            skipped_reason: Some("no processor has a trigger"),
            ..pass
        };
        let doc = skip.document(now);
        assert_eq!(doc["healing_result"]["skipped"], json!(missing));
        assert_eq!(doc["success"], json!(false));
        assert_eq!(doc["timestamp"], json!("2026-11-24T10:00:00Z"));
    }
}
