//! Thin reconcilers around the pure decisions in `decide`, and the process that runs them.

pub mod batch;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{HealingPolicy, HealingPolicySpec, PredictionBatch};
use crate::sink::consolidation::Consolidation;
use crate::source::firestore::MirrorConfig;

/// The field manager of everything the controller writes.
pub const MANAGER: &str = "pipeline-healer";

/// What the controller watches and how it identifies itself.
#[derive(Clone, Debug)]
pub struct Config {
    /// Watch one namespace; None: all.
    pub namespace: Option<String>,
    /// Reported as the Kubernetes Events' instance (the pod name in a cluster).
    pub instance: Option<String>,
    /// A heal whose HealingEvent has stayed Pending this long lost its actor (a crash); another
    /// reconcile carries it through. The action's precondition keeps that from acting twice.
    pub abandoned_heal_after: Duration,
    /// Asked to consolidate each batch the controller completes; None: not asked.
    pub consolidation: Option<Consolidation>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            instance: None,
            abandoned_heal_after: Duration::from_secs(30),
            consolidation: None,
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub policies: Store<HealingPolicy>,
    pub config: Config,
    /// Where `source: firestore` batches live; None when no project is configured.
    pub firestore: Option<firestore::FirestoreDb>,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        policies: Store<HealingPolicy>,
        firestore: Option<firestore::FirestoreDb>,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: config.instance.clone(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            policies,
            config,
            firestore,
        }
    }

    /// The namespace's policy, or the built-in defaults when it has none.
    pub fn policy_for(&self, namespace: &str) -> HealingPolicySpec {
        policy_in(&self.policies, namespace)
    }
}

/// The policy of `namespace` among those in `policies`, or the built-in defaults.
pub fn policy_in(policies: &Store<HealingPolicy>, namespace: &str) -> HealingPolicySpec {
    let in_namespace: Vec<Arc<HealingPolicy>> = policies
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace))
        .collect();
    choose_policy(&in_namespace)
        .map(|p| p.spec.clone())
        .unwrap_or_default()
}

/// With several policies in one namespace, the one named `default` wins, else the first by
/// name: deterministic, so replicas agree.
fn choose_policy(policies: &[Arc<HealingPolicy>]) -> Option<&Arc<HealingPolicy>> {
    policies
        .iter()
        .find(|p| p.name_any() == "default")
        .or_else(|| policies.iter().min_by_key(|p| p.name_any()))
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Batches kept in Firestore: the database, and where its batches are mirrored.
#[derive(Clone)]
pub struct FirestoreSource {
    pub db: firestore::FirestoreDb,
    pub mirror: MirrorConfig,
}

/// Runs the controllers (and, with a Firestore source, the mirror) until `shutdown`
/// resolves (SIGTERM/SIGINT in the binary). Fails only when the mirror cannot start.
pub async fn run(
    client: Client,
    config: Config,
    firestore: Option<FirestoreSource>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), crate::Error> {
    let ns = config.namespace.as_deref();
    let (policies, policy_writer) = reflector::store::<HealingPolicy>();
    let policy_stream = reflector::reflector(
        policy_writer,
        watcher(
            api::<HealingPolicy>(&client, ns),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .applied_objects();

    // The cache holds every batch; managed fields are dropped from it, as nothing reads them
    // and they are a large part of each cached object.
    let (batch_store, batch_writer) = reflector::store::<PredictionBatch>();
    let batch_stream = reflector::reflector(
        batch_writer,
        watcher(
            api::<PredictionBatch>(&client, ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .modify(|batch| batch.managed_fields_mut().clear()),
    )
    .applied_objects();
    let listener = match &firestore {
        Some(source) => Some(
            crate::source::firestore::start(
                &source.db,
                client.clone(),
                source.mirror.clone(),
                policies.clone(),
                batch_store.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        config.clone(),
        policies,
        firestore.map(|f| f.db),
    ));

    let controller = Controller::for_stream(batch_stream, batch_store.clone());
    info!(namespace = ns.unwrap_or("<all>"), "controller starting");
    controller
        // A policy change re-decides every batch in its namespace at once.
        .watches_stream(policy_stream, move |policy: HealingPolicy| {
            let ns = policy.namespace();
            batch_store
                .state()
                .into_iter()
                .filter(move |b| b.namespace() == ns)
                .map(|b| ObjectRef::from_obj(&*b))
        })
        .graceful_shutdown_on(shutdown)
        .run(batch::reconcile, batch::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                warn!(error = %e, "reconcile dispatch failed");
            }
        })
        .await;
    if let Some(mut listener) = listener
        && let Err(e) = listener.shutdown_with_timeout(Duration::from_secs(5)).await
    {
        warn!(error = %e, "the Firestore listener stopped uncleanly");
    }
    info!("controller stopped");
    Ok(())
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
}
