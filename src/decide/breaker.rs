//! The circuit breaker of one healing type: it opens when the type reaches the policy's
//! trigger level, so a type that keeps failing stops acting (its heals are recorded as
//! skipped: circuit_open); after the cooldown one trial heal is let through (half-open),
//! which closes the circuit on success and reopens it on failure.

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::patterns::AlertLevel;
use crate::api::policy::BreakerTrigger;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum Circuit {
    #[default]
    Closed,
    Open {
        since: Timestamp,
    },
    /// One trial heal is under way (named by its healing id).
    HalfOpen {
        trial: String,
    },
}

/// What a heal of this type may do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permit {
    Heal,
    /// The one trial heal after the cooldown.
    Trial,
    /// Skip: the circuit is open (until `until`), or a trial is already under way.
    Skip {
        until: Option<Timestamp>,
    },
}

fn trips(level: AlertLevel, trigger: BreakerTrigger) -> bool {
    match trigger {
        BreakerTrigger::Critical => level >= AlertLevel::Critical,
        BreakerTrigger::Red => level >= AlertLevel::Red,
    }
}

/// The circuit after an assessment of the type's level.
pub fn on_level(
    circuit: &Circuit,
    level: AlertLevel,
    trigger: BreakerTrigger,
    now: Timestamp,
) -> Circuit {
    match circuit {
        Circuit::Closed if trips(level, trigger) => Circuit::Open { since: now },
        other => other.clone(),
    }
}

pub fn permit(circuit: &Circuit, cooldown: SignedDuration, now: Timestamp) -> Permit {
    match circuit {
        Circuit::Closed => Permit::Heal,
        Circuit::Open { since } => {
            let until = since.checked_add(cooldown).unwrap_or(Timestamp::MAX);
            if now >= until {
                Permit::Trial
            } else {
                Permit::Skip { until: Some(until) }
            }
        }
        Circuit::HalfOpen { .. } => Permit::Skip { until: None },
    }
}

/// The circuit once the trial `healing_id` has started.
pub fn trial_started(healing_id: &str) -> Circuit {
    Circuit::HalfOpen {
        trial: healing_id.to_owned(),
    }
}

/// The circuit after a heal's outcome: only the trial's outcome moves a half-open circuit.
pub fn on_outcome(circuit: &Circuit, healing_id: &str, success: bool, now: Timestamp) -> Circuit {
    match circuit {
        Circuit::HalfOpen { trial } if trial == healing_id => {
            if success {
                Circuit::Closed
            } else {
                Circuit::Open { since: now }
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minute: i64) -> Timestamp {
        "2026-11-25T12:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minute)
    }

    const COOLDOWN: SignedDuration = SignedDuration::from_mins(30);

    #[test]
    fn critical_opens_and_the_cooldown_lets_one_trial_through() {
        let closed = Circuit::Closed;
        assert_eq!(
            on_level(&closed, AlertLevel::Red, BreakerTrigger::Critical, at(0)),
            closed
        );
        let open = on_level(
            &closed,
            AlertLevel::Critical,
            BreakerTrigger::Critical,
            at(0),
        );
        assert_eq!(open, Circuit::Open { since: at(0) });
        assert_eq!(
            permit(&open, COOLDOWN, at(10)),
            Permit::Skip {
                until: Some(at(30))
            }
        );
        assert_eq!(permit(&open, COOLDOWN, at(30)), Permit::Trial);
        let half = trial_started("trial-1");
        assert_eq!(
            permit(&half, COOLDOWN, at(31)),
            Permit::Skip { until: None }
        );
        // Another heal's outcome does not decide the trial.
        assert_eq!(on_outcome(&half, "other", true, at(32)), half);
        assert_eq!(on_outcome(&half, "trial-1", true, at(32)), Circuit::Closed);
        assert_eq!(
            on_outcome(&half, "trial-1", false, at(32)),
            Circuit::Open { since: at(32) }
        );
    }

    #[test]
    fn the_trigger_can_be_red() {
        let open = on_level(
            &Circuit::Closed,
            AlertLevel::Red,
            BreakerTrigger::Red,
            at(0),
        );
        assert!(matches!(open, Circuit::Open { .. }));
        assert_eq!(
            on_level(
                &Circuit::Closed,
                AlertLevel::Yellow,
                BreakerTrigger::Red,
                at(0)
            ),
            Circuit::Closed
        );
        // An open circuit stays open whatever the level: only a trial closes it.
        assert_eq!(
            on_level(&open, AlertLevel::Normal, BreakerTrigger::Red, at(5)),
            open
        );
    }

    #[test]
    fn the_state_survives_a_restart() {
        let open = Circuit::Open { since: at(0) };
        let json = serde_json::to_value(&open).unwrap();
        assert_eq!(json["state"], "Open");
        assert_eq!(serde_json::from_value::<Circuit>(json).unwrap(), open);
    }
}
