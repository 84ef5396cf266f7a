//! Which alert to send, if any, when a healing type's level is assessed: at most one message
//! per (type, level) per cooldown, an escalation to a level not alerted within the cooldown
//! at once, and one resolution message when a type that was alerted returns to normal. The
//! state lives in the cluster, so a restart sends nothing again.

use jiff::{SignedDuration, Timestamp};

use crate::api::health::{AlertLevel, AlertState};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notice {
    Alert(AlertLevel),
    Resolved { was: AlertLevel },
}

/// The notice to send (if any) for the level now, and the state after sending it.
pub fn next_notice(
    state: &AlertState,
    level: AlertLevel,
    cooldown: SignedDuration,
    now: Timestamp,
) -> (Option<Notice>, AlertState) {
    let mut next = state.clone();
    next.level = level;
    if level == AlertLevel::Normal {
        let notice = (state.level != AlertLevel::Normal && state.alerted)
            .then_some(Notice::Resolved { was: state.level });
        next.alerted = false;
        return (notice, next);
    }
    let recently_sent = state
        .last_sent
        .get(level)
        .is_some_and(|t| now.duration_since(t) < cooldown);
    // A lower level than one already alerted in this episode adds nothing.
    let below_episode = state.alerted && level < state.level;
    if recently_sent || below_episode {
        return (None, next);
    }
    next.last_sent.set(level, now);
    next.alerted = true;
    (Some(Notice::Alert(level)), next)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlertLevel::*;

    fn at(minute: i64) -> Timestamp {
        "2026-11-25T12:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minute)
    }

    const COOLDOWN: SignedDuration = SignedDuration::from_hours(1);

    /// Feeds levels at the given minutes; returns the notices sent.
    fn run(levels: &[(i64, AlertLevel)]) -> Vec<(i64, Notice)> {
        let mut state = AlertState::default();
        let mut sent = Vec::new();
        for (minute, level) in levels {
            let (notice, next) = next_notice(&state, *level, COOLDOWN, at(*minute));
            if let Some(n) = notice {
                sent.push((*minute, n));
            }
            state = next;
        }
        sent
    }

    #[test]
    fn a_level_alerts_once_per_cooldown() {
        let sent = run(&[
            (0, Yellow),
            (5, Yellow),
            (30, Yellow),
            (59, Yellow),
            (61, Yellow),
        ]);
        assert_eq!(
            sent,
            [(0, Notice::Alert(Yellow)), (61, Notice::Alert(Yellow))]
        );
    }

    #[test]
    fn an_escalation_alerts_at_once_and_a_return_to_normal_resolves() {
        let sent = run(&[(0, Yellow), (2, Red), (3, Critical), (4, Red), (10, Normal)]);
        assert_eq!(
            sent,
            [
                (0, Notice::Alert(Yellow)),
                (2, Notice::Alert(Red)),
                (3, Notice::Alert(Critical)),
                (10, Notice::Resolved { was: Red }),
            ]
        );
    }

    #[test]
    fn a_flapping_type_does_not_spam() {
        let sent = run(&[
            (0, Yellow),
            (1, Normal),
            (2, Yellow),
            (3, Normal),
            (4, Yellow),
            (5, Normal),
        ]);
        assert_eq!(
            sent,
            [
                (0, Notice::Alert(Yellow)),
                (1, Notice::Resolved { was: Yellow })
            ]
        );
    }

    #[test]
    fn a_restart_with_the_stored_state_sends_nothing_again() {
        let (_, stored) = next_notice(&AlertState::default(), Red, COOLDOWN, at(0));
        let json = serde_json::to_string(&stored).unwrap();
        let restored: AlertState = serde_json::from_str(&json).unwrap();
        assert_eq!(next_notice(&restored, Red, COOLDOWN, at(1)).0, None);
    }
}
