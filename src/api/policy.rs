//! `HealingPolicy`: every threshold the controller acts on, managed through GitOps.
//!
//! Every field has a default in the schema, so an empty spec is the original system's
//! behaviour and `kubectl diff` after the API server's defaulting shows no drift. The same
//! serde defaults are the controller's built-in policy for namespaces without one.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::health::{AlertLevel, TypeHealth};
use super::schema::{PositiveDuration, SNAKE_CASE_PATTERN, bounded_integers};

/// The original's permanent skip reasons: a player skipped for one of these counts as done.
pub const ORIGINAL_PERMANENT_SKIP_REASONS: [&str; 9] = [
    "no_features",
    "player_not_found",
    "no_prop_lines",
    "game_not_found",
    "player_inactive",
    "no_historical_data",
    "player_injury_out",
    "invalid_features",
    "quality_too_low",
];

/// Thresholds for a namespace; absent fields take the original system's values.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "healing.pipeline.dev",
    version = "v1alpha1",
    kind = "HealingPolicy",
    plural = "healingpolicies",
    shortname = "hp",
    category = "pipeline",
    namespaced,
    status = "HealingPolicyStatus",
    doc = "Healing thresholds for the namespace; absent fields take the defaults",
    printcolumn(name = "Stall-After", type_ = "string", json_path = ".spec.stallAfter"),
    printcolumn(
        name = "Min-Pct",
        type_ = "number",
        json_path = ".spec.minCompletionPercent"
    ),
    printcolumn(name = "Dry-Run", type_ = "boolean", json_path = ".spec.dryRun"),
    printcolumn(name = "Level", type_ = "string", json_path = ".status.level"),
    printcolumn(
        name = "Open-Circuits",
        type_ = "string",
        json_path = ".status.openCircuits"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(self.watchAfter) || duration(self.watchAfter) <= duration(self.stallAfter)")
        .message("watchAfter must not be longer than stallAfter (a longer pause is a stall, healed)")
        .field_path(".watchAfter")
)]
pub struct HealingPolicySpec {
    /// A batch with no progress for this long (at or above the minimum completion) is stalled.
    #[serde(default = "defaults::stall_after")]
    pub stall_after: PositiveDuration,
    /// A batch with no progress for this long (at or above the minimum completion) is
    /// watched as paused: if it then progresses or completes without a heal, it recovered by
    /// itself (counted in its status, `batch_outcomes` and a metric). Absent: half of
    /// `stallAfter`. At most `stallAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_after: Option<PositiveDuration>,
    /// Completion at or above which a stalled batch is completed automatically.
    #[serde(default = "defaults::min_completion_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub min_completion_percent: f64,
    /// Batches older than this are expired and left alone.
    #[serde(default = "defaults::max_age")]
    pub max_age: PositiveDuration,
    /// Skip reasons that count a player as done.
    #[serde(default = "defaults::permanent_skip_reasons")]
    #[schemars(length(max = 64), inner(regex(pattern = SNAKE_CASE_PATTERN)))]
    pub permanent_skip_reasons: Vec<String>,
    /// How long finished batches and exported healing events are kept.
    #[serde(default = "defaults::retention")]
    pub retention: PositiveDuration,
    /// Record would-heal events and change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Healing types not acted on (recorded as skipped).
    #[serde(default)]
    #[schemars(length(max = 64), inner(regex(pattern = SNAKE_CASE_PATTERN)))]
    pub paused_types: Vec<String>,
    #[serde(default)]
    pub alerts: AlertPolicy,
    #[serde(default)]
    pub circuit_breaker: CircuitBreakerPolicy,
    #[serde(default)]
    pub phase_healing: PhaseHealingPolicy,
}

/// Pattern alert bands per healing type, and how often one may repeat.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.yellow.count < self.red.count")
        .message("yellow.count must be less than red.count")
        .field_path(".yellow.count"),
    validation = Rule::new("duration(self.yellow.window) <= duration(self.red.window)")
        .message("yellow.window must not be longer than red.window")
        .field_path(".yellow.window")
)]
pub struct AlertPolicy {
    #[serde(default = "defaults::yellow")]
    pub yellow: CountBand,
    #[serde(default = "defaults::red")]
    pub red: CountBand,
    #[serde(default)]
    pub critical: FailureRateBand,
    /// The same (type, level) alerts at most once per cooldown.
    #[serde(default = "defaults::alert_cooldown")]
    pub cooldown: PositiveDuration,
}

/// `count` or more events of one type within `window`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CountBand {
    #[schemars(range(min = 1, max = 1000000))]
    pub count: u32,
    pub window: PositiveDuration,
}

/// More than `failureRatePercent` of at least `minEvents` events within `window` failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureRateBand {
    #[serde(default = "defaults::failure_rate_percent")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub failure_rate_percent: f64,
    #[serde(default = "defaults::min_events")]
    #[schemars(range(min = 1, max = 1000000))]
    pub min_events: u32,
    #[serde(default = "defaults::one_hour")]
    pub window: PositiveDuration,
}

/// Which alert level opens a healing type's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum BreakerTrigger {
    Critical,
    Red,
}

/// Stop healing a type that keeps failing; try once more after the cooldown.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreakerPolicy {
    #[serde(default = "defaults::true_")]
    pub enabled: bool,
    #[serde(default = "defaults::breaker_open_on")]
    pub open_on: BreakerTrigger,
    /// How long the circuit stays open before one trial heal.
    #[serde(default = "defaults::breaker_cooldown")]
    pub cooldown: PositiveDuration,
}

/// Limits for phase re-runs.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.initialBackoff) <= duration(self.maxBackoff)")
    .message("initialBackoff must not exceed maxBackoff")
    .field_path(".initialBackoff"))]
pub struct PhaseHealingPolicy {
    /// Triggers per processor per PhaseRun before giving up.
    #[serde(default = "defaults::max_attempts")]
    #[schemars(range(min = 1, max = 100))]
    pub max_attempts: u32,
    /// First wait for a triggered wave's tables to fill; doubles up to `maxBackoff`.
    #[serde(default = "defaults::initial_backoff")]
    pub initial_backoff: PositiveDuration,
    #[serde(default = "defaults::max_backoff")]
    pub max_backoff: PositiveDuration,
}

/// The namespace's healing health: pattern levels, alert state and circuits per healing
/// type. Kept here so a restart or a second replica alerts nothing twice.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealingPolicyStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The highest alert level of any healing type.
    #[serde(default)]
    pub level: AlertLevel,
    /// Healing types whose circuit is open or half-open: their heals are skipped.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open_circuits: Vec<String>,
    /// Per healing type; types with nothing to remember are left out.
    // Its window counts are u32 fields of `health::WindowCounts`: the transform
    // bounds every integer of the map's values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(transform = bounded_integers)]
    pub healing_types: BTreeMap<String, TypeHealth>,
    /// `Alerting` (a type above normal) and `CircuitOpen` (a type's heals are skipped).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

impl Default for HealingPolicySpec {
    fn default() -> Self {
        Self {
            stall_after: defaults::stall_after(),
            watch_after: None,
            min_completion_percent: defaults::min_completion_percent(),
            max_age: defaults::max_age(),
            permanent_skip_reasons: defaults::permanent_skip_reasons(),
            retention: defaults::retention(),
            dry_run: false,
            paused_types: Vec::new(),
            alerts: AlertPolicy::default(),
            circuit_breaker: CircuitBreakerPolicy::default(),
            phase_healing: PhaseHealingPolicy::default(),
        }
    }
}

impl Default for AlertPolicy {
    fn default() -> Self {
        Self {
            yellow: defaults::yellow(),
            red: defaults::red(),
            critical: FailureRateBand::default(),
            cooldown: defaults::alert_cooldown(),
        }
    }
}

impl Default for FailureRateBand {
    fn default() -> Self {
        Self {
            failure_rate_percent: defaults::failure_rate_percent(),
            min_events: defaults::min_events(),
            window: defaults::one_hour(),
        }
    }
}

impl Default for CircuitBreakerPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            open_on: defaults::breaker_open_on(),
            cooldown: defaults::breaker_cooldown(),
        }
    }
}

impl Default for PhaseHealingPolicy {
    fn default() -> Self {
        Self {
            max_attempts: defaults::max_attempts(),
            initial_backoff: defaults::initial_backoff(),
            max_backoff: defaults::max_backoff(),
        }
    }
}

/// The original system's thresholds (reference sections 2 and 3), in one place: serde fills
/// absent fields from here, the CRD schema publishes them as defaults, and the controller
/// uses them for namespaces without a policy.
mod defaults {
    use super::{BreakerTrigger, CountBand, ORIGINAL_PERMANENT_SKIP_REASONS, PositiveDuration};

    fn duration(text: &str) -> PositiveDuration {
        // Literal constants below; covered by the `defaults_parse` test.
        text.parse()
            .unwrap_or_else(|e| panic!("built-in default: {e}"))
    }
    pub fn stall_after() -> PositiveDuration {
        duration("15m")
    }
    pub fn min_completion_percent() -> f64 {
        90.0
    }
    pub fn max_age() -> PositiveDuration {
        duration("24h")
    }
    pub fn permanent_skip_reasons() -> Vec<String> {
        ORIGINAL_PERMANENT_SKIP_REASONS
            .iter()
            .map(|r| r.to_string())
            .collect()
    }
    pub fn retention() -> PositiveDuration {
        duration("720h")
    }
    pub fn one_hour() -> PositiveDuration {
        duration("1h")
    }
    pub fn yellow() -> CountBand {
        CountBand {
            count: 3,
            window: one_hour(),
        }
    }
    pub fn red() -> CountBand {
        CountBand {
            count: 10,
            window: duration("24h"),
        }
    }
    pub fn failure_rate_percent() -> f64 {
        20.0
    }
    pub fn min_events() -> u32 {
        5
    }
    pub fn alert_cooldown() -> PositiveDuration {
        one_hour()
    }
    pub fn true_() -> bool {
        true
    }
    pub fn breaker_open_on() -> BreakerTrigger {
        BreakerTrigger::Critical
    }
    pub fn breaker_cooldown() -> PositiveDuration {
        duration("30m")
    }
    pub fn max_attempts() -> u32 {
        3
    }
    pub fn initial_backoff() -> PositiveDuration {
        duration("30s")
    }
    pub fn max_backoff() -> PositiveDuration {
        duration("10m")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_parse() {
        let p = HealingPolicySpec::default();
        assert_eq!(p.stall_after.as_std().as_secs(), 15 * 60);
        assert_eq!(p.max_age.as_std().as_secs(), 24 * 3600);
        assert_eq!(p.alerts.red.window.as_std().as_secs(), 24 * 3600);
        assert_eq!(p.permanent_skip_reasons.len(), 9);
    }

    #[test]
    fn an_empty_spec_is_the_default_policy() {
        let from_empty: HealingPolicySpec = serde_json::from_str("{}").unwrap();
        assert_eq!(from_empty, HealingPolicySpec::default());
    }

    #[test]
    fn partial_nested_objects_keep_their_other_defaults() {
        let p: HealingPolicySpec =
            serde_json::from_str(r#"{"alerts":{"yellow":{"count":2,"window":"30m"}}}"#).unwrap();
        assert_eq!(p.alerts.yellow.count, 2);
        assert_eq!(p.alerts.red, defaults::red());
    }
}
