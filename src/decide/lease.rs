//! Leader election on a coordination.k8s.io Lease: who may take the lease now.

use jiff::{SignedDuration, Timestamp};

/// The lease as last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseView {
    pub holder: Option<String>,
    pub renewed_at: Option<Timestamp>,
    pub duration: SignedDuration,
}

/// Whether `me` may write itself into the lease at `now`: it holds it already, nobody does,
/// or the holder has not renewed it within its duration (it died or lost the API server).
pub fn may_take(lease: Option<&LeaseView>, me: &str, now: Timestamp) -> bool {
    let Some(lease) = lease else { return true };
    let holder = lease.holder.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return true;
    }
    lease
        .renewed_at
        .and_then(|r| r.checked_add(lease.duration).ok())
        .is_none_or(|expires| expires <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2026-11-25T12:00:00Z".parse().unwrap()
    }

    fn held_by(holder: &str, seconds_ago: i64) -> LeaseView {
        LeaseView {
            holder: Some(holder.into()),
            renewed_at: Some(now() - SignedDuration::from_secs(seconds_ago)),
            duration: SignedDuration::from_secs(15),
        }
    }

    #[test]
    fn a_live_holder_keeps_the_lease_and_an_expired_one_loses_it() {
        assert!(may_take(None, "a", now()));
        assert!(may_take(Some(&held_by("a", 5)), "a", now()));
        assert!(!may_take(Some(&held_by("b", 5)), "a", now()));
        assert!(!may_take(Some(&held_by("b", 14)), "a", now()));
        assert!(may_take(Some(&held_by("b", 15)), "a", now()));
        // Released: no holder.
        let released = LeaseView {
            holder: Some(String::new()),
            ..held_by("b", 0)
        };
        assert!(may_take(Some(&released), "a", now()));
    }
}
