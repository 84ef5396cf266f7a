//! Status conditions, merged the way Kubernetes expects: a condition's
//! `lastTransitionTime` moves only when its status changes.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// A condition to set: type, whether it holds, a CamelCase reason and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions after setting `desired` on `existing`, for an object at `generation`.
/// Conditions of other types are kept as they were.
pub fn merge(
    existing: &[Condition],
    desired: &[Desired],
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing
        .iter()
        .filter(|c| !desired.iter().any(|d| d.type_ == c.type_))
        .cloned()
        .collect();
    for d in desired {
        let status = if d.status { "True" } else { "False" };
        let previous = existing.iter().find(|c| c.type_ == d.type_);
        let last_transition_time = match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(now),
        };
        out.push(Condition {
            type_: d.type_.to_owned(),
            status: status.to_owned(),
            reason: d.reason.to_owned(),
            message: d.message.clone(),
            observed_generation: generation,
            last_transition_time,
        });
    }
    out.sort_by(|a, b| a.type_.cmp(&b.type_));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = merge(
            &[],
            &[Desired::new("Stalled", false, "Progressing", "ok")],
            Some(1),
            t("2026-11-24T20:00:00Z"),
        );
        assert_eq!(
            first[0].last_transition_time,
            Time(t("2026-11-24T20:00:00Z"))
        );
        let same = merge(
            &first,
            &[Desired::new("Stalled", false, "Progressing", "still ok")],
            Some(1),
            t("2026-11-24T20:05:00Z"),
        );
        assert_eq!(
            same[0].last_transition_time,
            Time(t("2026-11-24T20:00:00Z"))
        );
        assert_eq!(same[0].message, "still ok");
        let flipped = merge(
            &same,
            &[Desired::new("Stalled", true, "NoProgress", "stalled")],
            Some(2),
            t("2026-11-24T20:15:00Z"),
        );
        assert_eq!(
            flipped[0].last_transition_time,
            Time(t("2026-11-24T20:15:00Z"))
        );
        assert_eq!(flipped[0].status, "True");
        assert_eq!(flipped[0].observed_generation, Some(2));
    }

    #[test]
    fn other_conditions_are_kept_and_order_is_stable() {
        let now = t("2026-11-24T20:00:00Z");
        let a = merge(
            &[],
            &[
                Desired::new("Stalled", false, "R", ""),
                Desired::new("Complete", false, "R", ""),
            ],
            None,
            now,
        );
        let b = merge(
            &a,
            &[Desired::new("AutoCompleted", true, "R", "")],
            None,
            now,
        );
        let types: Vec<&str> = b.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["AutoCompleted", "Complete", "Stalled"]);
    }
}
