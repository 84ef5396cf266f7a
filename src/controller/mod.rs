//! Thin reconcilers around the pure decisions in `decide`, and the process that runs them.

pub mod batch;
pub mod event;
pub mod health;
pub mod phase;
pub mod record;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::Error;
use crate::api::phase::PhaseRun;
use crate::api::{HealingEvent, HealingPolicy, PredictionBatch};
use crate::decide::trust::Trust;
use crate::error::KubeResultExt;
use crate::runtime::bookkeeping::Bookkeeping;
use crate::runtime::cache::{CachedWatch, api, cached_watch, report_undecodable};
use crate::runtime::policies::PolicyCache;
use crate::sink::Sinks;
use crate::sink::bigquery::BigQueryExport;
use crate::sink::consolidation::Consolidation;
use crate::sink::firestore_heal::HealCommitter;
use crate::sink::slack::{Slack, SlackConfig};
use crate::sink::trigger::HttpTriggers;
use crate::source::bigquery::RowCounter;
use crate::source::firestore::MirrorConfig;
use crate::telemetry::{Metrics, Telemetry};
use health::HealthTrigger;
use k8s_openapi::api::batch::v1::Job;

pub use crate::runtime::MANAGER;

/// How soon a reconcile whose conditional write met a newer version of its object looks
/// again (the watch has the newer one within milliseconds, but a status write of its own may
/// not wake it).
pub(crate) const STALE_READ_RETRY: Duration = Duration::from_millis(200);

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
    /// A deleted HealingEvent that has not reached every sink it must reach is held back this
    /// long, then let go (its record logged), so a namespace's deletion never hangs for ever.
    pub export_finalizer_timeout: Duration,
    /// Asked to consolidate each batch the controller completes; None: not asked.
    pub consolidation: Option<Consolidation>,
    /// HealingEvents are exported to this Firestore collection when a Firestore project is
    /// configured; None: not to Firestore.
    pub events_collection: Option<String>,
    /// HealingEvents are exported to this BigQuery table; None: not to BigQuery.
    pub bigquery: Option<BigQueryExport>,
    /// Pattern alerts; no webhook: none sent (they are still Events and status).
    pub slack: SlackConfig,
    /// Where PhaseRun tables are counted: the project, and a BigQuery emulator (host:port)
    /// to use instead of BigQuery. None: phases report that they cannot be observed.
    pub phase_bigquery: Option<(String, Option<String>)>,
    /// What PhaseRuns may make the controller do with its identity (the operator's
    /// allowlists); the default allows no http trigger and no other project's tables.
    pub trust: Trust,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            instance: None,
            abandoned_heal_after: Duration::from_secs(30),
            export_finalizer_timeout: Duration::from_secs(600),
            consolidation: None,
            events_collection: None,
            bigquery: None,
            slack: SlackConfig::default(),
            phase_bigquery: None,
            trust: Trust::default(),
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub policies: PolicyCache,
    pub config: Config,
    /// Where `source: firestore` batches live; None when no project is configured.
    pub firestore: Option<firestore::FirestoreDb>,
    /// Where HealingEvents are exported.
    pub sinks: Sinks,
    /// The HealingEvents cache, which the health loop reads its windows from.
    pub events: Store<HealingEvent>,
    /// The health ConfigMaps of namespaces without a HealingPolicy.
    pub health_maps: Store<ConfigMap>,
    /// Asks the health loop to evaluate a namespace.
    pub health: HealthTrigger,
    pub slack: Slack,
    pub metrics: Arc<Metrics>,
    /// Counts the rows of PhaseRun tables; None when no BigQuery project is configured.
    pub row_counter: Option<RowCounter>,
    /// Re-runs processors over HTTP.
    pub triggers: HttpTriggers,
    /// Whether the mirror's listen stream has sent the whole collection since it connected
    /// (None without a mirror): heals wait for it (see [`HealCommitter::start`]).
    pub mirror_snapshot_read: Option<tokio::sync::watch::Receiver<bool>>,
    /// Turns for the writes that record rather than heal (shared with the mirror).
    pub bookkeeping: Bookkeeping,
    /// Failures in a row per object, for [`error_policy`]'s backoff.
    pub reconcile_failures: ReconcileFailures,
    /// Commits heals of Firestore batches together; started on first use.
    heal_committer: std::sync::OnceLock<HealCommitter>,
    /// When this controller started: an intent left by a stopped actor gets the batch
    /// reconciler's full take-over wait from then on (`decide::heal::unfinished_heal`).
    pub started_at: jiff::Timestamp,
}

impl Context {
    pub fn new(
        client: Client,
        config: Config,
        policies: PolicyCache,
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
            sinks: Sinks::default(),
            events: reflector::store().0,
            health_maps: reflector::store().0,
            // Without the loop running, a touch goes nowhere.
            health: HealthTrigger::channel().0,
            slack: Slack::disabled(),
            metrics: Arc::default(),
            row_counter: None,
            triggers: HttpTriggers::default(),
            mirror_snapshot_read: None,
            bookkeeping: Bookkeeping::default(),
            reconcile_failures: ReconcileFailures::default(),
            heal_committer: std::sync::OnceLock::new(),
            started_at: jiff::Timestamp::now(),
        }
    }

    /// The committer of heals into Firestore documents; None without a Firestore project.
    pub fn heal_committer(&self) -> Option<&HealCommitter> {
        let db = self.firestore.as_ref()?;
        Some(
            self.heal_committer.get_or_init(|| {
                HealCommitter::start(db.clone(), self.mirror_snapshot_read.clone())
            }),
        )
    }

    /// [`Config::abandoned_heal_after`] as the decisions measure it.
    pub fn abandoned_heal_after(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.config.abandoned_heal_after).unwrap_or_default()
    }

    /// [`Config::export_finalizer_timeout`] as the decisions measure it.
    pub fn export_finalizer_timeout(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.config.export_finalizer_timeout).unwrap_or_default()
    }

    /// How long each actor may leave its intent without an outcome.
    pub fn settle_bounds(&self) -> crate::decide::unfinished::Bounds {
        crate::decide::unfinished::Bounds {
            abandoned_heal_after: self.abandoned_heal_after(),
            trigger_request: jiff::SignedDuration::try_from(
                crate::timeouts::METADATA_TOKEN + crate::timeouts::TRIGGER_REQUEST,
            )
            .unwrap_or_default(),
        }
    }

    pub fn with_sinks(self, sinks: Sinks) -> Self {
        Self { sinks, ..self }
    }
}

/// Drives a controller to its end. A reconcile's own errors go through `error_policy`;
/// what is left to log here is a failure to dispatch one (a watch or queue error).
async fn drive<T, E: std::fmt::Display>(
    kind: std::borrow::Cow<'static, str>,
    results: impl futures::Stream<Item = Result<T, E>>,
) {
    results
        .for_each(|result| {
            if let Err(e) = result {
                warn!(%kind, error = %e, "reconcile dispatch failed");
            }
            async {}
        })
        .await;
}

/// Deletes `object`, the very object decided on (uid precondition). False: it is gone
/// already, or its name now belongs to a new object, which is not this decision's to delete.
pub(crate) async fn delete_decided<K>(
    api: &kube::Api<K>,
    object: &K,
    step: &'static str,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let params = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: object.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    let deleted = api
        .delete(&object.name_any(), &params)
        .await
        .unless_gone(step)?;
    Ok(deleted.is_some())
}

/// Wake at `wake_at` (at the earliest in 10 ms, so a time already past does not spin);
/// None: only on a change.
pub(crate) fn requeue_at(wake_at: Option<Timestamp>, now: Timestamp) -> Action {
    match wake_at {
        Some(t) => {
            let wait = Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
            Action::requeue(wait.max(Duration::from_millis(10)))
        }
        None => Action::await_change(),
    }
}

/// Reconcile failures in a row, per object: the exponent of its retry backoff.
#[derive(Default)]
pub struct ReconcileFailures(std::sync::Mutex<std::collections::HashMap<String, u32>>);

impl ReconcileFailures {
    fn key<K: Resource<DynamicType = ()>>(object: &K) -> String {
        format!(
            "{}/{}/{}",
            K::kind(&()),
            object.namespace().unwrap_or_default(),
            object.name_any()
        )
    }

    /// Counts one more failure of `object`; the count so far.
    fn failed<K: Resource<DynamicType = ()>>(&self, object: &K) -> (u32, String) {
        let key = Self::key(object);
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key.clone()).or_default();
        *count = count.saturating_add(1);
        (*count, key)
    }

    /// `object` reconciled: its next failure starts the backoff again.
    fn succeeded<K: Resource<DynamicType = ()>>(&self, object: &K) {
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&Self::key(object));
    }
}

/// `reconcile`, forgetting the object's earlier failures when it succeeds (see
/// [`error_policy`]).
fn resetting_backoff<K, F, Fut>(
    reconcile: F,
) -> impl FnMut(Arc<K>, Arc<Context>) -> futures::future::BoxFuture<'static, Result<Action, Error>>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
    F: Fn(Arc<K>, Arc<Context>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Action, Error>> + Send + 'static,
{
    move |object, ctx| {
        let reconcile = reconcile.clone();
        Box::pin(async move {
            let result = reconcile(object.clone(), ctx.clone()).await;
            if result.is_ok() {
                ctx.reconcile_failures.succeeded(&*object);
            }
            result
        })
    }
}

/// Transient errors are retried after a per-object backoff (1 s doubling to 5 min, jittered,
/// as exports back off), so an outage neither spins every object every few seconds nor
/// retries them all in the same instant; permanent ones wait for the object to change.
pub fn error_policy<K>(object: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    let category = error.category();
    ctx.metrics.reconcile_failed(&K::kind(&()), category);
    let (failures, key) = ctx.reconcile_failures.failed(&*object);
    let retry_in = category
        .is_transient()
        .then(|| crate::decide::export::Backoff::default().delay(failures, &key));
    warn!(
        kind = %K::kind(&()),
        name = %object.name_any(),
        namespace = ?object.namespace(),
        %error,
        category = category.as_str(),
        failures,
        ?retry_in,
        "reconcile failed"
    );
    match retry_in {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    }
}

/// Batches kept in Firestore: the database, and where its batches are mirrored.
#[derive(Clone)]
pub struct FirestoreSource {
    pub db: firestore::FirestoreDb,
    pub mirror: MirrorConfig,
}

/// Runs the controllers and the health loop (and, with a Firestore source, the mirror)
/// until `shutdown` resolves (SIGTERM/SIGINT, or a lost lease, in the binary), reporting
/// through `telemetry`. Fails only when something cannot start (the mirror, a sink).
pub async fn run(
    client: Client,
    config: Config,
    firestore: Option<FirestoreSource>,
    telemetry: Telemetry,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<(), Error> {
    let ns = config.namespace.as_deref();
    let undecodable = report_undecodable(&client, config.instance.clone());
    let (health, health_requests) = HealthTrigger::channel();
    let CachedWatch {
        store: policy_store,
        ready: policies_ready,
        undecodables: undecodable_policies,
        stream: policy_stream,
    } = cached_watch::<HealingPolicy>(&client, ns, watcher::Config::default(), undecodable.clone());
    let policies = PolicyCache::new(policy_store, policies_ready, undecodable_policies);
    let policy_health = health.clone();
    let policy_stream = policy_stream
        // A policy (new, changed, or its state edited) has its namespace's health evaluated.
        .inspect(move |p| {
            if let Ok(p) = p {
                policy_health.touch(&p.namespace().unwrap_or_default());
            }
        })
        // Only spec changes re-decide batches: the health loop writes the status often.
        .predicate_filter(predicates::generation, Default::default());

    let CachedWatch {
        store: batch_store,
        ready: batches_ready,
        stream: batch_stream,
        ..
    } = cached_watch::<PredictionBatch>(
        &client,
        ns,
        watcher::Config::default(),
        undecodable.clone(),
    );
    let bookkeeping = Bookkeeping::default();
    let mirroring = match &firestore {
        Some(source) => Some(
            crate::source::firestore::start(
                &source.db,
                client.clone(),
                source.mirror.clone(),
                policies.clone(),
                batch_store.clone(),
                batches_ready.clone(),
                bookkeeping.clone(),
            )
            .await?,
        ),
        None => None,
    };
    let sinks = Sinks::connect(
        firestore.as_ref().map(|f| &f.db),
        config.events_collection.as_deref(),
        config.bigquery.as_ref(),
    )
    .await?;
    info!(sinks = ?sinks.names(), "exporting healing events");
    let events =
        cached_watch::<HealingEvent>(&client, ns, watcher::Config::default(), undecodable.clone());
    let health_maps = cached_watch::<ConfigMap>(
        &client,
        ns,
        // By name as well as by label: RBAC can then grant list and watch of this one
        // ConfigMap (resourceNames), not of every ConfigMap in the namespace.
        watcher::Config::default()
            .labels(&format!("{}=true", health::HEALTH_LABEL))
            .fields(&format!("metadata.name={}", health::HEALTH_CONFIGMAP)),
        undecodable.clone(),
    );
    let Telemetry { metrics, ready } = telemetry;
    let slack = Slack::start(config.slack.clone(), metrics.clone());
    let row_counter = match &config.phase_bigquery {
        Some((project, emulator)) => Some(RowCounter::new(
            crate::gcp::bigquery_client(emulator.as_deref())
                .await
                .map_err(|e| Error::bigquery("connecting to BigQuery for phases", e))?,
            project.clone(),
        )),
        None => None,
    };
    let mirror_snapshot_read = mirroring.as_ref().map(|m| m.snapshot_read.clone());

    let ctx = Arc::new(Context {
        row_counter,
        mirror_snapshot_read,
        bookkeeping,
        events: events.store.clone(),
        health_maps: health_maps.store.clone(),
        health: health.clone(),
        slack,
        metrics: metrics.clone(),
        ..Context::new(
            client.clone(),
            config.clone(),
            policies,
            firestore.map(|f| f.db),
        )
        .with_sinks(sinks)
    });

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let shutdown_requested = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    // Ready once the caches the decisions read are filled.
    let (mut batches_filled, mut events_filled) = (batches_ready, events.ready.clone());
    tokio::spawn(async move {
        let _ = batches_filled.wait_for(|r| *r).await;
        let _ = events_filled.wait_for(|r| *r).await;
        ready.send_replace(true);
    });
    let health_loop = health::run(
        ctx.clone(),
        health_requests,
        shutdown_requested(shutdown_rx.clone()),
    );
    let map_health = health.clone();
    let health_maps_watch = health_maps.stream.for_each(move |map| {
        if let Ok(map) = map {
            map_health.touch(&map.namespace().unwrap_or_default());
        }
        async {}
    });
    let health_maps_watch = async {
        tokio::select! {
            () = health_maps_watch => {}
            () = shutdown_requested(shutdown_rx.clone()) => {}
        }
    };

    let events = drive(
        HealingEvent::kind(&()),
        Controller::for_stream(events.stream, events.store)
            .graceful_shutdown_on(shutdown_requested(shutdown_rx.clone()))
            .run(
                resetting_backoff(event::reconcile),
                error_policy,
                ctx.clone(),
            ),
    );

    let phase_runs = cached_watch::<PhaseRun>(&client, ns, watcher::Config::default(), undecodable);
    // Only spec changes (and the phase's Jobs) wake a PhaseRun: its own status writes would
    // otherwise re-query BigQuery at once, defeating the backoff.
    let phase_stream = phase_runs
        .stream
        .predicate_filter(predicates::generation, Default::default());
    let phases = drive(
        PhaseRun::kind(&()),
        Controller::for_stream(phase_stream, phase_runs.store)
            // A Job trigger's Job finishing moves its phase on.
            .owns(api::<Job>(&client, ns), watcher::Config::default())
            .graceful_shutdown_on(shutdown_requested(shutdown_rx.clone()))
            .run(
                resetting_backoff(phase::reconcile),
                error_policy,
                ctx.clone(),
            ),
    );

    let controller = Controller::for_stream(batch_stream, batch_store.clone());
    info!(namespace = ns.unwrap_or("<all>"), "controller starting");
    let batches = controller
        // A policy change re-decides every batch in its namespace at once.
        .watches_stream(policy_stream, move |policy: HealingPolicy| {
            let ns = policy.namespace();
            batch_store
                .state()
                .into_iter()
                .filter(move |b| b.namespace() == ns)
                .map(|b| ObjectRef::from_obj(&*b))
        })
        .graceful_shutdown_on(shutdown_requested(shutdown_rx.clone()))
        .run(resetting_backoff(batch::reconcile), error_policy, ctx);
    let batches = drive(PredictionBatch::kind(&()), batches);
    // Everything stops together, each controller finishing the reconciles it has started.
    let signal = async move {
        shutdown.await;
        let _ = shutdown_tx.send(true);
    };
    tokio::join!(
        batches,
        events,
        phases,
        health_loop,
        health_maps_watch,
        signal
    );
    if let Some(mirroring) = mirroring {
        mirroring.stop().await;
    }
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_count_per_object_and_a_success_starts_the_backoff_again() {
        let failures = ReconcileFailures::default();
        let mut a: PredictionBatch = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
            "metadata": {"name": "a", "namespace": "pipeline"},
            "spec": {"batchId": "a", "gameDate": "2026-11-24", "source": "status"},
        }))
        .unwrap();
        assert_eq!(failures.failed(&a).0, 1);
        assert_eq!(failures.failed(&a).0, 2);
        let (third, key) = failures.failed(&a);
        assert_eq!((third, key.as_str()), (3, "PredictionBatch/pipeline/a"));
        let backoff = crate::decide::export::Backoff::default();
        assert!(backoff.delay(3, &key) >= Duration::from_secs(2));
        a.metadata.name = Some("b".into());
        assert_eq!(failures.failed(&a).0, 1, "another object counts apart");
        a.metadata.name = Some("a".into());
        failures.succeeded(&a);
        assert_eq!(failures.failed(&a).0, 1);
    }
}
