//! `analyze --slack`: the window's digest for Slack (a week with `--since 7d`, from the chart's
//! CronJob): its figures, their change against the window before it, and the top proposals.
//! Pure: the message is built here and delivered by `sink::slack`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::propose::Proposal;
use super::render::duration;
use super::report::Report;
use crate::sink::slack::escape;

/// Proposals the digest lists; the rest are a command away.
const PROPOSALS_SHOWN: usize = 3;

/// The Slack message for `current` against `previous` (the window of the same length before).
pub fn message(current: &Report, previous: &Report, proposals: &[Proposal]) -> Value {
    let minute = |t: jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M").to_string();
    let days = current.end.duration_since(current.start).as_secs() / 86_400;
    let title = if days == 7 {
        "Weekly healing digest".to_owned()
    } else {
        "Healing digest".to_owned()
    };
    let mut text = format!(
        "*{title}* ({} to {} UTC)\n",
        minute(current.start),
        minute(current.end)
    );
    let heals_change = match previous.total {
        0 => format!("{} the period before", previous.total),
        before => {
            let pct = (current.total as f64 - before as f64) * 100.0 / before as f64;
            let arrow = if pct < 0.0 {
                "down"
            } else if pct > 0.0 {
                "up"
            } else {
                "flat"
            };
            format!("{arrow} {:.0}% from {before} the period before", pct.abs())
        }
    };
    let _ = writeln!(text, "*Heals:* {} ({heals_change})", current.total);
    let rate = |r: &Report| r.success_rate.map(|s| s * 100.0);
    let rate_change = match (rate(current), rate(previous)) {
        (Some(now), Some(before)) => format!(" ({:+.1} points)", now - before),
        _ => String::new(),
    };
    let _ = writeln!(
        text,
        "*Success rate:* {}{rate_change}",
        rate(current).map_or("n/a".into(), |r| format!("{r:.1}%"))
    );
    let causes = |r: &Report| r.top_root_causes.len();
    let _ = writeln!(
        text,
        "*Distinct root causes (top 5):* {} ({:+} against the period before)",
        causes(current),
        causes(current) as i64 - causes(previous) as i64
    );
    let _ = writeln!(
        text,
        "*Time to heal, p50:* {} (before: {})",
        duration(current.time_to_heal.p50_s),
        duration(previous.time_to_heal.p50_s)
    );
    if !current.top_root_causes.is_empty() {
        let top: Vec<String> = current
            .top_root_causes
            .iter()
            .map(|c| format!("`{}` ({})", escape(&c.key), c.count))
            .collect();
        let _ = writeln!(text, "*Top root causes:* {}", top.join(", "));
    }
    if let Some(recovered) = current.recovered_by_themselves {
        let _ = writeln!(
            text,
            "*Stalls healed by us:* {}; recovered by themselves: {recovered}",
            current.stalls_healed_by_us
        );
    }
    if proposals.is_empty() {
        let _ = writeln!(text, "*Proposals:* none this period");
    } else {
        let _ = writeln!(text, "*Top proposals:*");
        for (i, p) in proposals.iter().take(PROPOSALS_SHOWN).enumerate() {
            let _ = writeln!(text, "{}. {}", i + 1, escape(&p.summary));
        }
        let _ = writeln!(
            text,
            "The patch: `pipeline-healer analyze --since {days}d --propose --propose-patch policy.yaml`"
        );
    }
    json!({
        "text": format!("{title}: {} heals", current.total),
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}
