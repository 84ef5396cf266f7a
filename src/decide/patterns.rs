//! Pattern levels of one healing type in one namespace, from its recent healing actions and
//! the policy's bands: yellow = `yellow.count`+ in `yellow.window`, red = `red.count`+ in
//! `red.window`, critical = more than `failureRatePercent` failed of at least `minEvents` in
//! the critical window. The original called one failure in a tiny window critical; the
//! `minEvents` floor is what stops that.

use jiff::{SignedDuration, Timestamp};

use crate::api::health::{AlertLevel, WindowCounts};
use crate::api::policy::AlertPolicy;

/// One finished healing action as the windows see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Occurrence {
    pub at: Timestamp,
    pub success: bool,
}

/// The level now and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Assessment {
    pub level: AlertLevel,
    pub counts: WindowCounts,
    /// When an action leaves a window, so the level may drop: requeue then, not on a timer.
    pub next_change: Option<Timestamp>,
}

fn within(occurrences: &[Occurrence], window: SignedDuration, now: Timestamp) -> Vec<Occurrence> {
    let since = now.checked_sub(window).unwrap_or(Timestamp::MIN);
    occurrences
        .iter()
        .copied()
        .filter(|o| o.at > since && o.at <= now)
        .collect()
}

pub fn assess(occurrences: &[Occurrence], policy: &AlertPolicy, now: Timestamp) -> Assessment {
    let yellow_window = policy.yellow.window.as_span();
    let red_window = policy.red.window.as_span();
    let critical_window = policy.critical.window.as_span();
    let yellow = within(occurrences, yellow_window, now);
    let red = within(occurrences, red_window, now);
    let critical = within(occurrences, critical_window, now);
    let failed = critical.iter().filter(|o| !o.success).count();

    let is_critical = critical.len() >= policy.critical.min_events as usize
        && !critical.is_empty()
        && failed as f64 * 100.0 / critical.len() as f64 > policy.critical.failure_rate_percent;
    let level = if is_critical {
        AlertLevel::Critical
    } else if red.len() >= policy.red.count as usize {
        AlertLevel::Red
    } else if yellow.len() >= policy.yellow.count as usize {
        AlertLevel::Yellow
    } else {
        AlertLevel::Normal
    };

    let leaves = |set: &[Occurrence], window: SignedDuration| {
        set.iter()
            .filter_map(|o| o.at.checked_add(window).ok())
            .filter(|t| *t > now)
            .min()
    };
    let next_change = [
        leaves(&yellow, yellow_window),
        leaves(&red, red_window),
        leaves(&critical, critical_window),
    ]
    .into_iter()
    .flatten()
    .min();

    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Assessment {
        level,
        counts: WindowCounts {
            in_yellow_window: count(yellow.len()),
            in_red_window: count(red.len()),
            in_critical_window: count(critical.len()),
            failed_in_critical_window: count(failed),
        },
        next_change,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::HealingPolicySpec;

    fn policy() -> AlertPolicy {
        // The controller defaults: the original's thresholds.
        serde_json::from_value::<HealingPolicySpec>(serde_json::json!({}))
            .unwrap()
            .alerts
    }

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn ago(minutes: i64, success: bool) -> Occurrence {
        Occurrence {
            at: now() - SignedDuration::from_mins(minutes),
            success,
        }
    }

    #[test]
    fn bands_follow_the_originals_thresholds() {
        let p = policy();
        let level = |o: &[Occurrence]| assess(o, &p, now()).level;
        assert_eq!(level(&[]), AlertLevel::Normal);
        assert_eq!(level(&[ago(1, true), ago(2, true)]), AlertLevel::Normal);
        assert_eq!(
            level(&[ago(1, true), ago(2, true), ago(59, true)]),
            AlertLevel::Yellow
        );
        // Exactly one hour ago is outside the hour.
        assert_eq!(
            level(&[ago(1, true), ago(2, true), ago(60, true)]),
            AlertLevel::Normal
        );
        let ten_today: Vec<Occurrence> = (0..10).map(|i| ago(100 * i + 90, true)).collect();
        assert_eq!(level(&ten_today), AlertLevel::Red);
        assert_eq!(level(&ten_today[..9]), AlertLevel::Normal);
    }

    #[test]
    fn critical_needs_enough_events_and_a_failure_rate_above_the_limit() {
        let p = policy();
        let level = |o: &[Occurrence]| assess(o, &p, now()).level;
        // One failure alone is not critical (the original said it was).
        assert_eq!(level(&[ago(1, false)]), AlertLevel::Normal);
        // 1 of 5 failed: 20 %, not above 20 %.
        let mut five: Vec<Occurrence> = (1..=5).map(|i| ago(i, true)).collect();
        five[0].success = false;
        assert_eq!(level(&five), AlertLevel::Yellow);
        five[1].success = false;
        assert_eq!(level(&five), AlertLevel::Critical);
        let a = assess(&five, &p, now());
        assert_eq!(
            (
                a.counts.in_critical_window,
                a.counts.failed_in_critical_window
            ),
            (5, 2)
        );
    }

    #[test]
    fn the_next_change_is_when_the_oldest_action_leaves_its_window() {
        let p = policy();
        let a = assess(&[ago(10, true), ago(30, true), ago(50, true)], &p, now());
        assert_eq!(a.level, AlertLevel::Yellow);
        assert_eq!(a.next_change, Some(now() + SignedDuration::from_mins(10)));
        assert_eq!(assess(&[], &p, now()).next_change, None);
    }
}
