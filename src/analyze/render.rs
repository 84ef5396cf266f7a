//! The report as text for people, as one JSON document, and the records as CSV.

use std::fmt::Write as _;
use std::io::Write;

use super::pyrepr::state_as_json;
use super::record::Record;
use super::report::{Durations, Report, root_cause_key};
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
