//! Leader election: with several replicas exactly one acts. The leader holds a
//! coordination.k8s.io Lease and renews it; when it stops renewing (it died, or lost the API
//! server) another replica takes the lease once its duration has passed. A leader that
//! cannot renew within the duration stops acting (the process exits, and Kubernetes restarts
//! it as a candidate); one that shuts down cleanly releases the lease for a prompt handover.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use crate::decide::lease::{LeaseView, may_take};
use crate::error::{Error, KubeResultExt};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in the lease (the pod name).
    pub identity: String,
    /// How long a lease lasts without renewal.
    pub duration: Duration,
}

pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
}

fn view(lease: &Lease) -> LeaseView {
    let spec = lease.spec.as_ref();
    LeaseView {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renewed_at: spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0),
        duration: SignedDuration::from_secs(
            spec.and_then(|s| s.lease_duration_seconds)
                .unwrap_or(15)
                .into(),
        ),
    }
}

impl LeaderElection {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    fn duration_seconds(&self) -> i32 {
        i32::try_from(self.config.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// Writes this replica into the lease if it may; true when it holds the lease now.
    async fn try_take(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let me = &self.config.identity;
        let existing = self
            .api
            .get_opt(&self.config.name)
            .await
            .at("reading the Lease")?;
        if !may_take(existing.as_ref().map(view).as_ref(), me, now) {
            return Ok(false);
        }
        let previous = existing
            .as_ref()
            .and_then(|l| l.spec.clone())
            .unwrap_or_default();
        let taking_over = previous.holder_identity.as_deref() != Some(me.as_str());
        let spec = LeaseSpec {
            holder_identity: Some(me.clone()),
            lease_duration_seconds: Some(self.duration_seconds()),
            acquire_time: if taking_over {
                Some(MicroTime(now))
            } else {
                previous.acquire_time.clone()
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(
                previous.lease_transitions.unwrap_or(0)
                    + i32::from(taking_over && existing.is_some()),
            ),
            ..Default::default()
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                // The write is conditional: two candidates cannot both take the lease.
                resource_version: existing.as_ref().and_then(|l| l.resource_version()),
                ..Default::default()
            },
            spec: Some(spec),
        };
        let written = match existing {
            Some(_) => {
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease)
                    .await
            }
            None => self.api.create(&PostParams::default(), &lease).await,
        };
        // A conflict: another replica wrote the Lease since it was read.
        Ok(written.unless_conflict("writing the Lease")?.is_some())
    }

    /// [`Self::try_take`], bounded by [`crate::timeouts::lease_call`]: a call that hangs
    /// counts as failed, so renewal goes on (or gives up) while the lease still holds.
    async fn try_take_bounded(&self) -> Result<bool, Error> {
        let bound = crate::timeouts::lease_call(self.config.duration);
        tokio::time::timeout(bound, self.try_take())
            .await
            .unwrap_or(Err(Error::Timeout("the Lease", bound)))
    }

    /// Waits until this replica holds the lease.
    pub async fn acquire(&self) {
        let retry = self.config.duration / 4;
        info!(lease = %self.config.name, identity = %self.config.identity, "waiting to lead");
        loop {
            match self.try_take_bounded().await {
                Ok(true) => {
                    info!(lease = %self.config.name, identity = %self.config.identity, "leading");
                    return;
                }
                Ok(false) => debug!("another replica leads"),
                Err(e) => warn!(error = %e, "reading the lease failed; retrying"),
            }
            tokio::time::sleep(retry).await;
        }
    }

    /// Renews the lease until it is lost: another replica took it, or no renewal has
    /// succeeded for the lease's duration. Returns then.
    pub async fn hold(&self) {
        let period = self.config.duration / 3;
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(period).await;
            match self.try_take_bounded().await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    warn!(lease = %self.config.name, "another replica took the lease");
                    return;
                }
                Err(e) => {
                    warn!(error = %e, "renewing the lease failed");
                    if last_renewal.elapsed() >= self.config.duration {
                        return;
                    }
                }
            }
        }
    }

    /// Gives the lease up (clean shutdown), so another replica need not wait it out. Bounded
    /// by [`crate::timeouts::lease_call`]: shutdown must not wait on an API server that is gone.
    pub async fn release(&self) {
        let bound = crate::timeouts::lease_call(self.config.duration);
        if tokio::time::timeout(bound, self.give_up()).await.is_err() {
            warn!(lease = %self.config.name, ?bound, "releasing the lease got no answer; it expires by itself");
        }
    }

    async fn give_up(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => info!(lease = %self.config.name, "lease released"),
            Err(e) => warn!(error = %e, "releasing the lease failed; it expires by itself"),
        }
    }
}
