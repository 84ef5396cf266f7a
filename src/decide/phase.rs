//! What a PhaseRun needs next, from its row counts, its healing pass so far and the policy:
//! a pure step of (spec, observation, progress, policy, now).
//!
//! A healing pass re-runs the planner's waves in order. A wave is done when each of its
//! tables has its rows (and a Job trigger's Job has succeeded); until then the reconciler
//! looks again after a backoff that doubles up to the policy's cap, never a fixed sleep.
//! A wave still missing rows after the longest wait is triggered again, up to the policy's
//! attempts per processor. A query that fails is "unknown", never "missing": it triggers
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};

use super::plan::{Node, Plan, PlanError, plan};

/// A processor as the step sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorSpec {
    pub node: Node,
    pub min_rows: i64,
    /// Whether it can be re-run from here at all (it has a trigger).
    pub triggerable: bool,
    /// Its trigger is a Job, whose success is part of "done".
    pub job: bool,
}

/// A Job trigger's Job as last seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// A table's rows for the date, as far as they are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Count {
    Rows(i64),
    /// The query failed (the reason): the count is unknown, which is not zero.
    Unknown(String),
}

/// Row counts for the date, and the Jobs of this pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observation {
    /// None: the phase has no schedule table.
    pub schedule_rows: Option<Count>,
    pub rows: BTreeMap<String, Count>,
    pub jobs: BTreeMap<String, JobState>,
}

/// The healing pass so far, as kept in the status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    /// The pass's waves; empty: no pass under way.
    pub plan: Vec<Vec<String>>,
    pub current_wave: usize,
    /// When the current wave was (last) triggered.
    pub wave_triggered_at: Option<Timestamp>,
    /// Looks at the current wave since it was triggered (the backoff exponent).
    pub checks: u32,
    /// Triggers per processor, over every pass of this PhaseRun.
    pub attempts: BTreeMap<String, u32>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Limits {
    pub max_attempts: u32,
    pub initial_backoff: SignedDuration,
    pub max_backoff: SignedDuration,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The spec cannot be planned (unknown dependency, cycle).
    Invalid(String),
    /// Counts could not be read; look again at `retry_at`.
    ObservationFailed {
        message: String,
        retry_at: Timestamp,
    },
    /// The schedule has no rows for the date: no games, nothing required.
    NotRequired,
    Complete,
    /// Trigger these processors now (wave `wave` of `plan`); a new pass when `new_pass`.
    Trigger {
        processors: Vec<String>,
        plan: Vec<Vec<String>>,
        wave: usize,
        new_pass: bool,
        blocked: BTreeMap<String, String>,
    },
    /// The current wave is not done: look again at `until`.
    Wait {
        until: Timestamp,
    },
    /// Rows are missing and nothing can be re-run: no processor has a trigger.
    NothingTriggerable {
        reason: String,
    },
    /// Attempts ran out with rows still missing.
    GaveUp {
        reason: String,
    },
}

/// The processors whose tables lack rows (known counts only).
pub fn missing(processors: &[ProcessorSpec], obs: &Observation) -> Vec<String> {
    processors
        .iter()
        .filter(|p| matches!(obs.rows.get(&p.node.name), Some(Count::Rows(n)) if *n < p.min_rows))
        .map(|p| p.node.name.clone())
        .collect()
}

/// The wait before the `checks`-th look at a wave: initial, doubling, capped.
pub fn backoff(limits: &Limits, checks: u32) -> SignedDuration {
    let factor = 2i32.saturating_pow(checks.min(20));
    limits
        .initial_backoff
        .checked_mul(factor)
        .unwrap_or(limits.max_backoff)
        .min(limits.max_backoff)
}

pub fn step(
    processors: &[ProcessorSpec],
    obs: &Observation,
    progress: &Progress,
    limits: &Limits,
    now: Timestamp,
) -> Step {
    let failures: Vec<String> = obs
        .schedule_rows
        .iter()
        .chain(obs.rows.values())
        .filter_map(|count| match count {
            Count::Unknown(reason) => Some(reason.clone()),
            Count::Rows(_) => None,
        })
        .collect();
    if !failures.is_empty() {
        return Step::ObservationFailed {
            message: failures.join("; "),
            retry_at: now + backoff(limits, progress.checks),
        };
    }
    if matches!(obs.schedule_rows, Some(Count::Rows(0))) {
        return Step::NotRequired;
    }
    let missing: BTreeSet<String> = missing(processors, obs).into_iter().collect();
    let nodes: Vec<Node> = processors.iter().map(|p| p.node.clone()).collect();
    let by_name: BTreeMap<&str, &ProcessorSpec> = processors
        .iter()
        .map(|p| (p.node.name.as_str(), p))
        .collect();

    if let Some(wave) = progress.plan.get(progress.current_wave) {
        let done = |name: &String| {
            let filled = !missing.contains(name);
            let job_ok = by_name
                .get(name.as_str())
                .is_none_or(|p| !p.job || obs.jobs.get(name) == Some(&JobState::Succeeded));
            filled && job_ok
        };
        if wave.iter().all(done) {
            let next = progress.current_wave + 1;
            if let Some(next_wave) = progress.plan.get(next) {
                return Step::Trigger {
                    processors: next_wave.clone(),
                    plan: progress.plan.clone(),
                    wave: next,
                    new_pass: false,
                    blocked: BTreeMap::new(),
                };
            }
            // The pass is over: judge the phase afresh below.
        } else {
            let triggered = progress.wave_triggered_at.unwrap_or(now);
            let waited = now.duration_since(triggered);
            let failed_job = wave
                .iter()
                .any(|name| obs.jobs.get(name) == Some(&JobState::Failed));
            // A Job still running is waited for however long it runs (its own
            // activeDeadlineSeconds bounds it): a second one would race it for the same rows.
            let again: Vec<String> = wave
                .iter()
                .filter(|n| !done(n) && obs.jobs.get(*n) != Some(&JobState::Running))
                .cloned()
                .collect();
            if again.is_empty() || (waited < limits.max_backoff && !failed_job) {
                return Step::Wait {
                    until: now + backoff(limits, progress.checks),
                };
            }
            // The longest wait is over (or a Job failed): trigger what is still not done.
            if let Some(spent) = again
                .iter()
                .find(|n| progress.attempts.get(*n).copied().unwrap_or(0) >= limits.max_attempts)
            {
                return Step::GaveUp {
                    reason: format!(
                        "{spent} still has no rows after {} attempts",
                        limits.max_attempts
                    ),
                };
            }
            return Step::Trigger {
                processors: again,
                plan: progress.plan.clone(),
                wave: progress.current_wave,
                new_pass: false,
                blocked: BTreeMap::new(),
            };
        }
    }

    if missing.is_empty() {
        return Step::Complete;
    }
    let exhausted: BTreeSet<String> = processors
        .iter()
        .filter(|p| {
            !p.triggerable
                || progress.attempts.get(&p.node.name).copied().unwrap_or(0) >= limits.max_attempts
        })
        .map(|p| p.node.name.clone())
        .collect();
    let Plan { waves, blocked } = match plan(&nodes, &missing, &exhausted) {
        Ok(p) => p,
        Err(e @ (PlanError::UnknownDependency { .. } | PlanError::Cycle(_))) => {
            return Step::Invalid(e.to_string());
        }
    };
    let Some(first) = waves.first() else {
        let names: Vec<&str> = missing.iter().map(String::as_str).collect();
        let untriggerable = missing
            .iter()
            .all(|m| by_name.get(m.as_str()).is_some_and(|p| !p.triggerable));
        return if untriggerable {
            Step::NothingTriggerable {
                reason: format!(
                    "{} missing rows, and no trigger is configured to re-run them",
                    names.join(", ")
                ),
            }
        } else {
            Step::GaveUp {
                reason: format!(
                    "{} missing rows and cannot be re-run: {}",
                    names.join(", "),
                    blocked
                        .iter()
                        .map(|(p, why)| format!("{p}: {why}"))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            }
        };
    };
    Step::Trigger {
        processors: first.clone(),
        plan: waves.clone(),
        wave: 0,
        new_pass: true,
        blocked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, deps: &[&str]) -> ProcessorSpec {
        ProcessorSpec {
            node: Node {
                name: name.into(),
                depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
            },
            min_rows: 1,
            triggerable: true,
            job: false,
        }
    }

    fn chain() -> Vec<ProcessorSpec> {
        vec![p("a", &[]), p("b", &["a"]), p("c", &[])]
    }

    fn rows(counts: &[(&str, i64)]) -> Observation {
        Observation {
            rows: counts
                .iter()
                .map(|(n, c)| ((*n).to_owned(), Count::Rows(*c)))
                .collect(),
            ..Default::default()
        }
    }

    fn limits() -> Limits {
        Limits {
            max_attempts: 2,
            initial_backoff: SignedDuration::from_secs(30),
            max_backoff: SignedDuration::from_mins(4),
        }
    }

    fn now() -> Timestamp {
        "2026-11-25T17:45:00Z".parse().unwrap()
    }

    #[test]
    fn a_missing_table_starts_a_pass_with_the_minimal_plan() {
        let step = step(
            &chain(),
            &rows(&[("a", 0), ("b", 5), ("c", 3)]),
            &Progress::default(),
            &limits(),
            now(),
        );
        assert_eq!(
            step,
            Step::Trigger {
                processors: vec!["a".into()],
                plan: vec![vec!["a".into()], vec!["b".into()]],
                wave: 0,
                new_pass: true,
                blocked: BTreeMap::new(),
            }
        );
    }

    #[test]
    fn a_failed_query_is_unknown_not_missing() {
        let mut obs = rows(&[("a", 0), ("b", 5)]);
        obs.rows.insert("c".into(), Count::Unknown("boom".into()));
        assert!(matches!(
            step(&chain(), &obs, &Progress::default(), &limits(), now()),
            Step::ObservationFailed { .. }
        ));
        let mut no_schedule = rows(&[("a", 0), ("b", 0), ("c", 0)]);
        no_schedule.schedule_rows = Some(Count::Rows(0));
        assert_eq!(
            step(
                &chain(),
                &no_schedule,
                &Progress::default(),
                &limits(),
                now()
            ),
            Step::NotRequired
        );
    }

    #[test]
    fn waves_wait_with_backoff_then_advance_and_complete() {
        let progress = Progress {
            plan: vec![vec!["a".into()], vec!["b".into()]],
            current_wave: 0,
            wave_triggered_at: Some(now()),
            checks: 1,
            attempts: BTreeMap::from([("a".into(), 1)]),
        };
        let waiting = step(
            &chain(),
            &rows(&[("a", 0), ("b", 5), ("c", 3)]),
            &progress,
            &limits(),
            now() + SignedDuration::from_secs(30),
        );
        assert_eq!(
            waiting,
            Step::Wait {
                until: now() + SignedDuration::from_secs(90)
            }
        );
        let filled = rows(&[("a", 7), ("b", 5), ("c", 3)]);
        assert!(matches!(
            step(&chain(), &filled, &progress, &limits(), now()),
            Step::Trigger { wave: 1, new_pass: false, ref processors, .. } if processors == &["b"]
        ));
        let last = Progress {
            current_wave: 1,
            ..progress
        };
        assert_eq!(
            step(&chain(), &filled, &last, &limits(), now()),
            Step::Complete
        );
    }

    #[test]
    fn a_wave_still_empty_after_the_longest_wait_is_triggered_again_then_given_up() {
        let progress = Progress {
            plan: vec![vec!["a".into()], vec!["b".into()]],
            current_wave: 0,
            wave_triggered_at: Some(now()),
            checks: 4,
            attempts: BTreeMap::from([("a".into(), 1)]),
        };
        let later = now() + SignedDuration::from_mins(5);
        let empty = rows(&[("a", 0), ("b", 5), ("c", 3)]);
        assert!(matches!(
            step(&chain(), &empty, &progress, &limits(), later),
            Step::Trigger { wave: 0, ref processors, .. } if processors == &["a"]
        ));
        let spent = Progress {
            attempts: BTreeMap::from([("a".into(), 2)]),
            ..progress
        };
        assert!(matches!(
            step(&chain(), &empty, &spent, &limits(), later),
            Step::GaveUp { .. }
        ));
    }

    #[test]
    fn a_job_wave_waits_for_the_job_and_a_failed_job_retriggers_at_once() {
        let mut procs = chain();
        procs[0].job = true;
        let progress = Progress {
            plan: vec![vec!["a".into()]],
            current_wave: 0,
            wave_triggered_at: Some(now()),
            checks: 0,
            attempts: BTreeMap::from([("a".into(), 1)]),
        };
        let mut obs = rows(&[("a", 9), ("b", 5), ("c", 3)]);
        obs.jobs.insert("a".into(), JobState::Running);
        assert!(matches!(
            step(&procs, &obs, &progress, &limits(), now()),
            Step::Wait { .. }
        ));
        // However long it runs: past the longest wait, a running Job is not raced.
        let much_later = now() + SignedDuration::from_hours(2);
        assert!(matches!(
            step(&procs, &obs, &progress, &limits(), much_later),
            Step::Wait { .. }
        ));
        obs.jobs.insert("a".into(), JobState::Failed);
        assert!(matches!(
            step(&procs, &obs, &progress, &limits(), now()),
            Step::Trigger { wave: 0, .. }
        ));
        obs.jobs.insert("a".into(), JobState::Succeeded);
        assert_eq!(
            step(&procs, &obs, &progress, &limits(), now()),
            Step::Complete
        );
    }

    #[test]
    fn a_phase_with_no_triggers_is_skipped_never_healed() {
        let mut procs = chain();
        for p in &mut procs {
            p.triggerable = false;
        }
        assert!(matches!(
            step(
                &procs,
                &rows(&[("a", 0), ("b", 0), ("c", 0)]),
                &Progress::default(),
                &limits(),
                now()
            ),
            Step::NothingTriggerable { .. }
        ));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let l = limits();
        let waits: Vec<i64> = (0..5).map(|k| backoff(&l, k).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 240]);
    }
}
