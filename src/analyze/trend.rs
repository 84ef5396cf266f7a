//! `analyze --trend day|week`: the report's figures per calendar period (UTC days, ISO weeks
//! from Monday) and each period's change against the one before: the original's success
//! measures, "healing frequency decreasing week over week" and "fewer unique triggers over
//! time". Pure: records in, periods out.

use std::collections::{BTreeMap, BTreeSet};

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use serde::Serialize;

use super::record::Record;
use super::report::{Durations, root_cause_key};
use super::window::Window;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
}

impl Period {
    /// The first day of the period holding `date`.
    fn first_day(self, date: Date) -> Date {
        match self {
            Period::Day => date,
            Period::Week => date
                .checked_sub(i64::from(date.weekday().to_monday_zero_offset()).days())
                .unwrap_or(date),
        }
    }

    fn days(self) -> i64 {
        match self {
            Period::Day => 1,
            Period::Week => 7,
        }
    }

    /// The period's name: the date, or the ISO week (`2026-W48`).
    fn label(self, first: Date) -> String {
        match self {
            Period::Day => first.to_string(),
            Period::Week => {
                let week = first.iso_week_date();
                format!("{}-W{:02}", week.year(), week.week())
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Trend {
    pub period: Period,
    pub periods: Vec<PeriodStats>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeriodStats {
    pub label: String,
    pub start: Timestamp,
    pub end: Timestamp,
    /// The window covers only part of it.
    pub partial: bool,
    /// Healing actions (dry runs and skips left out, as in the report).
    pub heals: usize,
    pub succeeded: usize,
    pub success_rate: Option<f64>,
    pub by_type: BTreeMap<String, usize>,
    pub by_root_cause: BTreeMap<String, usize>,
    /// Distinct root causes.
    pub root_causes: usize,
    /// Heals whose root cause was already seen in an earlier period: the same trigger again.
    pub recurring: usize,
    pub time_to_heal: Durations,
    /// Against the period before; null for the first.
    pub change: Option<Change>,
}

/// A period's figures minus the previous period's.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub heals: i64,
    /// Relative change of heals, in percent; null when the previous period had none.
    pub heals_percent: Option<f64>,
    /// Success rate difference in percentage points.
    pub success_rate_points: Option<f64>,
    pub root_causes: i64,
    pub recurring: i64,
    pub time_to_heal_p50_s: Option<f64>,
}

/// The most periods a trend shows: ten years of days, or as many weeks.
pub const MAX_PERIODS: i64 = 3660;

/// Whether `window` cut into `period`s is a trend one can print (at most [`MAX_PERIODS`]).
pub fn check(window: Window, period: Period) -> Result<(), String> {
    let days = window.end.duration_since(window.start).as_hours() / 24 + 1;
    let periods = days / period.days() + 1;
    if periods > MAX_PERIODS {
        return Err(format!(
            "the window holds {periods} {}s, more than the {MAX_PERIODS} a trend shows: \
             narrow it or use a longer period",
            serde_json::to_value(period)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        ));
    }
    Ok(())
}

/// The trend of `records` (the report's selection: in the window, each once; any order) over
/// the calendar periods that meet `window`.
pub fn trend(records: &[&Record], window: Window, period: Period) -> Trend {
    let utc = |t: Timestamp| t.to_zoned(TimeZone::UTC).date();
    let midnight = |d: Date| {
        d.to_datetime(Time::midnight())
            .to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp())
    };
    let mut actions: Vec<&Record> = records
        .iter()
        .copied()
        .filter(|r| !r.dry_run && !r.circuit_skipped())
        .collect();
    actions.sort_by_key(|r| r.timestamp);
    let mut rest = actions.as_slice();
    let mut periods: Vec<PeriodStats> = Vec::new();
    let mut seen_causes: BTreeSet<String> = BTreeSet::new();
    let mut first = period.first_day(utc(window.start));
    while let Ok(start) = midnight(first) {
        if start >= window.end {
            break;
        }
        let Ok(next) = first.checked_add(period.days().days()) else {
            break;
        };
        let Ok(end) = midnight(next) else { break };
        // The actions are in time order: each period takes the next run of them, so a long
        // window of days is one pass, not one scan per day.
        let (in_period, later) = rest.split_at(rest.partition_point(|r| r.timestamp < end));
        rest = later;
        let in_period: Vec<&Record> = in_period
            .iter()
            .copied()
            .filter(|r| r.timestamp >= start)
            .collect();
        let mut stats = stats_of(&in_period, &seen_causes);
        seen_causes.extend(stats.by_root_cause.keys().cloned());
        stats.label = period.label(first);
        stats.start = start;
        stats.end = end;
        stats.partial = start < window.start || end > window.end;
        stats.change = periods.last().map(|previous| change(previous, &stats));
        periods.push(stats);
        first = next;
    }
    Trend { period, periods }
}

fn stats_of(records: &[&Record], seen_before: &BTreeSet<String>) -> PeriodStats {
    let mut by_type: BTreeMap<String, usize> = BTreeMap::new();
    let mut by_root_cause: BTreeMap<String, usize> = BTreeMap::new();
    let mut recurring = 0;
    for r in records {
        *by_type.entry(r.healing_type.clone()).or_default() += 1;
        let cause = root_cause_key(r);
        if seen_before.contains(&cause) {
            recurring += 1;
        }
        *by_root_cause.entry(cause).or_default() += 1;
    }
    let succeeded = records.iter().filter(|r| r.success).count();
    PeriodStats {
        label: String::new(),
        start: Timestamp::UNIX_EPOCH,
        end: Timestamp::UNIX_EPOCH,
        partial: false,
        heals: records.len(),
        succeeded,
        success_rate: (!records.is_empty()).then(|| succeeded as f64 / records.len() as f64),
        root_causes: by_root_cause.len(),
        by_type,
        by_root_cause,
        recurring,
        time_to_heal: Durations::heal(records),
        change: None,
    }
}

fn change(previous: &PeriodStats, now: &PeriodStats) -> Change {
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let difference = |a: Option<f64>, b: Option<f64>| Some(a? - b?);
    Change {
        heals: count(now.heals) - count(previous.heals),
        heals_percent: (previous.heals > 0)
            .then(|| (now.heals as f64 - previous.heals as f64) * 100.0 / previous.heals as f64),
        success_rate_points: difference(now.success_rate, previous.success_rate).map(|d| d * 100.0),
        root_causes: count(now.root_causes) - count(previous.root_causes),
        recurring: count(now.recurring) - count(previous.recurring),
        time_to_heal_p50_s: difference(now.time_to_heal.p50_s, previous.time_to_heal.p50_s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn record(id: &str, when: &str, cause: &str, success: bool, heal_s: f64) -> Record {
        Record {
            success,
            time_to_heal_seconds: Some(heal_s),
            ..Record::sample(id, at(when), cause)
        }
    }

    /// Two ISO weeks (2026-11-16 and 2026-11-23 are Mondays): 6 heals of 3 causes, then 3
    /// heals of 1 cause seen before.
    fn two_weeks() -> Vec<Record> {
        vec![
            record("a", "2026-11-16T10:00:00Z", "injury", true, 20.0),
            record("b", "2026-11-17T10:00:00Z", "injury", false, 0.0),
            record("c", "2026-11-18T10:00:00Z", "timeout", true, 40.0),
            record("d", "2026-11-19T10:00:00Z", "timeout", true, 60.0),
            record("e", "2026-11-20T10:00:00Z", "no_progress", true, 30.0),
            record("f", "2026-11-22T23:59:59Z", "injury", true, 10.0),
            record("g", "2026-11-23T00:00:00Z", "injury", true, 10.0),
            record("h", "2026-11-25T10:00:00Z", "injury", true, 12.0),
            record("i", "2026-11-29T10:00:00Z", "injury", true, 14.0),
        ]
    }

    fn window(start: &str, end: &str) -> Window {
        Window {
            start: at(start),
            end: at(end),
        }
    }

    #[test]
    fn two_weeks_show_their_week_over_week_change() {
        let records = two_weeks();
        let refs: Vec<&Record> = records.iter().collect();
        let t = trend(
            &refs,
            window("2026-11-16T00:00:00Z", "2026-11-30T00:00:00Z"),
            Period::Week,
        );
        assert_eq!(t.periods.len(), 2);
        let (first, second) = (&t.periods[0], &t.periods[1]);
        assert_eq!(
            (first.label.as_str(), second.label.as_str()),
            ("2026-W47", "2026-W48")
        );
        assert!(!first.partial && !second.partial);
        assert_eq!((first.heals, second.heals), (6, 3));
        assert_eq!((first.root_causes, second.root_causes), (3, 1));
        assert_eq!((first.recurring, second.recurring), (0, 3));
        assert_eq!(first.success_rate, Some(5.0 / 6.0));
        assert_eq!(second.success_rate, Some(1.0));
        assert_eq!(first.change, None);
        let change = second.change.as_ref().unwrap();
        assert_eq!(change.heals, -3);
        assert_eq!(change.heals_percent, Some(-50.0));
        assert_eq!(change.root_causes, -2);
        assert!((change.success_rate_points.unwrap() - 100.0 / 6.0).abs() < 1e-9);
        // Medians over successes: 20, 40, 60, 30, 10 -> 30; 10, 12, 14 -> 12.
        assert_eq!(first.time_to_heal.p50_s, Some(30.0));
        assert_eq!(change.time_to_heal_p50_s, Some(12.0 - 30.0));
    }

    #[test]
    fn days_are_utc_calendar_days_and_a_cut_period_is_partial() {
        let records = two_weeks();
        let refs: Vec<&Record> = records.iter().collect();
        let t = trend(
            &refs,
            window("2026-11-22T12:00:00Z", "2026-11-24T06:00:00Z"),
            Period::Day,
        );
        let labels: Vec<&str> = t.periods.iter().map(|p| p.label.as_str()).collect();
        assert_eq!(labels, ["2026-11-22", "2026-11-23", "2026-11-24"]);
        assert_eq!(
            t.periods.iter().map(|p| p.heals).collect::<Vec<_>>(),
            [1, 1, 0]
        );
        assert!(t.periods[0].partial && !t.periods[1].partial && t.periods[2].partial);
        // No heals before: no relative change.
        assert_eq!(
            t.periods[2].change.as_ref().unwrap().heals_percent,
            Some(-100.0)
        );
    }

    #[test]
    fn a_window_of_more_periods_than_a_trend_shows_is_refused() {
        let century = window("1990-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let refused = check(century, Period::Day).unwrap_err();
        assert!(refused.contains("more than the 3660"), "{refused}");
        assert!(check(century, Period::Week).is_ok());
    }

    #[test]
    fn dry_runs_and_skips_are_not_heals() {
        let mut records = two_weeks();
        records[0].dry_run = true;
        records[1].outcome = Some("Skipped".into());
        let refs: Vec<&Record> = records.iter().collect();
        let t = trend(
            &refs,
            window("2026-11-16T00:00:00Z", "2026-11-23T00:00:00Z"),
            Period::Week,
        );
        assert_eq!(t.periods[0].heals, 4);
    }
}
