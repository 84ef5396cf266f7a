//! The health loop: per namespace, the pattern levels, alerts and circuit breakers of each
//! healing type, from the HealingEvents the controller already caches.
//!
//! A namespace is evaluated when one of its events changes (batched: at most once a second)
//! and again exactly when an action leaves a window, never on a timer. The state is stored
//! in the cluster before anything is sent: in the status of the namespace's HealingPolicy,
//! or, for a namespace on the controller defaults, in a ConfigMap the controller owns. So a
//! restart or a second replica sends nothing twice; writes carry the resourceVersion.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use kube::{Resource, ResourceExt};
use tokio::time::Instant;
use tracing::{info, warn};

use super::Context;
use crate::api::event::{ExportState, Outcome};
use crate::api::health::{AlertLevel, CircuitState, TypeHealth};
use crate::api::{HealingEvent, HealingPolicy, HealingPolicySpec};
use crate::decide::alerts::Notice;
use crate::decide::breaker;
use crate::decide::conditions::{self, Desired};
use crate::decide::export::is_final;
use crate::decide::health::{self, Change, Gate, Observed, evaluate, open_circuits, worst_level};
use crate::decide::patterns::Occurrence;
use crate::error::{Error, KubeResultExt};
use crate::sink::slack::{PatternAlert, RecentAction, pattern_message};

/// The ConfigMap holding a namespace's health when it has no HealingPolicy.
pub const HEALTH_CONFIGMAP: &str = "pipeline-healer-health";
/// The label that selects the controller's health ConfigMaps (for its cache).
pub const HEALTH_LABEL: &str = "healing.pipeline.dev/health";
const HEALTH_KEY: &str = "healingTypes";

/// Events arriving together are evaluated together, once.
const BATCHING: Duration = Duration::from_secs(1);
/// A failed evaluation (an API error, a write conflict) is tried again after this.
const RETRY: Duration = Duration::from_secs(2);

/// Asks for a namespace's health to be evaluated. Cheap to clone.
#[derive(Clone)]
pub struct HealthTrigger(mpsc::UnboundedSender<ScheduleRequest<String>>);

impl HealthTrigger {
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<ScheduleRequest<String>>) {
        let (tx, rx) = mpsc::unbounded();
        (Self(tx), rx)
    }

    /// Evaluates soon (events arriving within the batching second share the evaluation).
    pub fn touch(&self, namespace: &str) {
        self.at(namespace, Instant::now() + BATCHING);
    }

    fn at(&self, namespace: &str, run_at: Instant) {
        // Fails only once the loop has stopped (shutdown, or a Context without the loop).
        let _ = self.0.unbounded_send(ScheduleRequest {
            message: namespace.to_owned(),
            run_at,
        });
    }
}

/// Runs the loop until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    requests: mpsc::UnboundedReceiver<ScheduleRequest<String>>,
    shutdown: impl Future<Output = ()>,
) {
    let mut due = std::pin::pin!(scheduler(requests));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let namespace = tokio::select! {
            next = due.next() => match next {
                Some(ns) => ns,
                None => return,
            },
            () = &mut shutdown => return,
        };
        let next = match reconcile(&ctx, &namespace).await {
            Ok(wake_at) => wake_at.map(|at| instant_of(at, Timestamp::now())),
            Err(error) => {
                warn!(namespace, %error, category = error.category().as_str(), "evaluating healing health failed; retrying");
                ctx.metrics
                    .reconcile_failed("NamespaceHealth", error.category());
                Some(Instant::now() + RETRY)
            }
        };
        if let Some(at) = next {
            ctx.health.at(&namespace, at);
        }
    }
}

fn instant_of(at: Timestamp, now: Timestamp) -> Instant {
    let wait = Duration::try_from(at.duration_since(now)).unwrap_or_default();
    // Cap far wakes: the scheduler cannot hold more than two years.
    Instant::now() + wait.min(Duration::from_secs(86_400 * 30)) + Duration::from_millis(5)
}

/// Where a namespace's health is kept.
enum Holder {
    Policy(Arc<HealingPolicy>),
    ConfigMap(Option<Arc<ConfigMap>>),
}

/// A namespace's stored health and where it came from.
pub struct StoredHealth {
    holder: Holder,
    pub types: BTreeMap<String, TypeHealth>,
}

/// The namespace's health as the caches hold it.
pub fn stored_health(ctx: &Context, namespace: &str) -> StoredHealth {
    let map = ctx
        .health_maps
        .get(&ObjectRef::new(HEALTH_CONFIGMAP).within(namespace));
    let from_map = || {
        map.as_ref()
            .and_then(|m| m.data.as_ref())
            .and_then(|d| d.get(HEALTH_KEY))
            .and_then(|json| match serde_json::from_str(json) {
                Ok(types) => Some(types),
                Err(error) => {
                    // Ours, and only a hand edit breaks it: start again rather than stop.
                    warn!(namespace, %error, "the stored health is malformed; starting from empty");
                    None
                }
            })
            .unwrap_or_default()
    };
    match ctx.policies.chosen(namespace) {
        Some(policy) => {
            let in_status = policy
                .status
                .as_ref()
                .map(|s| s.healing_types.clone())
                .unwrap_or_default();
            // A policy new to a namespace takes over the state the defaults kept, so what
            // was sent before is not sent again.
            let types = if in_status.is_empty() {
                from_map()
            } else {
                in_status
            };
            StoredHealth {
                holder: Holder::Policy(policy),
                types,
            }
        }
        None => StoredHealth {
            types: from_map(),
            holder: Holder::ConfigMap(map),
        },
    }
}

/// Writes `types` where `stored` came from, only if that object has not changed since.
async fn save(
    ctx: &Context,
    namespace: &str,
    stored: &StoredHealth,
    types: &BTreeMap<String, TypeHealth>,
) -> Result<ObjectReference, Error> {
    match &stored.holder {
        Holder::Policy(policy) => {
            let mut updated = (**policy).clone();
            let status = updated.status.get_or_insert_with(Default::default);
            let level = worst_level(types);
            let open = open_circuits(types);
            let desired = [
                Desired::new(
                    "Alerting",
                    level != AlertLevel::Normal,
                    level.as_str(),
                    format!("highest pattern level: {}", level.as_str()),
                ),
                Desired::new(
                    "CircuitOpen",
                    !open.is_empty(),
                    if open.is_empty() {
                        "AllClosed"
                    } else {
                        "HealsSkipped"
                    },
                    if open.is_empty() {
                        "every healing type may act".to_owned()
                    } else {
                        format!("heals skipped for: {}", open.join(", "))
                    },
                ),
            ];
            status.conditions = conditions::merge(
                &status.conditions,
                &desired,
                policy.metadata.generation,
                Timestamp::now(),
            );
            status.level = level;
            status.open_circuits = open;
            status.healing_types = types.clone();
            status.observed_generation = policy.metadata.generation;
            let api: Api<HealingPolicy> = Api::namespaced(ctx.client.clone(), namespace);
            let saved = api
                .replace_status(&policy.name_any(), &PostParams::default(), &updated)
                .await
                .at("storing the health in the HealingPolicy")?;
            Ok(saved.object_ref(&()))
        }
        Holder::ConfigMap(existing) => {
            let json = serde_json::to_string(types).map_err(|source| Error::Serialize {
                what: "the healing health",
                source,
            })?;
            let map = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(HEALTH_CONFIGMAP.into()),
                    namespace: Some(namespace.into()),
                    resource_version: existing.as_ref().and_then(|m| m.resource_version()),
                    labels: Some(BTreeMap::from([
                        (HEALTH_LABEL.to_owned(), "true".to_owned()),
                        (
                            "app.kubernetes.io/managed-by".to_owned(),
                            super::MANAGER.to_owned(),
                        ),
                    ])),
                    annotations: Some(BTreeMap::from([(
                        "healing.pipeline.dev/description".to_owned(),
                        "Alert and circuit-breaker state of this namespace's healing types (it has no HealingPolicy); kept by pipeline-healer".to_owned(),
                    )])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(HEALTH_KEY.to_owned(), json)])),
                ..Default::default()
            };
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
            let saved = match existing {
                Some(_) => api
                    .replace(HEALTH_CONFIGMAP, &PostParams::default(), &map)
                    .await
                    .at("storing the health in its ConfigMap")?,
                None => api
                    .create(&PostParams::default(), &map)
                    .await
                    .at("storing the health in a new ConfigMap")?,
            };
            Ok(saved.object_ref(&()))
        }
    }
}

/// Finished, real actions count towards the windows: dry-runs, skips and superseded heals
/// did nothing.
fn occurrence(event: &HealingEvent) -> Option<Occurrence> {
    let status = event.status.as_ref()?;
    let success = match status.outcome? {
        Outcome::Succeeded => true,
        Outcome::Failed => false,
        Outcome::Pending | Outcome::Superseded | Outcome::Skipped => return None,
    };
    if event.spec.dry_run {
        return None;
    }
    let at = status
        .finished_at
        .as_ref()
        .map_or(event.spec.timestamp.0, |t| t.0);
    Some(Occurrence { at, success })
}

/// A finished event that `sink` does not have yet.
fn awaits_export(event: &HealingEvent, sink: &str) -> bool {
    let status = event.status.as_ref();
    is_final(status)
        && status
            .and_then(|s| s.exports.get(sink))
            .is_none_or(|x| x.state != ExportState::Exported)
}

/// The trial's verdict once its event has an outcome. A trial whose event never appeared
/// (its actor crashed between the claim and the record) counts as failed once it is
/// abandoned, so the circuit does not stay half-open for ever.
fn trial_verdict(
    ctx: &Context,
    events: &BTreeMap<String, Arc<HealingEvent>>,
    health: &TypeHealth,
    now: Timestamp,
) -> Option<bool> {
    if health.circuit.state != CircuitState::HalfOpen {
        return None;
    }
    let trial = health.circuit.trial.as_deref()?;
    match events.get(trial) {
        Some(event) => match event.status.as_ref().and_then(|s| s.outcome)? {
            Outcome::Pending => None,
            Outcome::Failed => Some(false),
            Outcome::Succeeded | Outcome::Superseded | Outcome::Skipped => Some(true),
        },
        None => {
            let since = health.circuit.since()?;
            (now.duration_since(since) > ctx.abandoned_heal_after()).then_some(false)
        }
    }
}

/// Evaluates one namespace; returns when to evaluate it again without a new event.
pub async fn reconcile(ctx: &Context, namespace: &str) -> Result<Option<Timestamp>, Error> {
    ctx.metrics.reconciled("NamespaceHealth");
    ctx.policies.synced().await?;
    let now = Timestamp::now();
    let policy = ctx.policies.spec_for(namespace);
    let stored = stored_health(ctx, namespace);
    let events: BTreeMap<String, Arc<HealingEvent>> = ctx
        .events
        .state()
        .into_iter()
        .filter(|e| e.namespace().as_deref() == Some(namespace))
        .map(|e| (e.name_any(), e))
        .collect();

    let mut observed: BTreeMap<String, Observed> = BTreeMap::new();
    for event in events.values() {
        if let Some(o) = occurrence(event) {
            observed
                .entry(event.spec.healing_type.clone())
                .or_default()
                .occurrences
                .push(o);
        }
    }
    for (healing_type, health) in &stored.types {
        if let Some(verdict) = trial_verdict(ctx, &events, health, now) {
            observed
                .entry(healing_type.clone())
                .or_default()
                .trial_succeeded = Some(verdict);
        }
    }

    for sink in ctx.sinks.names() {
        let waiting = events.values().filter(|e| awaits_export(e, sink)).count();
        ctx.metrics
            .export_backlog(namespace, sink, i64::try_from(waiting).unwrap_or(i64::MAX));
    }

    let evaluation = evaluate(&stored.types, &observed, &policy, now);
    for (healing_type, health) in evaluation.types.iter() {
        ctx.metrics.type_health(
            namespace,
            healing_type,
            health.alert.level as i64,
            health.circuit.state as i64,
        );
    }
    for healing_type in stored
        .types
        .keys()
        .filter(|t| !evaluation.types.contains_key(*t))
    {
        ctx.metrics.type_health(namespace, healing_type, 0, 0);
    }
    let summary_stale = match &stored.holder {
        Holder::Policy(p) => p.status.as_ref().is_none_or(|s| {
            s.level != worst_level(&evaluation.types)
                || s.open_circuits != open_circuits(&evaluation.types)
        }),
        Holder::ConfigMap(_) => false,
    };
    if evaluation.types == stored.types && !summary_stale {
        return Ok(evaluation.wake_at);
    }
    // Stored first, then told: a conflict here means another writer got there (a trial
    // claim, another replica) and the evaluation is redone on fresh state.
    let holder_ref = save(ctx, namespace, &stored, &evaluation.types).await?;
    for change in &evaluation.changes {
        tell(
            ctx,
            namespace,
            &policy,
            &holder_ref,
            &events,
            &evaluation.types,
            change,
        )
        .await;
    }
    Ok(evaluation.wake_at)
}

/// Sends a change to Slack, as a Kubernetes Event on the holder and to the log. Failures
/// are logged: the state is stored, and alerting must not stop the loop.
async fn tell(
    ctx: &Context,
    namespace: &str,
    policy: &HealingPolicySpec,
    holder: &ObjectReference,
    events: &BTreeMap<String, Arc<HealingEvent>>,
    types: &BTreeMap<String, TypeHealth>,
    change: &Change,
) {
    let t = &change.healing_type;
    let circuit = types.get(t).map(|h| h.circuit.clone()).unwrap_or_default();
    let open_until = match change.circuit {
        Some((_, CircuitState::Open)) => {
            circuit.reopens_at(policy.circuit_breaker.cooldown.as_span())
        }
        _ => None,
    };
    let mut notes: Vec<(EventType, &str, String)> = Vec::new();
    if let Some(notice) = change.notice {
        let alert = PatternAlert {
            namespace: namespace.to_owned(),
            healing_type: t.clone(),
            notice,
            counts: change.counts.clone(),
            recent: recent_actions(events, t),
            circuit_open_until: open_until,
        };
        let (channel, payload) = pattern_message(&alert, ctx.slack.events_table());
        ctx.slack.send(channel, payload, &ctx.metrics);
        let c = &change.counts;
        let counts = format!(
            "{} in the yellow window, {} in the red window, {} of {} failed in the critical window",
            c.in_yellow_window, c.in_red_window, c.failed_in_critical_window, c.in_critical_window
        );
        match notice {
            Notice::Alert(level) => {
                warn!(namespace, healing_type = %t, ?level, %counts, "healing pattern alert");
                notes.push((
                    EventType::Warning,
                    "PatternAlert",
                    format!("{t} is {}: {counts}", level.as_str()),
                ));
            }
            Notice::Resolved { was } => {
                info!(namespace, healing_type = %t, ?was, "healing pattern resolved");
                notes.push((
                    EventType::Normal,
                    "PatternResolved",
                    format!("{t} is back to normal (was {})", was.as_str()),
                ));
            }
        }
    }
    match change.circuit {
        Some((_, CircuitState::Open)) => {
            warn!(namespace, healing_type = %t, "circuit opened: heals of this type are skipped");
            notes.push((
                EventType::Warning,
                "CircuitOpened",
                format!(
                    "{t} heals are skipped until {}; then one trial heal runs",
                    open_until.map_or("the cooldown ends".to_owned(), |u| u.to_string())
                ),
            ));
        }
        Some((_, CircuitState::Closed)) => {
            info!(namespace, healing_type = %t, "circuit closed: the trial heal succeeded");
            notes.push((
                EventType::Normal,
                "CircuitClosed",
                format!("{t} heals act again: the trial heal succeeded"),
            ));
        }
        _ => {}
    }
    for (type_, reason, note) in notes {
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: "Alert".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, holder).await {
            warn!(namespace, %error, "publishing a Kubernetes Event failed");
        }
    }
}

/// The type's finished actions, newest first, as the alert lists them.
fn recent_actions(
    events: &BTreeMap<String, Arc<HealingEvent>>,
    healing_type: &str,
) -> Vec<RecentAction> {
    let mut recent: Vec<RecentAction> = events
        .values()
        .filter(|e| e.spec.healing_type == healing_type)
        .filter_map(|e| {
            let o = occurrence(e)?;
            Some(RecentAction {
                at: o.at,
                healing_id: e.name_any(),
                root_cause: e.spec.root_cause.clone(),
                trigger_reason: e.spec.trigger_reason.clone(),
                success: o.success,
            })
        })
        .collect();
    recent.sort_by_key(|a| std::cmp::Reverse(a.at));
    recent.truncate(3);
    recent
}

/// The gate for a heal of `healing_type` in `namespace` now (see [`health::gate`]).
pub fn gate(ctx: &Context, namespace: &str, healing_type: &str, now: Timestamp) -> Gate {
    let policy = ctx.policies.spec_for(namespace);
    let circuit = stored_health(ctx, namespace)
        .types
        .get(healing_type)
        .map(|h| h.circuit.clone())
        .unwrap_or_default();
    health::gate(
        &policy,
        healing_type,
        &circuit,
        ctx.abandoned_heal_after(),
        now,
    )
}

/// Claims the trial heal `healing_id` of an open circuit. False: the circuit changed first
/// (another heal claimed it, or the loop stored newer state); decide again.
pub async fn claim_trial(
    ctx: &Context,
    namespace: &str,
    healing_type: &str,
    healing_id: &str,
    now: Timestamp,
) -> Result<bool, Error> {
    let stored = stored_health(ctx, namespace);
    let mut types = stored.types.clone();
    let health = types.entry(healing_type.to_owned()).or_default();
    health.circuit = breaker::trial_started(healing_id, now);
    match save(ctx, namespace, &stored, &types).await {
        Ok(_) => {
            info!(
                namespace,
                healing_type, healing_id, "circuit half-open: trial heal"
            );
            Ok(true)
        }
        Err(e) if e.is_conflict() => Ok(false),
        Err(e) => Err(e),
    }
}
