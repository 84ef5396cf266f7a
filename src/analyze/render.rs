//! The report as text for people, as one JSON document, and the records as CSV.

use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use super::propose::Proposal;
use super::pyrepr::state_as_json;
use super::record::Record;
use super::report::{Durations, Report, root_cause_key};
use super::trend::Trend;
use crate::sink::row::bigquery_timestamp;

/// What `analyze` prints: the report, and the proposals and trend when asked for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Analysis {
    #[serde(flatten)]
    pub report: Report,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposals: Option<Vec<Proposal>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend: Option<Trend>,
}

/// CSV columns: the original's, then what it lacked.
pub const CSV_COLUMNS: [&str; 12] = [
    "healing_id",
    "timestamp",
    "healing_type",
    "trigger_reason",
    "action_taken",
    "success",
    "metadata",
    "root_cause",
    "correlation_id",
    "target",
    "before_state",
    "after_state",
];

fn percent(rate: Option<f64>) -> String {
    rate.map_or("n/a".into(), |r| format!("{:.1}%", r * 100.0))
}

/// A duration at the precision its size calls for: milliseconds below a second (a
/// detection at the exact instant is a few of them), then seconds, minutes, hours.
pub fn duration(s: Option<f64>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if s < 1.0 => format!("{:.1} ms", s * 1000.0),
        Some(s) if s < 60.0 => format!("{s:.3} s"),
        Some(s) if s < 3600.0 => format!("{:.1} min", s / 60.0),
        Some(s) => format!("{:.1} h", s / 3600.0),
    }
}

/// "mean X, p50 Y, p95 Z (N actions; M without it left out)".
fn durations(d: &Durations, of: &str) -> String {
    if d.count == 0 {
        return format!("n/a ({} {of} without it)", d.without);
    }
    let left_out = if d.without > 0 {
        format!("; {} without it left out", d.without)
    } else {
        String::new()
    };
    format!(
        "mean {}, p50 {}, p95 {} ({} {of}{left_out})",
        duration(d.mean_s),
        duration(d.p50_s),
        duration(d.p95_s),
        d.count
    )
}

pub fn text(analysis: &Analysis, source: &str) -> String {
    let mut out = String::new();
    let r = &analysis.report;
    let _ = writeln!(out, "Healing report ({source})");
    let minute = |t: jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string();
    let _ = writeln!(out, "Window: {} to {}", minute(r.start), minute(r.end));
    if let Some(t) = &r.healing_type {
        let _ = writeln!(out, "Type: {t}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Healing actions: {}  succeeded: {}  failed: {}  success rate: {}",
        r.total,
        r.succeeded,
        r.failed,
        percent(r.success_rate)
    );
    let _ = writeln!(
        out,
        "Counted apart: {} dry-run, {} skipped (paused or circuit open); {} duplicate rows ignored",
        r.dry_run, r.circuit_skipped, r.duplicate_rows
    );
    let _ = writeln!(
        out,
        "Time to detect (detectable to noticed): {}",
        durations(&r.time_to_detect, "actions")
    );
    let _ = writeln!(
        out,
        "Time to heal (onset to seen healthy): {}",
        durations(&r.time_to_heal, "successes")
    );
    if r.heal_latency.count > 0 && r.time_to_heal.without > 0 {
        let _ = writeln!(
            out,
            "Heal latency (threshold to recorded outcome, the older rows' measure): {}",
            durations(&r.heal_latency, "successes")
        );
    }
    let recovered = match r.recovered_by_themselves {
        Some(n) => {
            let longest = r.longest_pause_s.map_or(String::new(), |s| {
                format!(" (longest pause {})", duration(Some(s)))
            });
            format!("{n}{longest}")
        }
        None => "unknown (no batch outcomes to read)".to_owned(),
    };
    let _ = writeln!(
        out,
        "Stalls healed by us: {}; recovered by themselves: {recovered}",
        r.stalls_healed_by_us
    );

    let _ = writeln!(out, "\nBy healing type:");
    if r.by_type.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (t, s) in &r.by_type {
        let _ = writeln!(
            out,
            "  {t:<24} {:>6} events  {:>6} success  {:>4} failed",
            s.count,
            percent(Some(s.success_rate)),
            s.failed
        );
        if s.time_to_detect.count > 0 {
            let detect = durations(&s.time_to_detect, "actions");
            let _ = writeln!(out, "  {:<24} time to detect: {detect}", "");
        }
        if s.time_to_heal.count > 0 {
            let heal = durations(&s.time_to_heal, "successes");
            let _ = writeln!(out, "  {:<24} time to heal:   {heal}", "");
        }
    }

    let _ = writeln!(out, "\nTop root causes:");
    if r.top_root_causes.is_empty() {
        let _ = writeln!(out, "  (none)");
    }
    for (i, c) in r.top_root_causes.iter().enumerate() {
        let _ = writeln!(out, "  {}. {} ({} events)", i + 1, c.key, c.count);
        let _ = writeln!(out, "     e.g. {}", c.example);
    }

    if !r.recurring_targets.is_empty() {
        let _ = writeln!(out, "\nHealed more than once:");
        for t in r.recurring_targets.iter().take(10) {
            let _ = writeln!(out, "  {} ({} times)", t.target, t.count);
        }
    }

    let _ = writeln!(out, "\nRecommendations:");
    if r.recommendations.is_empty() {
        let _ = writeln!(out, "  none: healing is rare and works");
    }
    for rec in &r.recommendations {
        let _ = writeln!(out, "  - {rec}");
    }
    if let Some(proposals) = &analysis.proposals {
        proposals_text(&mut out, proposals);
    }
    if let Some(trend) = &analysis.trend {
        trend_text(&mut out, trend);
    }
    out
}

fn proposals_text(out: &mut String, proposals: &[Proposal]) {
    let _ = writeln!(out, "\nProposals:");
    if proposals.is_empty() {
        let _ = writeln!(
            out,
            "  none: no recurring cause has the evidence for a change"
        );
    }
    for (i, p) in proposals.iter().enumerate() {
        let _ = writeln!(out, "  {}. [{}] {}", i + 1, serde_plain(&p.kind), p.summary);
        if !p.evidence.is_empty() {
            let shown: Vec<&str> = p.evidence.iter().take(5).map(String::as_str).collect();
            let more = p.evidence.len().saturating_sub(shown.len());
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            let _ = writeln!(out, "     evidence: {}{more}", shown.join(", "));
        }
        if let Some(patch) = &p.patch {
            for line in patch.lines() {
                let _ = writeln!(out, "     | {line}");
            }
        }
    }
}

/// A signed change: `+3`, `-2`, `0`.
fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

fn trend_text(out: &mut String, trend: &Trend) {
    let _ = writeln!(out, "\nTrend by {}:", serde_plain(&trend.period));
    let _ = writeln!(
        out,
        "  {:<12} {:>6} {:>8} {:>8} {:>7} {:>9} {:>11}  by type",
        "period", "heals", "change", "success", "causes", "recurring", "heal p50"
    );
    for p in &trend.periods {
        let change = p.change.as_ref().map_or("".into(), |c| signed(c.heals));
        let partial = if p.partial { "*" } else { "" };
        let types: Vec<String> = p.by_type.iter().map(|(t, n)| format!("{t} {n}")).collect();
        let _ = writeln!(
            out,
            "  {:<12} {:>6} {:>8} {:>8} {:>7} {:>9} {:>11}  {}",
            format!("{}{partial}", p.label),
            p.heals,
            change,
            percent(p.success_rate),
            p.root_causes,
            p.recurring,
            duration(p.time_to_heal.p50_s),
            types.join(", ")
        );
    }
    if trend.periods.iter().any(|p| p.partial) {
        let _ = writeln!(out, "  * the window covers part of the period");
    }
}

/// A unit enum's serde name (`day`, `week`).
fn serde_plain<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub fn json(analysis: &Analysis, source: &str) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(analysis)?;
    value["source"] = source.into();
    serde_json::to_string_pretty(&value)
}

/// The trend as CSV: one row per period, one `heals_<type>` column per healing type seen.
pub fn trend_csv(trend: &Trend) -> csv::Result<String> {
    let types: std::collections::BTreeSet<&str> = trend
        .periods
        .iter()
        .flat_map(|p| p.by_type.keys().map(String::as_str))
        .collect();
    let mut writer = csv::Writer::from_writer(Vec::new());
    let mut header: Vec<String> = [
        "period",
        "start",
        "end",
        "partial",
        "heals",
        "succeeded",
        "success_rate",
        "root_causes",
        "recurring",
        "time_to_heal_p50_s",
        "time_to_heal_mean_s",
        "heals_change",
        "heals_change_percent",
        "success_rate_change_points",
        "root_causes_change",
    ]
    .map(str::to_owned)
    .to_vec();
    header.extend(types.iter().map(|t| format!("heals_{t}")));
    writer.write_record(&header)?;
    let number = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.4}"));
    for p in &trend.periods {
        let change = p.change.as_ref();
        let mut row = vec![
            p.label.clone(),
            bigquery_timestamp(p.start),
            bigquery_timestamp(p.end),
            p.partial.to_string(),
            p.heals.to_string(),
            p.succeeded.to_string(),
            number(p.success_rate),
            p.root_causes.to_string(),
            p.recurring.to_string(),
            number(p.time_to_heal.p50_s),
            number(p.time_to_heal.mean_s),
            change.map_or(String::new(), |c| c.heals.to_string()),
            number(change.and_then(|c| c.heals_percent)),
            number(change.and_then(|c| c.success_rate_points)),
            change.map_or(String::new(), |c| c.root_causes.to_string()),
        ];
        row.extend(
            types
                .iter()
                .map(|t| p.by_type.get(*t).copied().unwrap_or(0).to_string()),
        );
        writer.write_record(&row)?;
    }
    let bytes = writer.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Every record in time order (each healing_id once), states as JSON text.
pub fn csv(records: &[&Record], out: impl Write) -> csv::Result<()> {
    let mut writer = csv::Writer::from_writer(out);
    writer.write_record(CSV_COLUMNS)?;
    let json_text = |v: &Option<String>| {
        v.as_deref()
            .map(|s| state_as_json(s).to_string())
            .unwrap_or_default()
    };
    for r in records {
        writer.write_record([
            r.healing_id.as_str(),
            &bigquery_timestamp(r.timestamp),
            &r.healing_type,
            &r.trigger_reason,
            &r.action_taken,
            if r.success { "true" } else { "false" },
            &json_text(&r.metadata),
            &root_cause_key(r),
            r.correlation_id.as_deref().unwrap_or_default(),
            r.target.as_deref().unwrap_or_default(),
            &json_text(&r.before_state),
            &json_text(&r.after_state),
        ])?;
    }
    writer.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_the_precision_their_size_calls_for() {
        assert_eq!(duration(Some(0.0034)), "3.4 ms");
        assert_eq!(duration(Some(2.5)), "2.500 s");
        assert_eq!(duration(Some(902.0)), "15.0 min");
        assert_eq!(duration(Some(5400.0)), "1.5 h");
        assert_eq!(duration(None), "n/a");
        let none = Durations {
            without: 4,
            ..Default::default()
        };
        assert_eq!(durations(&none, "actions"), "n/a (4 actions without it)");
        let some = Durations {
            count: 2,
            without: 1,
            mean_s: Some(0.002),
            p50_s: Some(0.001),
            p95_s: Some(0.003),
        };
        assert_eq!(
            durations(&some, "actions"),
            "mean 2.0 ms, p50 1.0 ms, p95 3.0 ms (2 actions; 1 without it left out)"
        );
    }
}
