//! The stored health of a namespace's healing types, as a HealingPolicy's status (or the
//! health ConfigMap) holds it: the pattern level and its counts, the alert state, and the
//! circuit. Schema types only; `decide::health`, `decide::alerts` and `decide::breaker` step
//! them forward.
//!
//! The circuit is a flat struct rather than an enum with data: it is kept in a CRD status,
//! whose schema must be structural.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// One healing type's stored health.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TypeHealth {
    #[serde(flatten)]
    pub alert: AlertState,
    #[serde(default)]
    pub counts: WindowCounts,
    #[serde(default)]
    pub circuit: Circuit,
}

/// Ordered: a higher level is an escalation.
#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum AlertLevel {
    #[default]
    Normal,
    Yellow,
    Red,
    Critical,
}

impl AlertLevel {
    /// The level's name, as the status, Events and messages spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertLevel::Normal => "Normal",
            AlertLevel::Yellow => "Yellow",
            AlertLevel::Red => "Red",
            AlertLevel::Critical => "Critical",
        }
    }
}

/// The numbers behind a level (for the alert text and the status).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WindowCounts {
    /// Actions within the yellow window.
    pub in_yellow_window: u32,
    /// Actions within the red window.
    pub in_red_window: u32,
    /// Actions and failures within the critical window.
    pub in_critical_window: u32,
    pub failed_in_critical_window: u32,
}

/// One healing type's alert state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertState {
    /// The level at the last assessment.
    #[serde(default)]
    pub level: AlertLevel,
    /// When each level was last alerted.
    #[serde(default)]
    pub last_sent: LastSent,
    /// Whether this episode (since the last return to normal) sent an alert, so its end is
    /// worth a resolution message.
    #[serde(default)]
    pub alerted: bool,
}

/// When each alerting level last sent a message.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastSent {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub yellow: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub red: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub critical: Option<Time>,
}

impl LastSent {
    pub fn get(&self, level: AlertLevel) -> Option<Timestamp> {
        let time = match level {
            AlertLevel::Normal => None,
            AlertLevel::Yellow => self.yellow.as_ref(),
            AlertLevel::Red => self.red.as_ref(),
            AlertLevel::Critical => self.critical.as_ref(),
        };
        time.map(|t| t.0)
    }

    pub fn set(&mut self, level: AlertLevel, at: Timestamp) {
        let at = Some(Time(at));
        match level {
            AlertLevel::Normal => {}
            AlertLevel::Yellow => self.yellow = at,
            AlertLevel::Red => self.red = at,
            AlertLevel::Critical => self.critical = at,
        }
    }
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum CircuitState {
    #[default]
    Closed,
    Open,
    /// One trial heal is under way.
    HalfOpen,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Circuit {
    #[serde(default)]
    pub state: CircuitState,
    /// When the circuit entered its state. For a closed circuit: only actions after this
    /// count towards opening it again, so the failures that opened it do not reopen it the
    /// moment a trial closes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Time>,
    /// The healing id of the trial heal (half-open only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<String>,
}

impl Circuit {
    pub fn in_state(state: CircuitState, since: Timestamp) -> Self {
        Self {
            state,
            since: Some(Time(since)),
            trial: None,
        }
    }

    pub fn since(&self) -> Option<Timestamp> {
        self.since.as_ref().map(|t| t.0)
    }

    /// When an open circuit lets its trial through.
    pub fn reopens_at(&self, cooldown: SignedDuration) -> Option<Timestamp> {
        match self.state {
            CircuitState::Open => Some(
                self.since()
                    .and_then(|s| s.checked_add(cooldown).ok())
                    .unwrap_or(Timestamp::MIN),
            ),
            _ => None,
        }
    }
}
