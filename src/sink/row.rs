//! The BigQuery rows: a healing event, as `schemas/healing_events.json` defines the table,
//! and a finished batch, as `schemas/batch_outcomes.json` does.
//!
//! The events table's first nine columns are the original system's, with the same names,
//! types and modes, so its queries keep working; the rest are nullable additions. JSON
//! columns hold JSON text (the original wrote Python repr there).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use jiff::Timestamp;

use crate::api::{HealingEvent, PredictionBatch};
use crate::decide::batch_status::Finished;
use crate::decide::pause::Pauses;

/// One row of `<dataset>.healing_events`. Field order follows the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HealingEventRow {
    pub healing_id: String,
    /// RFC 3339 with microseconds, a form BigQuery's streaming insert accepts.
    #[schemars(extend("format" = "date-time"))]
    pub timestamp: String,
    pub healing_type: String,
    pub trigger_reason: String,
    pub action_taken: String,
    pub before_state: Option<String>,
    pub after_state: Option<String>,
    pub success: bool,
    pub metadata: Option<String>,
    pub correlation_id: Option<String>,
    pub root_cause: Option<String>,
    pub target_kind: Option<String>,
    /// The HealingEvent's namespace (see [`super::record_namespace`]).
    pub target_namespace: Option<String>,
    pub target_name: Option<String>,
    pub dry_run: Option<bool>,
    pub outcome: Option<String>,
    pub heal_latency_seconds: Option<f64>,
    /// When the problem began (a batch's last progress, a phase's first observation of the
    /// missing rows).
    #[schemars(extend("format" = "date-time"))]
    pub onset_time: Option<String>,
    /// When the controller noticed it.
    #[schemars(extend("format" = "date-time"))]
    pub detected_time: Option<String>,
    /// When the target was seen healthy after the action (a verified success).
    #[schemars(extend("format" = "date-time"))]
    pub healed_time: Option<String>,
    pub time_to_detect_seconds: Option<f64>,
    pub time_to_heal_seconds: Option<f64>,
}

/// A BigQuery column: name, type and mode, as in a table schema file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub name: String,
    pub r#type: String,
    pub mode: String,
}

/// Microseconds, as BigQuery keeps them, in the RFC 3339 form its streaming insert takes.
pub fn bigquery_timestamp(t: jiff::Timestamp) -> String {
    t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

impl HealingEventRow {
    /// The row's insertId: namespace and healing id, as the Firestore document's id. BigQuery
    /// takes at most 128 characters there, and a namespace and a healing id may hold 317, so a
    /// longer key keeps its start and ends in a hash of the whole (fixed, like the key).
    pub fn insert_id(&self) -> String {
        bounded_insert_id(super::record_key(
            self.target_namespace.as_deref(),
            &self.healing_id,
        ))
    }

    /// The row of an event; JSON columns get JSON text.
    pub fn from_event(event: &HealingEvent) -> Self {
        let spec = &event.spec;
        let status = event.status.as_ref();
        let json_text = |v: Option<&serde_json::Value>| v.map(serde_json::Value::to_string);
        Self {
            healing_id: spec.healing_id.clone(),
            timestamp: bigquery_timestamp(spec.timestamp.0),
            healing_type: spec.healing_type.clone(),
            trigger_reason: spec.trigger_reason.clone(),
            action_taken: spec.action_taken.clone(),
            before_state: json_text(spec.before_state.as_ref()),
            after_state: json_text(status.and_then(|s| s.after_state.as_ref())),
            success: status.and_then(|s| s.success).unwrap_or(false),
            metadata: json_text(spec.details.as_ref()),
            correlation_id: spec.correlation_id.clone(),
            root_cause: Some(event.root_cause().to_owned()),
            target_kind: Some(spec.target.kind.clone()),
            target_namespace: super::record_namespace(event),
            target_name: Some(spec.target.name.clone()),
            dry_run: Some(spec.dry_run),
            outcome: status.and_then(|s| s.outcome).map(|o| format!("{o:?}")),
            heal_latency_seconds: status.and_then(|s| s.heal_latency_seconds),
            onset_time: spec.onset_time.as_ref().map(|t| bigquery_timestamp(t.0)),
            detected_time: spec.detected_time.as_ref().map(|t| bigquery_timestamp(t.0)),
            healed_time: status
                .and_then(|s| s.healed_time.as_ref())
                .map(|t| bigquery_timestamp(t.0)),
            time_to_detect_seconds: status.and_then(|s| s.time_to_detect_seconds),
            time_to_heal_seconds: status.and_then(|s| s.time_to_heal_seconds),
        }
    }

    /// The table columns this type serialises to.
    pub fn columns() -> Vec<Column> {
        columns_of::<Self>()
    }
}

/// BigQuery takes at most 128 characters as an insertId, and a namespace and a name may hold
/// 317, so a longer key keeps its start and ends in a hash of the whole (fixed, like the key).
fn bounded_insert_id(key: String) -> String {
    const MAX: usize = 128;
    if key.len() <= MAX {
        return key;
    }
    let hash = format!("~{:016x}", crate::decide::naming::fnv1a(&[&key]));
    let start: String = key.chars().take(MAX - hash.len()).collect();
    start + &hash
}

/// One row of `<dataset>.batch_outcomes`: how one batch finished, with its pauses. Field
/// order follows the table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct BatchOutcomeRow {
    pub batch_id: String,
    #[schemars(extend("format" = "date"))]
    pub game_date: Option<String>,
    /// The PredictionBatch's namespace.
    pub namespace: String,
    /// completed, auto_completed, expired or invalid.
    pub finished: String,
    #[schemars(extend("format" = "date-time"))]
    pub finished_time: String,
    pub final_percent: Option<f64>,
    pub expected_players: Option<i64>,
    pub completed_players: Option<i64>,
    /// Pauses of at least watchAfter that ended without a heal.
    pub pause_count: i64,
    pub longest_pause_seconds: Option<f64>,
    /// The heal that completed the batch, if one did.
    pub healing_id: Option<String>,
}

impl BatchOutcomeRow {
    /// The row of `batch`, finished `how` at `finished_time`.
    pub fn from_batch(batch: &PredictionBatch, how: Finished, finished_time: Timestamp) -> Self {
        let status = batch.status.as_ref();
        let pauses = Pauses::of(status);
        Self {
            batch_id: batch.spec.batch_id.clone(),
            game_date: batch.spec.game_date.as_ref().map(ToString::to_string),
            namespace: batch.metadata.namespace.clone().unwrap_or_default(),
            finished: how.as_str().to_owned(),
            finished_time: bigquery_timestamp(finished_time),
            final_percent: status.and_then(|s| s.completion_percent),
            expected_players: status.and_then(|s| s.expected).map(i64::from),
            completed_players: status.and_then(|s| s.completed).map(i64::from),
            pause_count: i64::from(pauses.recovered),
            longest_pause_seconds: pauses.longest.map(|d| d.as_secs_f64()),
            healing_id: crate::decide::batch_status::healed_by(batch),
        }
    }

    /// Namespace and batch id: one row per batch however often it is sent.
    pub fn insert_id(&self) -> String {
        bounded_insert_id(super::record_key(Some(&self.namespace), &self.batch_id))
    }

    /// The table columns this type serialises to.
    pub fn columns() -> Vec<Column> {
        columns_of::<Self>()
    }
}

/// The table columns `T` serialises to, derived from its JSON Schema, so a schema file can be
/// checked against the code rather than kept in step by hand.
fn columns_of<T: JsonSchema>() -> Vec<Column> {
    let schema = serde_json::to_value(schemars::schema_for!(T)).unwrap_or_default();
    let required: Vec<&str> = schema["required"]
        .as_array()
        .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, prop)| {
            // Option<T> appears as `type: [T, "null"]`.
            let types: Vec<&str> = match &prop["type"] {
                serde_json::Value::String(t) => vec![t.as_str()],
                serde_json::Value::Array(ts) => ts.iter().filter_map(|t| t.as_str()).collect(),
                _ => Vec::new(),
            };
            let base = types.iter().find(|t| **t != "null").copied().unwrap_or("");
            let bq_type = match (base, prop["format"].as_str()) {
                ("string", Some("date-time")) => "TIMESTAMP",
                ("string", Some("date")) => "DATE",
                ("string", _) => "STRING",
                ("boolean", _) => "BOOLEAN",
                ("number", _) => "FLOAT",
                ("integer", _) => "INTEGER",
                _ => "UNKNOWN",
            };
            let mode = if required.contains(&name.as_str()) {
                "REQUIRED"
            } else {
                "NULLABLE"
            };
            Column {
                name: name.clone(),
                r#type: bq_type.into(),
                mode: mode.into(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(namespace: &str, healing_id: &str) -> HealingEventRow {
        HealingEventRow {
            healing_id: healing_id.into(),
            timestamp: String::new(),
            healing_type: String::new(),
            trigger_reason: String::new(),
            action_taken: String::new(),
            before_state: None,
            after_state: None,
            success: true,
            metadata: None,
            correlation_id: None,
            root_cause: None,
            target_kind: None,
            target_namespace: Some(namespace.into()),
            target_name: None,
            dry_run: None,
            outcome: None,
            heal_latency_seconds: None,
            onset_time: None,
            detected_time: None,
            healed_time: None,
            time_to_detect_seconds: None,
            time_to_heal_seconds: None,
        }
    }

    #[test]
    fn insert_ids_name_the_namespace_and_fit_bigquerys_limit() {
        assert_eq!(row("pipeline", "retry-1").insert_id(), "pipeline.retry-1");
        let long = "x".repeat(253);
        let (a, b) = (
            row("ns-a", &long).insert_id(),
            row("ns-b", &long).insert_id(),
        );
        assert_eq!(a.len(), 128);
        assert!(a.starts_with("ns-a.xxx"));
        assert_ne!(a, b);
        assert_eq!(a, row("ns-a", &long).insert_id());
    }
}
