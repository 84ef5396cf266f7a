//! The HealingPolicy cache every decision reads its thresholds from, and whether it has been
//! filled since the start.

use std::sync::Arc;
use std::time::Duration;

use kube::ResourceExt;
use kube::runtime::reflector::Store;
use tokio::sync::watch;

use super::decode::Undecodables;
use crate::Error;
use crate::api::{HealingPolicy, HealingPolicySpec};

/// How long a decision waits for the cache's first sync before it fails (and is retried).
const SYNC_WAIT: Duration = Duration::from_secs(30);

/// The HealingPolicy cache; clones share it.
#[derive(Clone)]
pub struct PolicyCache {
    store: Store<HealingPolicy>,
    /// True once the first list is in `store` ([`super::CachedWatch::ready`]). Not
    /// `Store::wait_until_ready`: of the many reconciles and mirror workers waiting on it at
    /// start-up, all but one slept until their timeout (30 s) although the cache was filled.
    ready: watch::Receiver<bool>,
    /// Policies that exist but do not decode (see [`super::decode`]).
    undecodable: Undecodables,
}

impl PolicyCache {
    /// `store`, filled by a reflector that sends true on `ready` once its first list is in;
    /// `undecodable`, the policies that reflector left out.
    pub fn new(
        store: Store<HealingPolicy>,
        ready: watch::Receiver<bool>,
        undecodable: Undecodables,
    ) -> Self {
        Self {
            store,
            ready,
            undecodable,
        }
    }

    /// A cache without policies that counts as filled: every namespace has the defaults.
    pub fn empty() -> Self {
        let (_, ready) = watch::channel(true);
        Self::new(
            kube::runtime::reflector::store().0,
            ready,
            Undecodables::default(),
        )
    }

    /// Waits until the cache holds every policy. A decision made on the defaults before its
    /// namespace's policy arrived (just after a start) could heal too early, or mirror what
    /// the policy rules out.
    pub async fn synced(&self) -> Result<(), Error> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(SYNC_WAIT, ready.wait_for(|filled| *filled)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) | Err(_) => Err(Error::NotSynced("HealingPolicy")),
        }
    }

    /// The HealingPolicy that governs `namespace`, if it has one.
    pub fn chosen(&self, namespace: &str) -> Option<Arc<HealingPolicy>> {
        let in_namespace: Vec<Arc<HealingPolicy>> = self
            .store
            .state()
            .into_iter()
            .filter(|p| p.namespace().as_deref() == Some(namespace))
            .collect();
        choose_policy(&in_namespace).cloned()
    }

    /// The policy of `namespace`, or the built-in defaults. A namespace whose policy exists
    /// but cannot be decoded gets the defaults in dry-run: its policy may pause healing or
    /// ask for a dry run, and guessing that it does not would act where it must not. Heals
    /// there are recorded as Skipped until the policy is fixed (its Warning Event says why).
    pub fn spec_for(&self, namespace: &str) -> HealingPolicySpec {
        if self.undecodable.in_namespace(namespace) {
            return HealingPolicySpec {
                dry_run: true,
                ..Default::default()
            };
        }
        self.chosen(namespace)
            .map(|p| p.spec.clone())
            .unwrap_or_default()
    }
}

/// With several policies in one namespace, the one named `default` wins, else the first by
/// name: deterministic, so replicas agree.
fn choose_policy(policies: &[Arc<HealingPolicy>]) -> Option<&Arc<HealingPolicy>> {
    policies
        .iter()
        .find(|p| p.name_any() == "default")
        .or_else(|| policies.iter().min_by_key(|p| p.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(ns: &str, name: &str, pct: f64) -> Arc<HealingPolicy> {
        let spec = HealingPolicySpec {
            min_completion_percent: pct,
            ..Default::default()
        };
        let mut p = HealingPolicy::new(name, spec);
        p.metadata.namespace = Some(ns.into());
        Arc::new(p)
    }

    #[test]
    fn the_policy_named_default_wins_else_the_first_by_name() {
        let ps = [
            policy("a", "zeta", 80.0),
            policy("a", "default", 85.0),
            policy("a", "alpha", 70.0),
        ];
        assert_eq!(
            choose_policy(&ps).unwrap().spec.min_completion_percent,
            85.0
        );
        let ps = [policy("a", "zeta", 80.0), policy("a", "alpha", 70.0)];
        assert_eq!(
            choose_policy(&ps).unwrap().spec.min_completion_percent,
            70.0
        );
        assert!(choose_policy(&[]).is_none());
    }

    #[tokio::test]
    async fn every_waiter_wakes_when_the_cache_is_filled() {
        let (filled, ready) = watch::channel(false);
        let cache = PolicyCache::new(
            kube::runtime::reflector::store().0,
            ready,
            Undecodables::default(),
        );
        let waiters: Vec<_> = (0..64)
            .map(|_| {
                let cache = cache.clone();
                tokio::spawn(async move { cache.synced().await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        filled.send_replace(true);
        let all = tokio::time::timeout(Duration::from_secs(5), futures::future::join_all(waiters))
            .await
            .expect("a waiter did not wake within 5 s of the fill");
        assert!(all.into_iter().all(|r| matches!(r, Ok(Ok(())))));
    }
}
