//! The report as text for people, as one JSON document, and the records as CSV.

use std::fmt::Write as _;
use std::io::Write;

use super::pyrepr::state_as_json;
use super::record::Record;
use super::report::{Report, root_cause_key};
use crate::sink::row::bigquery_timestamp;

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

fn seconds(s: Option<f64>) -> String {
    s.map_or("n/a".into(), |s| format!("{s:.1} s"))
}

pub fn text(report: &Report, source: &str) -> String {
    let mut out = String::new();
    let r = report;
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
        "Time to heal: mean {}, p95 {}",
        seconds(r.mean_time_to_heal_s),
        seconds(r.p95_time_to_heal_s)
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
    out
}

pub fn json(report: &Report, source: &str) -> serde_json::Result<String> {
    let mut value = serde_json::to_value(report)?;
    value["source"] = source.into();
    serde_json::to_string_pretty(&value)
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
