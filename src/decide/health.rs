//! A namespace's health per healing type: the pattern level, the alert state and the
//! circuit, stepped forward from the stored state by the type's recent actions. The
//! controller stores what this returns and sends the notices it names, in that order, so a
//! restart sends nothing again.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::alerts::{Notice, next_notice};
use super::breaker::{Permit, on_level, on_trial_outcome, permit};
use super::conditions::{self, Desired};
use super::patterns::{Occurrence, assess};
use crate::api::event::Outcome;
use crate::api::health::{AlertLevel, Circuit, CircuitState, TypeHealth, WindowCounts};
use crate::api::policy::HealingPolicyStatus;
use crate::api::{HealingEvent, HealingPolicySpec};

/// What the controller observed of one type since the last step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// Its finished actions (succeeded or failed; skipped and superseded ones did nothing).
    pub occurrences: Vec<Occurrence>,
    /// The outcome of the circuit's trial heal, once it has one.
    pub trial_succeeded: Option<bool>,
}

/// Something worth telling people about one type.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub healing_type: String,
    pub notice: Option<Notice>,
    /// The circuit's state before and after, when it moved.
    pub circuit: Option<(CircuitState, CircuitState)>,
    pub counts: WindowCounts,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The health to store; quiet types are left out.
    pub types: BTreeMap<String, TypeHealth>,
    pub changes: Vec<Change>,
    /// When a level can next drop without a new action: evaluate again then.
    pub wake_at: Option<Timestamp>,
}

/// Steps every type that has stored health or new observations.
pub fn evaluate(
    previous: &BTreeMap<String, TypeHealth>,
    observed: &BTreeMap<String, Observed>,
    policy: &HealingPolicySpec,
    now: Timestamp,
) -> Evaluation {
    let cooldown = policy.alerts.cooldown.as_span();
    let breaker = &policy.circuit_breaker;
    let nothing = Observed::default();
    let mut types = BTreeMap::new();
    let mut changes = Vec::new();
    let mut wake_at: Option<Timestamp> = None;
    let names: std::collections::BTreeSet<&String> =
        previous.keys().chain(observed.keys()).collect();
    for name in names {
        let before = previous.get(name).cloned().unwrap_or_default();
        let seen = observed.get(name).unwrap_or(&nothing);
        let assessment = assess(&seen.occurrences, &policy.alerts, now);
        let (notice, alert) = next_notice(&before.alert, assessment.level, cooldown, now);

        let mut circuit = before.circuit.clone();
        if let Some(success) = seen.trial_succeeded {
            circuit = on_trial_outcome(&circuit, success, now);
        }
        circuit = if breaker.enabled {
            // Only actions since the circuit last closed can open it again.
            let since = circuit.since().unwrap_or(Timestamp::MIN);
            let recent: Vec<Occurrence> = seen
                .occurrences
                .iter()
                .copied()
                .filter(|o| o.at > since)
                .collect();
            let level = assess(&recent, &policy.alerts, now).level;
            on_level(&circuit, level, breaker.open_on, now)
        } else {
            Circuit::default()
        };

        let moved = (circuit.state != before.circuit.state)
            .then_some((before.circuit.state, circuit.state));
        if notice.is_some() || moved.is_some() {
            changes.push(Change {
                healing_type: name.clone(),
                notice,
                circuit: moved,
                counts: assessment.counts.clone(),
            });
        }
        wake_at = [wake_at, assessment.next_change]
            .into_iter()
            .flatten()
            .min();
        let health = TypeHealth {
            alert,
            counts: assessment.counts,
            circuit,
        };
        if !is_quiet(&health, cooldown, now) {
            types.insert(name.clone(), health);
        }
    }
    Evaluation {
        types,
        changes,
        wake_at,
    }
}

/// Nothing to remember: normal, nothing in any window, circuit closed, no cooldown running.
fn is_quiet(health: &TypeHealth, cooldown: jiff::SignedDuration, now: Timestamp) -> bool {
    let cooling = [AlertLevel::Yellow, AlertLevel::Red, AlertLevel::Critical]
        .into_iter()
        .filter_map(|l| health.alert.last_sent.get(l))
        .any(|t| now.duration_since(t) < cooldown);
    health.alert.level == AlertLevel::Normal
        && !health.alert.alerted
        && health.counts == WindowCounts::default()
        && health.circuit.state == CircuitState::Closed
        && !cooling
}

/// Finished, real actions count towards the windows: dry-runs, skips and superseded heals
/// did nothing, and of an abandoned one nobody knows what it did (a crash, not the pipeline).
pub fn occurrence(event: &HealingEvent) -> Option<Occurrence> {
    let status = event.status.as_ref()?;
    let success = match status.outcome? {
        Outcome::Succeeded => true,
        Outcome::Failed => false,
        Outcome::Pending
        | Outcome::Verifying
        | Outcome::Superseded
        | Outcome::Skipped
        | Outcome::Abandoned => {
            return None;
        }
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

/// The trial's verdict once its event has an outcome. A trial whose event never appeared
/// (its actor crashed between the claim and the record) counts as failed once it is
/// abandoned, so the circuit does not stay half-open for ever.
pub fn trial_verdict(
    events: &BTreeMap<String, Arc<HealingEvent>>,
    health: &TypeHealth,
    abandoned_after: SignedDuration,
    now: Timestamp,
) -> Option<bool> {
    if health.circuit.state != CircuitState::HalfOpen {
        return None;
    }
    let trial = health.circuit.trial.as_deref()?;
    match events.get(trial) {
        Some(event) => match event.status.as_ref().and_then(|s| s.outcome)? {
            Outcome::Pending | Outcome::Verifying => None,
            // A trial that proved nothing leaves the circuit open.
            Outcome::Failed | Outcome::Abandoned => Some(false),
            Outcome::Succeeded | Outcome::Superseded | Outcome::Skipped => Some(true),
        },
        None => {
            let since = health.circuit.since()?;
            (now.duration_since(since) > abandoned_after).then_some(false)
        }
    }
}

/// What the namespace's events (by name) say of each type since the stored state: its
/// finished actions, and the verdict of a trial under way.
pub fn observe(
    events: &BTreeMap<String, Arc<HealingEvent>>,
    stored: &BTreeMap<String, TypeHealth>,
    abandoned_after: SignedDuration,
    now: Timestamp,
) -> BTreeMap<String, Observed> {
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
    for (healing_type, health) in stored {
        if let Some(verdict) = trial_verdict(events, health, abandoned_after, now) {
            observed
                .entry(healing_type.clone())
                .or_default()
                .trial_succeeded = Some(verdict);
        }
    }
    observed
}

/// A HealingPolicy's status holding `types`: the worst level, the open circuits and the
/// `Alerting` and `CircuitOpen` conditions, merged into `previous`'s.
pub fn policy_status(
    previous: Option<&HealingPolicyStatus>,
    types: &BTreeMap<String, TypeHealth>,
    generation: Option<i64>,
    now: Timestamp,
) -> HealingPolicyStatus {
    let level = worst_level(types);
    let open = open_circuits(types);
    let desired = [
        Desired::new(
            "Alerting",
            level != AlertLevel::Normal,
            level.as_str(),
            format!("highest pattern level: {}", level.as_str()),
        ),
        if open.is_empty() {
            Desired::new(
                "CircuitOpen",
                false,
                "AllClosed",
                "every healing type may act",
            )
        } else {
            Desired::new(
                "CircuitOpen",
                true,
                "HealsSkipped",
                format!("heals skipped for: {}", open.join(", ")),
            )
        },
    ];
    let existing = previous
        .map(|p| p.conditions.as_slice())
        .unwrap_or_default();
    HealingPolicyStatus {
        observed_generation: generation,
        level,
        open_circuits: open,
        healing_types: types.clone(),
        conditions: conditions::merge(existing, &desired, generation, now),
    }
}

/// Whether a policy's status summary (level, open circuits) disagrees with `types`.
pub fn summary_stale(
    status: Option<&HealingPolicyStatus>,
    types: &BTreeMap<String, TypeHealth>,
) -> bool {
    status.is_none_or(|s| s.level != worst_level(types) || s.open_circuits != open_circuits(types))
}

/// Whether a heal of a healing type may act now, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    Act,
    /// The one trial heal of an open circuit: claim it before acting.
    Trial,
    /// Record the heal as skipped for `reason`; look again at `until` (None: on a change).
    Skip {
        reason: &'static str,
        /// Distinguishes skip episodes, so each is recorded once.
        episode: String,
        until: Option<Timestamp>,
    },
}

/// The gate for a heal of `healing_type` whose circuit is `circuit`, under `policy`: paused
/// types skip; an open circuit skips until its cooldown ends, then lets one trial through; a
/// trial under way makes others look again once it would count as abandoned.
/// `circuit` is read only when the breaker applies (a paused type needs no stored health).
pub fn gate(
    policy: &HealingPolicySpec,
    healing_type: &str,
    circuit: impl FnOnce() -> Circuit,
    abandoned_after: SignedDuration,
    now: Timestamp,
) -> Gate {
    if policy.paused_types.iter().any(|t| t == healing_type) {
        return Gate::Skip {
            reason: "paused",
            episode: String::new(),
            until: None,
        };
    }
    if !policy.circuit_breaker.enabled {
        return Gate::Act;
    }
    let circuit = circuit();
    let episode = circuit
        .since()
        .map(|t| t.as_millisecond().to_string())
        .unwrap_or_default();
    match permit(&circuit, policy.circuit_breaker.cooldown.as_span(), now) {
        Permit::Heal => Gate::Act,
        Permit::Trial => Gate::Trial,
        Permit::Skip { until } => Gate::Skip {
            reason: "circuit_open",
            episode,
            until: until.or_else(|| now.checked_add(abandoned_after).ok()),
        },
    }
}

/// The highest level of any type.
pub fn worst_level(types: &BTreeMap<String, TypeHealth>) -> AlertLevel {
    types
        .values()
        .map(|h| h.alert.level)
        .max()
        .unwrap_or_default()
}

/// The types whose circuit is not closed.
pub fn open_circuits(types: &BTreeMap<String, TypeHealth>) -> Vec<String> {
    types
        .iter()
        .filter(|(_, h)| h.circuit.state != CircuitState::Closed)
        .map(|(t, _)| t.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::SignedDuration;

    fn at(minute: i64) -> Timestamp {
        "2026-11-25T12:00:00Z".parse::<Timestamp>().unwrap() + SignedDuration::from_mins(minute)
    }

    fn observed(occurrences: &[(i64, bool)]) -> BTreeMap<String, Observed> {
        let occurrences = occurrences
            .iter()
            .map(|(m, success)| Occurrence {
                at: at(*m),
                success: *success,
            })
            .collect();
        BTreeMap::from([(
            "batch_cleanup".to_owned(),
            Observed {
                occurrences,
                trial_succeeded: None,
            },
        )])
    }

    fn event(name: &str, outcome: Option<Outcome>, dry_run: bool) -> Arc<HealingEvent> {
        let mut event: HealingEvent = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingEvent",
            "metadata": {"name": name},
            "spec": {"healingId": name, "timestamp": "2026-11-25T12:00:00.000000Z",
                     "healingType": "batch_cleanup", "triggerReason": "r", "actionTaken": "a",
                     "rootCause": "no_progress", "dryRun": dry_run,
                     "target": {"kind": "PredictionBatch", "name": "b"}},
        }))
        .unwrap();
        event.status = outcome.map(|o| crate::api::event::HealingEventStatus {
            outcome: Some(o),
            finished_at: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(5))),
            ..Default::default()
        });
        Arc::new(event)
    }

    #[test]
    fn only_finished_real_actions_count_and_a_trial_is_judged_by_its_outcome() {
        let cases = [
            (Some(Outcome::Succeeded), false, Some(true)),
            (Some(Outcome::Failed), false, Some(false)),
            (Some(Outcome::Succeeded), true, None),
            (Some(Outcome::Skipped), false, None),
            (Some(Outcome::Superseded), false, None),
            (Some(Outcome::Pending), false, None),
            (None, false, None),
        ];
        for (outcome, dry_run, counted) in cases {
            let o = occurrence(&event("e", outcome, dry_run));
            assert_eq!(
                o.map(|o| o.success),
                counted,
                "{outcome:?} dry_run {dry_run}"
            );
            if let Some(o) = o {
                assert_eq!(o.at, at(5), "counted when it finished");
            }
        }
        let abandoned = SignedDuration::from_secs(30);
        let half_open = TypeHealth {
            circuit: crate::decide::breaker::trial_started("trial", at(0)),
            ..Default::default()
        };
        let judged = |outcome: Option<Outcome>, now| {
            let events = BTreeMap::from([("trial".to_owned(), event("trial", outcome, false))]);
            trial_verdict(&events, &half_open, abandoned, now)
        };
        assert_eq!(judged(Some(Outcome::Failed), at(1)), Some(false));
        assert_eq!(judged(Some(Outcome::Superseded), at(1)), Some(true));
        assert_eq!(judged(Some(Outcome::Pending), at(1)), None);
        let none = BTreeMap::new();
        assert_eq!(
            trial_verdict(&none, &half_open, abandoned, at(0)),
            None,
            "its actor may still record it"
        );
        assert_eq!(
            trial_verdict(&none, &half_open, abandoned, at(1)),
            Some(false),
            "abandoned"
        );
        assert_eq!(
            trial_verdict(&none, &TypeHealth::default(), abandoned, at(1)),
            None
        );
    }

    #[test]
    fn the_policy_status_summarises_levels_and_circuits_in_conditions() {
        let mut types = BTreeMap::new();
        let calm = policy_status(None, &types, Some(2), at(0));
        assert_eq!(
            (calm.level, calm.open_circuits.len()),
            (AlertLevel::Normal, 0)
        );
        let reason = |s: &HealingPolicyStatus, t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| (c.status.clone(), c.reason.clone()))
        };
        assert_eq!(
            reason(&calm, "Alerting"),
            Some(("False".into(), "Normal".into()))
        );
        assert_eq!(
            reason(&calm, "CircuitOpen"),
            Some(("False".into(), "AllClosed".into()))
        );
        let mut red = TypeHealth {
            circuit: Circuit::in_state(CircuitState::Open, at(0)),
            ..Default::default()
        };
        red.alert.level = AlertLevel::Red;
        types.insert("batch_cleanup".to_owned(), red);
        assert!(summary_stale(Some(&calm), &types));
        let alarmed = policy_status(Some(&calm), &types, Some(2), at(1));
        assert_eq!(alarmed.level, AlertLevel::Red);
        assert_eq!(alarmed.open_circuits, ["batch_cleanup"]);
        assert_eq!(alarmed.observed_generation, Some(2));
        assert_eq!(
            reason(&alarmed, "Alerting"),
            Some(("True".into(), "Red".into()))
        );
        assert_eq!(
            reason(&alarmed, "CircuitOpen"),
            Some(("True".into(), "HealsSkipped".into()))
        );
        assert!(!summary_stale(Some(&alarmed), &types));
        assert!(summary_stale(None, &types));
    }

    #[test]
    fn the_gate_skips_paused_types_and_open_circuits_and_lets_one_trial_through() {
        let abandoned = SignedDuration::from_secs(30);
        let mut policy = HealingPolicySpec::default();
        let cooldown = policy.circuit_breaker.cooldown.as_span();
        let closed = Circuit::default();
        let open = Circuit::in_state(CircuitState::Open, at(0));
        let trial = crate::decide::breaker::trial_started("h1", at(0));
        let gate_at = |policy: &HealingPolicySpec, circuit: &Circuit, now| {
            gate(policy, "batch_cleanup", || circuit.clone(), abandoned, now)
        };
        assert_eq!(gate_at(&policy, &closed, at(0)), Gate::Act);
        let episode = at(0).as_millisecond().to_string();
        assert_eq!(
            gate_at(&policy, &open, at(1)),
            Gate::Skip {
                reason: "circuit_open",
                episode: episode.clone(),
                until: Some(at(0) + cooldown),
            }
        );
        assert_eq!(gate_at(&policy, &open, at(0) + cooldown), Gate::Trial);
        // A trial under way: others look again once it would count as abandoned.
        assert_eq!(
            gate_at(&policy, &trial, at(1)),
            Gate::Skip {
                reason: "circuit_open",
                episode,
                until: Some(at(1) + abandoned),
            }
        );
        policy.circuit_breaker.enabled = false;
        assert_eq!(gate_at(&policy, &open, at(1)), Gate::Act);
        policy.paused_types = vec!["batch_cleanup".into()];
        assert!(matches!(
            gate_at(&policy, &closed, at(0)),
            Gate::Skip {
                reason: "paused",
                until: None,
                ..
            }
        ));
    }

    #[test]
    fn three_heals_alert_yellow_once_and_the_window_emptying_resolves() {
        let policy = HealingPolicySpec::default();
        let first = evaluate(
            &BTreeMap::new(),
            &observed(&[(0, true), (1, true)]),
            &policy,
            at(1),
        );
        assert!(first.changes.is_empty());
        let three = observed(&[(0, true), (1, true), (2, true)]);
        let second = evaluate(&first.types, &three, &policy, at(2));
        assert_eq!(second.changes.len(), 1);
        assert_eq!(
            second.changes[0].notice,
            Some(Notice::Alert(AlertLevel::Yellow))
        );
        assert_eq!(second.wake_at, Some(at(60)));
        // Evaluated again (another event's export, a restart): nothing new to say.
        let again = evaluate(&second.types, &three, &policy, at(3));
        assert!(again.changes.is_empty());
        // The first heal leaves the hour: back to normal, one resolution.
        let later = evaluate(&again.types, &three, &policy, at(60));
        assert_eq!(
            later.changes[0].notice,
            Some(Notice::Resolved {
                was: AlertLevel::Yellow
            })
        );
        // Still remembered while the yellow cooldown runs, so a flap does not re-alert.
        assert!(later.types.contains_key("batch_cleanup"));
        let quiet = evaluate(&later.types, &observed(&[]), &policy, at(200));
        assert!(quiet.types.is_empty() && quiet.changes.is_empty());
    }

    #[test]
    fn failures_open_the_circuit_and_a_successful_trial_closes_it_for_good() {
        let policy = HealingPolicySpec::default();
        // 3 of 5 failed: critical.
        let failing = [(0, false), (1, false), (2, false), (3, true), (4, true)];
        let opened = evaluate(&BTreeMap::new(), &observed(&failing), &policy, at(4));
        let health = &opened.types["batch_cleanup"];
        assert_eq!(health.alert.level, AlertLevel::Critical);
        assert_eq!(health.circuit.state, CircuitState::Open);
        assert_eq!(
            opened.changes[0].circuit,
            Some((CircuitState::Closed, CircuitState::Open))
        );
        // The trial (at minute 35) succeeds: closed, and the old failures do not reopen it.
        let mut types = opened.types.clone();
        types.get_mut("batch_cleanup").unwrap().circuit =
            crate::decide::breaker::trial_started("trial", at(34));
        let mut seen = observed(&[
            (0, false),
            (1, false),
            (2, false),
            (3, true),
            (4, true),
            (35, true),
        ]);
        seen.get_mut("batch_cleanup").unwrap().trial_succeeded = Some(true);
        let closed = evaluate(&types, &seen, &policy, at(35));
        assert_eq!(
            closed.types["batch_cleanup"].circuit.state,
            CircuitState::Closed
        );
        assert_eq!(
            closed.types["batch_cleanup"].alert.level,
            AlertLevel::Critical
        );
        seen.get_mut("batch_cleanup").unwrap().trial_succeeded = None;
        let still = evaluate(&closed.types, &seen, &policy, at(36));
        assert_eq!(
            still.types["batch_cleanup"].circuit.state,
            CircuitState::Closed
        );
    }

    #[test]
    fn a_disabled_breaker_never_opens() {
        let mut policy = HealingPolicySpec::default();
        policy.circuit_breaker.enabled = false;
        let failing = [(0, false), (1, false), (2, false), (3, false), (4, false)];
        let e = evaluate(&BTreeMap::new(), &observed(&failing), &policy, at(4));
        assert_eq!(e.types["batch_cleanup"].circuit.state, CircuitState::Closed);
        assert_eq!(e.types["batch_cleanup"].alert.level, AlertLevel::Critical);
    }

    #[test]
    fn summaries_name_the_worst_level_and_the_open_circuits() {
        let policy = HealingPolicySpec::default();
        let failing = [(0, false), (1, false), (2, false), (3, true), (4, true)];
        let e = evaluate(&BTreeMap::new(), &observed(&failing), &policy, at(4));
        assert_eq!(worst_level(&e.types), AlertLevel::Critical);
        assert_eq!(open_circuits(&e.types), ["batch_cleanup"]);
        assert_eq!(worst_level(&BTreeMap::new()), AlertLevel::Normal);
    }
}
