//! Telling people of a namespace's health changes: Slack, a Kubernetes Event on the holder
//! of the state, and the log. Failures are logged: the state is stored first, and alerting
//! must not stop the loop.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::ResourceExt;
use kube::runtime::events::EventType;
use tracing::{info, warn};

use crate::api::health::{CircuitState, TypeHealth};
use crate::api::{HealingEvent, HealingPolicySpec};
use crate::controller::{Context, record};
use crate::decide::alerts::Notice;
use crate::decide::health::{Change, occurrence};
use crate::sink::slack::{PatternAlert, RecentAction, pattern_message};

/// Sends a change to Slack, as a Kubernetes Event on the holder and to the log. Failures
/// are logged: the state is stored, and alerting must not stop the loop.
pub async fn tell(
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
        if let Err(error) = record::publish(ctx, holder, type_, reason, "Alert", note).await {
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
