//! The BigQuery row of a healing event, as `schemas/healing_events.json` defines the table.
//!
//! The first nine columns are the original system's, with the same names, types and modes,
//! so its queries keep working; the rest are nullable additions. JSON columns hold JSON text
//! (the original wrote Python repr there).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

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
    pub target_namespace: Option<String>,
    pub target_name: Option<String>,
    pub dry_run: Option<bool>,
    pub outcome: Option<String>,
    pub heal_latency_seconds: Option<f64>,
}

/// A BigQuery column: name, type and mode, as in a table schema file.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Column {
    pub name: String,
    pub r#type: String,
    pub mode: String,
}

impl HealingEventRow {
    /// The table columns this type serialises to, derived from its JSON Schema, so the schema
    /// file can be checked against the code rather than kept in step by hand.
    pub fn columns() -> Vec<Column> {
        let schema =
            serde_json::to_value(schemars::schema_for!(HealingEventRow)).unwrap_or_default();
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
}
