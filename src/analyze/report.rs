//! The report, computed from records with no I/O: totals and success rate, the breakdown by
//! healing type, the top root causes, time to heal, recurring targets and recommendations.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use jiff::Timestamp;
use serde::Serialize;

use super::record::{BatchRecord, Record};
use super::window::Window;

/// Below this overall success rate the report says so (the original's rule).
const LOW_SUCCESS_RATE: f64 = 0.80;
/// A healing type this frequent calls for a preventive fix (the original's rule).
const FREQUENT_TYPE: usize = 10;
/// A target healed this often has a cause worth fixing.
const RECURRING_TARGET: usize = 3;
/// The original's goal: healed within 5 minutes.
const SLOW_HEAL_SECONDS: f64 = 300.0;
const TOP_ROOT_CAUSES: usize = 5;
/// Noticing a problem later than this after it became detectable means the controller
/// lags (it is requeued for the exact instant).
const SLOW_DETECTION_SECONDS: f64 = 60.0;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    pub start: Timestamp,
    pub end: Timestamp,
    pub healing_type: Option<String>,
    /// Healing actions taken (dry runs and skips are counted apart).
    pub total: usize,
    pub succeeded: usize,
    pub failed: usize,
    /// 0-1; null with no actions.
    pub success_rate: Option<f64>,
    pub dry_run: usize,
    pub circuit_skipped: usize,
    /// Rows seen more than once (at-least-once export), each counted once.
    pub duplicate_rows: usize,
    pub by_type: BTreeMap<String, TypeStats>,
    /// Distinct root causes among the actions (the top ones are listed below).
    pub distinct_root_causes: usize,
    pub top_root_causes: Vec<RootCause>,
    /// The problem detectable (its threshold instant, else its onset) to noticed, over every
    /// action that records it.
    pub time_to_detect: Durations,
    /// The problem's onset to its target seen healthy, over verified successes.
    pub time_to_heal: Durations,
    /// The threshold instant to the recorded outcome, over successes (the only measure of
    /// rows written before outcomes were verified; not how long anything was broken).
    pub heal_latency: Durations,
    /// Verified heals of stalled batches (`batch_cleanup` successes).
    pub stalls_healed_by_us: usize,
    /// Pauses that ended without a heal, over the batches finished in the window; null when
    /// no batch outcomes could be read (no `batch_outcomes` table).
    pub recovered_by_themselves: Option<u64>,
    /// The longest of those pauses.
    pub longest_pause_s: Option<f64>,
    pub recurring_targets: Vec<RecurringTarget>,
    pub recommendations: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TypeStats {
    pub count: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub success_rate: f64,
    pub time_to_detect: Durations,
    pub time_to_heal: Durations,
}

/// A duration's figures over the records that have it, in seconds; `without` counts the
/// records it would cover that lack it (the original's rows, rows from before it was
/// recorded), left out of the figures.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Durations {
    pub count: usize,
    pub without: usize,
    pub mean_s: Option<f64>,
    pub p50_s: Option<f64>,
    pub p95_s: Option<f64>,
}

impl Durations {
    /// The figures of `field` over `records`.
    fn of<'a>(
        records: impl IntoIterator<Item = &'a &'a Record>,
        field: impl Fn(&Record) -> Option<f64>,
    ) -> Self {
        let mut without = 0;
        let mut values = Vec::new();
        for r in records {
            match field(r).filter(|s| s.is_finite()) {
                Some(s) => values.push(s),
                None => without += 1,
            }
        }
        values.sort_by(f64::total_cmp);
        Self {
            count: values.len(),
            without,
            mean_s: (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64),
            p50_s: nearest_rank(&values, 0.50),
            p95_s: nearest_rank(&values, 0.95),
        }
    }

    /// Detection over every action; healing and latency over successes.
    fn detect<'a>(actions: impl IntoIterator<Item = &'a &'a Record>) -> Self {
        Self::of(actions, |r| r.time_to_detect_seconds)
    }

    pub(super) fn heal<'a>(actions: impl IntoIterator<Item = &'a &'a Record>) -> Self {
        let succeeded = actions.into_iter().filter(|r| r.success);
        Self::of(succeeded, |r| r.time_to_heal_seconds)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RootCause {
    pub key: String,
    pub count: usize,
    /// The latest trigger reason under this key.
    pub example: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecurringTarget {
    pub target: String,
    pub count: usize,
}

/// A stable key for a record: its own root cause, or one derived from its trigger reason.
pub fn root_cause_key(record: &Record) -> String {
    match record.root_cause.as_deref().map(str::trim) {
        Some(key) if !key.is_empty() => key.to_owned(),
        _ => derive_root_cause(&record.trigger_reason),
    }
}

/// The original's trigger reasons embed ids, percentages and times; dropping every word that
/// holds a digit and keeping the rest as snake case groups "Batch stalled at 87.5% (injured
/// players)" with "Batch stalled at 91.2% (injured players)".
pub fn derive_root_cause(trigger_reason: &str) -> String {
    let words: Vec<String> = trigger_reason
        .split_whitespace()
        .filter(|w| !w.chars().any(|c| c.is_ascii_digit()))
        .flat_map(|w| {
            w.split(|c: char| !c.is_alphabetic())
                .filter(|part| !part.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .collect();
    let mut key = String::new();
    for word in words {
        if key.len() + word.len() + 1 > 64 {
            break;
        }
        if !key.is_empty() {
            key.push('_');
        }
        key.push_str(&word);
    }
    if key.is_empty() {
        "unknown".into()
    } else {
        key
    }
}

/// The records a report covers: in the window, of the type when given, each healing_id once
/// per namespace (two namespaces may use one name), in time order.
pub struct Selection<'a> {
    pub records: Vec<&'a Record>,
    /// Rows seen again under a namespace and healing_id already selected.
    pub duplicate_rows: usize,
}

pub fn select<'a>(
    records: &'a [Record],
    window: Window,
    healing_type: Option<&str>,
) -> Selection<'a> {
    let mut seen = HashSet::new();
    let mut duplicate_rows = 0;
    let mut selected: Vec<&Record> = Vec::new();
    for r in records {
        if !window.contains(r.timestamp) || healing_type.is_some_and(|t| t != r.healing_type) {
            continue;
        }
        if seen.insert((r.namespace.as_deref(), r.healing_id.as_str())) {
            selected.push(r);
        } else {
            duplicate_rows += 1;
        }
    }
    selected.sort_by(|a, b| (a.timestamp, &a.healing_id).cmp(&(b.timestamp, &b.healing_id)));
    Selection {
        records: selected,
        duplicate_rows,
    }
}

/// The report over `records` (any order, duplicates allowed) and the finished `batches` (None:
/// none could be read) in `window`, of one healing type when given.
pub fn report(
    records: &[Record],
    batches: Option<&[BatchRecord]>,
    window: Window,
    healing_type: Option<&str>,
) -> Report {
    let Selection {
        records: selected,
        duplicate_rows,
    } = select(records, window, healing_type);
    let dry_run = selected.iter().filter(|r| r.dry_run).count();
    let circuit_skipped = selected.iter().filter(|r| r.circuit_skipped()).count();
    let actions: Vec<&Record> = selected
        .into_iter()
        .filter(|r| !r.dry_run && !r.circuit_skipped())
        .collect();
    let total = actions.len();
    let succeeded = actions.iter().filter(|r| r.success).count();

    let mut by_type: BTreeMap<String, TypeStats> = BTreeMap::new();
    for r in &actions {
        let stats = by_type.entry(r.healing_type.clone()).or_default();
        stats.count += 1;
        if r.success {
            stats.succeeded += 1;
        } else {
            stats.failed += 1;
        }
    }
    for (healing_type, stats) in &mut by_type {
        stats.success_rate = stats.succeeded as f64 / stats.count as f64;
        let of_type: Vec<&Record> = actions
            .iter()
            .copied()
            .filter(|r| &r.healing_type == healing_type)
            .collect();
        stats.time_to_detect = Durations::detect(&of_type);
        stats.time_to_heal = Durations::heal(&of_type);
    }

    // Records are in time order, so the last reason seen under a key is the latest.
    let mut causes: BTreeMap<String, RootCause> = BTreeMap::new();
    for r in &actions {
        let key = root_cause_key(r);
        let cause = causes.entry(key.clone()).or_insert_with(|| RootCause {
            key,
            count: 0,
            example: String::new(),
        });
        cause.count += 1;
        cause.example = r.trigger_reason.clone();
    }
    let distinct_root_causes = causes.len();
    let mut top_root_causes: Vec<RootCause> = causes.into_values().collect();
    top_root_causes.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
    top_root_causes.truncate(TOP_ROOT_CAUSES);

    let time_to_detect = Durations::detect(&actions);
    let time_to_heal = Durations::heal(&actions);
    let successes: Vec<&Record> = actions.iter().copied().filter(|r| r.success).collect();
    let heal_latency = Durations::of(&successes, |r| r.heal_latency_seconds);
    let stalls_healed_by_us = successes
        .iter()
        .filter(|r| r.healing_type == crate::api::event::BATCH_CLEANUP)
        .count();
    let finished: Vec<&BatchRecord> = batches
        .unwrap_or_default()
        .iter()
        .filter(|b| window.contains(b.finished_time))
        .collect();
    let recovered_by_themselves = batches.map(|_| finished.iter().map(|b| b.pauses).sum());
    let longest_pause_s = finished
        .iter()
        .filter_map(|b| b.longest_pause_seconds)
        .reduce(f64::max);

    // Heals of a target. A phase re-run pass triggers several processors under one
    // correlation id of its own: one heal. Other types carry the pipeline run's correlation
    // id, which many separate heals share: each action counts.
    let mut per_target: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for r in &actions {
        if let Some(t) = r.target.as_deref() {
            let pass = match (r.healing_type.as_str(), r.correlation_id.as_deref()) {
                (crate::api::event::PHASE_RERUN, Some(pass)) => pass,
                _ => &r.healing_id,
            };
            per_target.entry(t).or_default().insert(pass);
        }
    }
    let mut recurring_targets: Vec<RecurringTarget> = per_target
        .into_iter()
        .filter(|(_, passes)| passes.len() > 1)
        .map(|(target, passes)| RecurringTarget {
            target: target.to_owned(),
            count: passes.len(),
        })
        .collect();
    recurring_targets.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.target.cmp(&b.target)));

    let mut report = Report {
        start: window.start,
        end: window.end,
        healing_type: healing_type.map(str::to_owned),
        total,
        succeeded,
        failed: total - succeeded,
        success_rate: (total > 0).then(|| succeeded as f64 / total as f64),
        dry_run,
        circuit_skipped,
        duplicate_rows,
        by_type,
        distinct_root_causes,
        top_root_causes,
        time_to_detect,
        time_to_heal,
        heal_latency,
        stalls_healed_by_us,
        recovered_by_themselves,
        longest_pause_s,
        recurring_targets,
        recommendations: Vec::new(),
    };
    report.recommendations = recommendations(&report);
    report
}

/// The value at or below which `q` of the sorted values fall (nearest rank).
fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn recommendations(report: &Report) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(rate) = report.success_rate
        && rate < LOW_SUCCESS_RATE
    {
        out.push(format!(
            "Overall success rate is {:.1}% (below {:.0}%): look at the failing healing types first.",
            rate * 100.0,
            LOW_SUCCESS_RATE * 100.0
        ));
    }
    for (healing_type, stats) in &report.by_type {
        if stats.count >= FREQUENT_TYPE {
            out.push(format!(
                "{healing_type} ran {} times: implement preventive fixes so it is needed less.",
                stats.count
            ));
        }
    }
    for t in report
        .recurring_targets
        .iter()
        .filter(|t| t.count >= RECURRING_TARGET)
    {
        out.push(format!(
            "{} was healed {} times: fix what keeps breaking it rather than healing it again.",
            t.target, t.count
        ));
    }
    // The original's goal was against its latency (threshold to action); a verified time to
    // heal runs from the onset, so the stall threshold is part of it.
    if let Some(p95) = report.heal_latency.p95_s
        && p95 > SLOW_HEAL_SECONDS
    {
        out.push(format!(
            "95% of heals took up to {p95:.0} s after their threshold, above the 5-minute \
             goal: check the controller's backlog."
        ));
    }
    if let Some(recovered) = report.recovered_by_themselves
        && recovered > 0
        && recovered as usize >= report.stalls_healed_by_us
    {
        out.push(format!(
            "Batches recovered by themselves {recovered} time(s) against {} stall(s) healed: \
             a longer stallAfter may heal fewer batches that would have finished anyway \
             (watch the longest pause).",
            report.stalls_healed_by_us
        ));
    }
    if let Some(p95) = report.time_to_detect.p95_s
        && p95 > SLOW_DETECTION_SECONDS
    {
        out.push(format!(
            "95% of problems were noticed up to {p95:.0} s after they became detectable: \
             check that the controller keeps up with its watches."
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(id: &str, minute: i64, healing_type: &str, success: bool) -> Record {
        Record {
            healing_id: id.into(),
            namespace: Some("ns".into()),
            timestamp: at("2026-11-24T12:00:00Z") + jiff::SignedDuration::from_mins(minute),
            healing_type: healing_type.into(),
            trigger_reason: format!("{id} stalled"),
            action_taken: "marked complete".into(),
            success,
            before_state: None,
            after_state: None,
            metadata: None,
            root_cause: Some("no_progress".into()),
            correlation_id: None,
            target: Some(format!("PredictionBatch/ns/{id}")),
            dry_run: false,
            outcome: Some(if success { "Succeeded" } else { "Failed" }.into()),
            heal_latency_seconds: Some(minute as f64),
            time_to_detect_seconds: None,
            time_to_heal_seconds: None,
        }
    }

    fn day() -> Window {
        Window {
            start: at("2026-11-24T00:00:00Z"),
            end: at("2026-11-25T00:00:00Z"),
        }
    }

    #[test]
    fn derived_root_causes_group_reasons_that_differ_only_in_numbers_and_ids() {
        let a = derive_root_cause("Batch stalled at 87.5% (injured players)");
        assert_eq!(a, "batch_stalled_at_injured_players");
        assert_eq!(
            a,
            derive_root_cause("Batch stalled at 91.2% (injured players)")
        );
        assert_eq!(
            derive_root_cause("batch_2026-11-24_1795480001 stalled for 16 minutes at 23:41:07"),
            "stalled_for_minutes_at"
        );
        assert_eq!(derive_root_cause("42 99.9%"), "unknown");
        assert!(derive_root_cause(&"word ".repeat(100)).len() <= 64);
    }

    #[test]
    fn totals_rates_and_types_count_each_healing_id_once() {
        let mut records = vec![
            record("a", 1, "batch_cleanup", true),
            record("b", 2, "batch_cleanup", false),
            record("c", 3, "retry", true),
            record("d", 4, "retry", true),
        ];
        records.push(records[0].clone()); // exported twice
        let r = report(&records, None, day(), None);
        assert_eq!(
            (r.total, r.succeeded, r.failed, r.duplicate_rows),
            (4, 3, 1, 1)
        );
        assert_eq!(r.success_rate, Some(0.75));
        assert_eq!(r.by_type["batch_cleanup"].success_rate, 0.5);
        assert_eq!(r.by_type["retry"].count, 2);
        assert!(r.recommendations[0].starts_with("Overall success rate is 75.0%"));

        // The same name in another namespace is another action.
        let mut elsewhere = records[0].clone();
        elsewhere.namespace = Some("other".into());
        let with_other = [records.clone(), vec![elsewhere]].concat();
        let r = report(&with_other, None, day(), None);
        assert_eq!((r.total, r.duplicate_rows), (5, 1));

        let only_retry = report(&records, None, day(), Some("retry"));
        assert_eq!((only_retry.total, only_retry.success_rate), (2, Some(1.0)));
        assert!(only_retry.recommendations.is_empty());
    }

    #[test]
    fn dry_runs_skips_and_events_outside_the_window_are_apart() {
        let mut dry = record("dry", 5, "batch_cleanup", false);
        dry.dry_run = true;
        dry.outcome = Some("Skipped".into());
        let mut skipped = record("open-circuit", 6, "batch_cleanup", false);
        skipped.outcome = Some("Skipped".into());
        let late = record("tomorrow", 24 * 60, "batch_cleanup", true);
        let r = report(
            &[dry, skipped, late, record("a", 1, "retry", true)],
            None,
            day(),
            None,
        );
        assert_eq!((r.total, r.dry_run, r.circuit_skipped), (1, 1, 1));
    }

    #[test]
    fn root_causes_latency_recurrence_and_their_recommendations() {
        let mut records: Vec<Record> = (0..12)
            .map(|i| record(&format!("r{i}"), i, "retry", true))
            .collect();
        for r in records.iter_mut().take(4) {
            r.target = Some("Worker/ns/flaky".into());
            r.root_cause = Some("feature_store_timeout".into());
        }
        records[11].heal_latency_seconds = Some(900.0);
        let mut original = record("orig", 30, "retry", true);
        original.root_cause = None;
        original.trigger_reason = "Batch stalled at 87.5% (injured players)".into();
        records.push(original);

        // One phase pass of three triggers is one heal of its target.
        for (i, processor) in ["a", "b", "c"].iter().enumerate() {
            let mut trigger = record(&format!("p{i}"), 30, "phase_rerun", true);
            trigger.target = Some("PhaseRun/ns/phase4".into());
            trigger.correlation_id = Some("pass-1".into());
            trigger.root_cause = Some(format!("missing_rows:d.{processor}"));
            records.push(trigger);
        }

        let r = report(&records, None, day(), None);
        assert_eq!(r.top_root_causes[0].key, "no_progress");
        assert_eq!(r.top_root_causes[0].count, 8);
        assert_eq!(r.top_root_causes[0].example, "r11 stalled");
        assert_eq!(r.top_root_causes[1].key, "feature_store_timeout");
        assert_eq!(r.top_root_causes[2].key, "batch_stalled_at_injured_players");
        assert_eq!(
            r.recurring_targets,
            [RecurringTarget {
                target: "Worker/ns/flaky".into(),
                count: 4
            }]
        );
        // Latencies 0..=10 and 900 (and 30): the p95 of 13 values is the 13th.
        assert_eq!(r.heal_latency.p95_s, Some(900.0));
        let text = r.recommendations.join("\n");
        assert!(text.contains("retry ran 13 times"), "{text}");
        assert!(
            text.contains("Worker/ns/flaky was healed 4 times"),
            "{text}"
        );
        assert!(text.contains("above the 5-minute goal"), "{text}");
    }

    #[test]
    fn times_are_figured_over_the_records_that_have_them_by_type_and_the_rest_are_counted() {
        let mut records: Vec<Record> = (0..10)
            .map(|i| {
                let mut r = record(&format!("h{i}"), i, "batch_cleanup", i != 9);
                r.time_to_detect_seconds = Some(0.001 * f64::from(i as u32 + 1));
                r.time_to_heal_seconds = (i != 9).then(|| 900.0 + f64::from(i as u32) * 10.0);
                r
            })
            .collect();
        // The original's rows have neither.
        records.push(record("original-1", 20, "batch_cleanup", true));
        records.push(record("original-2", 21, "phase_rerun", true));
        let r = report(&records, None, day(), None);
        let detect = &r.time_to_detect;
        assert_eq!((detect.count, detect.without), (10, 2));
        assert!((detect.mean_s.unwrap() - 0.0055).abs() < 1e-12);
        assert_eq!(detect.p50_s, Some(0.005));
        assert_eq!(detect.p95_s, Some(0.010));
        // Nine verified successes; the failure has no time to heal and is not "without".
        let heal = &r.time_to_heal;
        assert_eq!((heal.count, heal.without), (9, 2));
        assert_eq!(heal.p50_s, Some(940.0));
        assert_eq!(heal.p95_s, Some(980.0));
        let cleanup = &r.by_type["batch_cleanup"];
        assert_eq!(
            (cleanup.time_to_heal.count, cleanup.time_to_heal.without),
            (9, 1)
        );
        let rerun = &r.by_type["phase_rerun"];
        assert_eq!(
            (rerun.time_to_detect.count, rerun.time_to_detect.without),
            (0, 1)
        );
        assert_eq!(rerun.time_to_heal.mean_s, None);
        assert_eq!(
            r.heal_latency.count, 11,
            "every success has the older measure"
        );
    }

    #[test]
    fn stalls_we_healed_and_pauses_that_ended_by_themselves_are_set_side_by_side() {
        let records = vec![
            record("a", 10, "batch_cleanup", true),
            record("b", 20, "batch_cleanup", false),
            record("c", 30, "retry", true),
        ];
        let batch = |minute: i64, pauses: u64, longest: Option<f64>| BatchRecord {
            namespace: Some("ns".into()),
            batch_id: format!("batch-{minute}"),
            finished: "completed".into(),
            finished_time: at("2026-11-24T12:00:00Z") - jiff::SignedDuration::from_mins(minute),
            pauses,
            longest_pause_seconds: longest,
        };
        let batches = [
            batch(5, 2, Some(95.5)),
            batch(15, 1, Some(30.0)),
            batch(25, 0, None),
            // Outside the day: not counted.
            batch(60 * 30, 7, Some(3000.0)),
        ];
        let r = report(&records, Some(&batches), day(), None);
        assert_eq!(r.stalls_healed_by_us, 1, "verified batch heals only");
        assert_eq!(r.recovered_by_themselves, Some(3));
        assert_eq!(r.longest_pause_s, Some(95.5));
        assert!(
            r.recommendations
                .iter()
                .any(|m| m.contains("recovered by themselves 3 time(s)")),
            "{:?}",
            r.recommendations
        );
        let unknown = report(&records, None, day(), None);
        assert_eq!(
            (unknown.recovered_by_themselves, unknown.longest_pause_s),
            (None, None)
        );
    }

    #[test]
    fn nothing_to_report_is_not_an_error() {
        let r = report(&[], None, day(), None);
        assert_eq!(
            (r.total, r.success_rate, r.time_to_heal.p95_s),
            (0, None, None)
        );
        assert!(r.recommendations.is_empty());
    }
}
