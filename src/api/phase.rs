//! `PhaseRun`: one pipeline phase for one date, with the processors that fill its tables.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::schema::{ColumnName, GameDate, TableName, bounded_integers, free_form_object};

/// One phase for one date: which tables must have rows, and how to refill them.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "healing.pipeline.dev",
    version = "v1alpha1",
    kind = "PhaseRun",
    plural = "phaseruns",
    shortname = "pr",
    category = "pipeline",
    namespaced,
    status = "PhaseRunStatus",
    doc = "One pipeline phase for one date, checked for completeness and healed by minimal re-runs",
    printcolumn(name = "Phase", type_ = "string", json_path = ".spec.phase"),
    printcolumn(name = "Date", type_ = "string", json_path = ".spec.date"),
    printcolumn(
        name = "Missing",
        type_ = "string",
        json_path = ".status.missingProcessors"
    ),
    printcolumn(name = "State", type_ = "string", json_path = ".status.state"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.processors.all(p, self.processors.exists_one(q, q.name == p.name))")
        .message("processor names must be unique")
        .field_path(".processors"),
    validation = Rule::new("self.processors.all(p, !has(p.dependsOn) || p.dependsOn.all(d, self.processors.exists(q, q.name == d)))")
        .message("every dependsOn entry must name a processor of this PhaseRun")
        .field_path(".processors"),
    validation = Rule::new("self.processors.all(p, !has(p.dependsOn) || !(p.name in p.dependsOn))")
        .message("a processor cannot depend on itself")
        .field_path(".processors")
)]
pub struct PhaseRunSpec {
    /// The phase's name, e.g. `phase2` or `phase4`.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,30}$"))]
    pub phase: String,
    /// The date the phase's tables must cover.
    pub date: GameDate,
    /// When set, the phase is only required if this table has rows for the date (games).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<TableColumn>,
    /// The processors that fill the phase's tables, with their dependencies.
    #[schemars(length(min = 1, max = 50))]
    pub processors: Vec<Processor>,
}

/// A table and the column that holds the date in it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TableColumn {
    pub table: TableName,
    pub date_column: ColumnName,
}

fn one() -> u32 {
    1
}

/// A processor: the table it fills, what it needs first, and how to run it again.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Processor {
    /// e.g. `PlayerDailyCache`.
    #[schemars(length(max = 63), regex(pattern = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"))]
    pub name: String,
    pub table: TableName,
    pub date_column: ColumnName,
    /// Rows the table needs for the date to count as complete.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = u32::MAX))]
    pub min_rows: u32,
    /// Processors whose tables must be complete before this one runs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 50), inner(length(max = 63)))]
    pub depends_on: Vec<String>,
    /// How to run it again. Absent: it cannot be re-run from here (the original's Phase 2
    /// scrapers had no endpoint); missing rows are then reported as skipped, never healed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
}

/// How a processor is run again: exactly one of `http` or `job`.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.http) != has(self.job)")
    .message("exactly one of http or job must be set"))]
pub struct Trigger {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpTrigger>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobTrigger>,
}

/// POST `{processor, date, correlation_id}` to a URL.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HttpTrigger {
    /// URL template; `{date}` and `{processor}` are substituted.
    #[schemars(length(max = 2048), regex(pattern = r"^https?://[^\s]+$"))]
    pub url: String,
    /// When set, a Google ID token for this audience is sent as Bearer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub audience: Option<String>,
}

/// Create a Job, owned by the PhaseRun. The pass waits for a running Job however long it
/// runs (a second one would race it): bound it with the template's `activeDeadlineSeconds`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobTrigger {
    /// A `batch/v1` JobTemplateSpec (`metadata` and `spec`). Checked when the Job is built,
    /// not on admission: a full Pod schema would make this CRD many times larger.
    #[schemars(schema_with = "free_form_object")]
    pub template: serde_json::Value,
}

/// The controller's reading of a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum PhaseState {
    Pending,
    /// Every table has its rows.
    Complete,
    /// No games on the date: nothing is required.
    NotRequired,
    /// Re-runs are under way.
    Healing,
    /// Counts could not be read; nothing is triggered until they can.
    ObservationFailed,
    /// Attempts ran out with tables still missing rows.
    GaveUp,
    /// The spec cannot be acted on (e.g. a dependency cycle); see the conditions.
    Invalid,
    /// Rows are missing but nothing can re-run them (no trigger configured).
    Skipped,
}

/// What the controller observed, planned and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseRunStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<PhaseState>,
    /// Rows for the date, per table.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub record_counts: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_processors: Vec<String>,
    /// When each processor now missing rows was first observed missing: the onset its
    /// re-runs' time to heal runs from. A processor leaves the map once its rows are seen.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub missing_since: BTreeMap<String, Time>,
    /// The minimal re-run plan: waves of processors, each wave after the one before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<Vec<String>>,
    /// Index into `plan` of the wave under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub current_wave: Option<u32>,
    /// When the wave under way was (last) triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave_triggered_at: Option<Time>,
    /// Looks at the wave under way since it was triggered (the backoff's exponent).
    #[serde(default)]
    #[schemars(range(min = 0, max = u32::MAX))]
    pub checks: u32,
    /// Processors that need a re-run but cannot have one, and why.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub blocked: BTreeMap<String, String>,
    /// Triggers per processor so far.
    // `range` cannot reach a map's values: the transform bounds them as u32.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_integers)]
    pub attempts: BTreeMap<String, u32>,
    /// The correlation id of the healing pass under way or last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_observed_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Complete, NotRequired, Healing, ObservationFailed, GaveUp, Skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl PhaseRun {
    /// The PhaseRun `<name>-<date>` from a template: a PhaseRun spec in YAML (or JSON)
    /// without its `date`. The spec is validated as the API server would (names, tables).
    pub fn from_template(
        name: &str,
        template: &str,
        date: jiff::civil::Date,
    ) -> Result<Self, crate::Error> {
        let invalid = |message: String| crate::Error::Invalid {
            what: format!("PhaseRun template {name}"),
            message,
        };
        let mut spec: serde_json::Value =
            serde_yaml::from_str(template).map_err(|e| invalid(e.to_string()))?;
        let fields = spec
            .as_object_mut()
            .ok_or_else(|| invalid("the template is not a mapping".into()))?;
        if fields.contains_key("date") {
            return Err(invalid(
                "the template must not set `date`: each run sets it".into(),
            ));
        }
        fields.insert("date".into(), serde_json::Value::String(date.to_string()));
        let spec: PhaseRunSpec =
            serde_json::from_value(spec).map_err(|e| invalid(e.to_string()))?;
        Ok(PhaseRun::new(&format!("{name}-{date}"), spec))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = "
phase: phase4
processors:
  - name: PlayerDailyCache
    table: nba_predictions.player_daily_cache
    dateColumn: game_date
    trigger: {http: {url: 'https://phase4.example.run.app/process-date'}}
";

    #[test]
    fn a_template_becomes_the_days_phase_run() {
        let date = jiff::civil::date(2026, 11, 24);
        let run = PhaseRun::from_template("phase4", TEMPLATE, date).unwrap();
        assert_eq!(run.metadata.name.as_deref(), Some("phase4-2026-11-24"));
        assert_eq!(run.spec.date.to_string(), "2026-11-24");
        assert_eq!(run.spec.processors[0].min_rows, 1);
    }

    #[test]
    fn a_template_with_a_date_or_a_hostile_table_is_refused() {
        let date = jiff::civil::date(2026, 11, 24);
        let dated = format!("date: '2026-01-01'\n{TEMPLATE}");
        assert!(PhaseRun::from_template("p", &dated, date).is_err());
        let hostile = TEMPLATE.replace("nba_predictions.player_daily_cache", "x.y`; DROP TABLE z");
        let error = PhaseRun::from_template("p", &hostile, date).unwrap_err();
        assert!(error.to_string().contains("table name"), "{error}");
    }
}
