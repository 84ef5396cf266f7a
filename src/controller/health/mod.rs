//! The health loop: per namespace, the pattern levels, alerts and circuit breakers of each
//! healing type, from the HealingEvents the controller already caches.
//!
//! A namespace is evaluated when one of its events changes (batched: at most once a second)
//! and again exactly when an action leaves a window, never on a timer. The state is stored
//! in the cluster before anything is sent: in the status of the namespace's HealingPolicy,
//! or, for a namespace on the controller defaults, in a ConfigMap the controller owns. So a
//! restart or a second replica sends nothing twice; writes carry the resourceVersion.

mod store;
mod tell;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::channel::mpsc;
use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::scheduler::{ScheduleRequest, scheduler};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Context;
use crate::api::HealingEvent;
use crate::api::event::ExportState;
use crate::decide::export::is_final;
use crate::decide::health::{Evaluation, evaluate, observe, summary_stale};
use crate::error::Error;
pub use store::{HEALTH_CONFIGMAP, HEALTH_LABEL, StoredHealth, claim_trial, gate, stored_health};
use store::{Holder, save};

/// Events arriving together are evaluated together, once.
const BATCHING: Duration = Duration::from_secs(1);
/// An evaluation whose write met a newer stored health is redone after this.
const CONFLICT_RETRY: Duration = Duration::from_secs(2);

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
    // Failures in a row per namespace: a failing evaluation backs off (1 s doubling to 5 min,
    // jittered), as reconciles do, instead of retrying every namespace every 2 s in an outage.
    let mut failures: std::collections::HashMap<String, u32> = Default::default();
    let backoff = crate::decide::export::Backoff::default();
    loop {
        let namespace = tokio::select! {
            next = due.next() => match next {
                Some(ns) => ns,
                None => return,
            },
            () = &mut shutdown => return,
        };
        let next = match reconcile(&ctx, &namespace).await {
            Ok(wake_at) => {
                failures.remove(&namespace);
                wake_at.map(|at| instant_of(at, Timestamp::now()))
            }
            Err(error) => {
                let count = failures.entry(namespace.clone()).or_default();
                *count = count.saturating_add(1);
                let retry_in = backoff.delay(*count, &format!("health/{namespace}"));
                warn!(namespace, %error, category = error.category().as_str(), failures = *count, ?retry_in, "evaluating healing health failed; retrying");
                ctx.metrics
                    .reconcile_failed("NamespaceHealth", error.category());
                Some(Instant::now() + retry_in)
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

/// The namespace's export backlog per sink and each type's level and circuit, as gauges; a
/// type the evaluation dropped reads 0 again.
fn report_metrics(
    ctx: &Context,
    namespace: &str,
    events: &BTreeMap<String, Arc<HealingEvent>>,
    stored: &StoredHealth,
    evaluation: &Evaluation,
) {
    for sink in ctx.sinks.names() {
        let waiting = events.values().filter(|e| awaits_export(e, sink)).count();
        ctx.metrics
            .export_backlog(namespace, sink, i64::try_from(waiting).unwrap_or(i64::MAX));
    }
    for (healing_type, health) in &evaluation.types {
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
}

/// A finished event that `sink` does not have yet.
fn awaits_export(event: &HealingEvent, sink: &str) -> bool {
    let status = event.status.as_ref();
    is_final(status)
        && status
            .and_then(|s| s.exports.get(sink))
            .is_none_or(|x| x.state != ExportState::Exported)
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

    let observed = observe(&events, &stored.types, ctx.abandoned_heal_after(), now);
    let evaluation = evaluate(&stored.types, &observed, &policy, now);
    report_metrics(ctx, namespace, &events, &stored, &evaluation);
    let summary_stale = match &stored.holder {
        Holder::Policy(p) => summary_stale(p.status.as_ref(), &evaluation.types),
        Holder::ConfigMap(_) => false,
    };
    if evaluation.types == stored.types && !summary_stale {
        return Ok(evaluation.wake_at);
    }
    // Stored first, then told: a conflict here means another writer got there (a trial
    // claim, another replica) and the evaluation is redone on fresh state.
    let Some(holder_ref) = save(ctx, namespace, &stored, &evaluation.types).await? else {
        debug!(
            namespace,
            "the stored health changed since it was read; evaluating again"
        );
        return Ok(Some(
            now + jiff::SignedDuration::try_from(CONFLICT_RETRY).unwrap_or_default(),
        ));
    };
    for change in &evaluation.changes {
        tell::tell(
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
