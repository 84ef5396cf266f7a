//! The circuit breaker of one healing type: it opens when the type reaches the policy's
//! trigger level, so a type that keeps failing stops acting (its heals are recorded as
//! skipped: circuit_open); after the cooldown one trial heal is let through (half-open),
//! which closes the circuit on success and reopens it on failure.

use jiff::{SignedDuration, Timestamp};

use crate::api::health::{AlertLevel, Circuit, CircuitState};
use crate::api::policy::BreakerTrigger;

/// What a heal of this type may do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Permit {
    Heal,
    /// The one trial heal after the cooldown.
    Trial,
    /// Skip: the circuit is open (until `until`), or a trial is already under way (None).
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

/// The circuit after an assessment of the type's level (over the actions since the circuit
/// last closed).
pub fn on_level(
    circuit: &Circuit,
    level: AlertLevel,
    trigger: BreakerTrigger,
    now: Timestamp,
) -> Circuit {
    if circuit.state == CircuitState::Closed && trips(level, trigger) {
        Circuit::in_state(CircuitState::Open, now)
    } else {
        circuit.clone()
    }
}

pub fn permit(circuit: &Circuit, cooldown: SignedDuration, now: Timestamp) -> Permit {
    match circuit.state {
        CircuitState::Closed => Permit::Heal,
        CircuitState::Open => match circuit.reopens_at(cooldown) {
            Some(until) if now < until => Permit::Skip { until: Some(until) },
            _ => Permit::Trial,
        },
        CircuitState::HalfOpen => Permit::Skip { until: None },
    }
}

/// The circuit once the trial `healing_id` has started.
pub fn trial_started(healing_id: &str, now: Timestamp) -> Circuit {
    Circuit {
        trial: Some(healing_id.to_owned()),
        ..Circuit::in_state(CircuitState::HalfOpen, now)
    }
}

/// The circuit after the trial's outcome: closed on success, open again on failure.
pub fn on_trial_outcome(circuit: &Circuit, success: bool, now: Timestamp) -> Circuit {
    match (circuit.state, success) {
        (CircuitState::HalfOpen, true) => Circuit::in_state(CircuitState::Closed, now),
        (CircuitState::HalfOpen, false) => Circuit::in_state(CircuitState::Open, now),
        _ => circuit.clone(),
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
        let closed = Circuit::default();
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
        assert_eq!(open.state, CircuitState::Open);
        assert_eq!(
            permit(&open, COOLDOWN, at(10)),
            Permit::Skip {
                until: Some(at(30))
            }
        );
        assert_eq!(permit(&open, COOLDOWN, at(30)), Permit::Trial);
        let half = trial_started("trial-1", at(31));
        assert_eq!(
            permit(&half, COOLDOWN, at(31)),
            Permit::Skip { until: None }
        );
        let closed_again = on_trial_outcome(&half, true, at(32));
        assert_eq!(closed_again.state, CircuitState::Closed);
        assert_eq!(closed_again.since(), Some(at(32)));
        let reopened = on_trial_outcome(&half, false, at(32));
        assert_eq!(
            (reopened.state, reopened.since()),
            (CircuitState::Open, Some(at(32)))
        );
        assert_eq!(
            permit(&reopened, COOLDOWN, at(40)),
            Permit::Skip {
                until: Some(at(62))
            }
        );
    }

    #[test]
    fn the_trigger_can_be_red() {
        let open = on_level(
            &Circuit::default(),
            AlertLevel::Red,
            BreakerTrigger::Red,
            at(0),
        );
        assert_eq!(open.state, CircuitState::Open);
        assert_eq!(
            on_level(
                &Circuit::default(),
                AlertLevel::Yellow,
                BreakerTrigger::Red,
                at(0)
            ),
            Circuit::default()
        );
        // An open circuit stays open whatever the level: only a trial closes it.
        assert_eq!(
            on_level(&open, AlertLevel::Normal, BreakerTrigger::Red, at(5)),
            open
        );
        // An outcome outside a trial changes nothing.
        assert_eq!(on_trial_outcome(&open, true, at(6)), open);
    }

    #[test]
    fn the_state_survives_a_restart() {
        let half = trial_started("trial-1", at(0));
        let json = serde_json::to_value(&half).unwrap();
        assert_eq!(json["state"], "HalfOpen");
        assert_eq!(json["trial"], "trial-1");
        assert_eq!(serde_json::from_value::<Circuit>(json).unwrap(), half);
    }
}
