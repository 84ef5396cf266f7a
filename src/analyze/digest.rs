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
    let seconds = current.end.duration_since(current.start).as_secs();
    // The window as `--since` takes it, for the command the digest suggests.
    let since = if seconds % 86_400 == 0 {
        format!("{}d", seconds / 86_400)
    } else {
        format!("{}h", ((seconds + 3599) / 3600).max(1))
    };
    let title = if seconds == 7 * 86_400 {
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
    let causes = |r: &Report| i64::try_from(r.distinct_root_causes).unwrap_or(i64::MAX);
    let _ = writeln!(
        text,
        "*Distinct root causes:* {} ({:+} against the period before)",
        causes(current),
        causes(current) - causes(previous)
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
            .map(|c| format!("`{}` ({})", shown(&c.key), c.count))
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
            let _ = writeln!(text, "{}. {}", i + 1, shown(&p.summary));
        }
        let _ = writeln!(
            text,
            "The patch: `pipeline-healer analyze --since {since} --propose --propose-patch policy.yaml`"
        );
    }
    // A section's text takes at most 3000 characters.
    let text: String = text.chars().take(SECTION_CHARS).collect();
    json!({
        "text": format!("{title}: {} heals", current.total),
        // verbatim: Slack links and mentions nothing it finds in the text.
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": true}}],
    })
}

const SECTION_CHARS: usize = 3000;
/// The most of one record-derived text (a root cause, a proposal) the digest shows.
const FIELD_CHARS: usize = 300;

/// Record-derived text as the digest shows it: Slack's control characters escaped, no
/// backtick to end a code span, no line break to forge a line, and short.
fn shown(text: &str) -> String {
    let plain: String = text
        .chars()
        .map(|c| match c {
            '`' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .take(FIELD_CHARS)
        .collect();
    escape(&plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::record::Record;
    use crate::analyze::report::report;
    use crate::analyze::window::Window;

    fn record(id: usize, when: jiff::Timestamp, cause: &str) -> Record {
        Record::sample(&format!("h{id}"), when, cause)
    }

    #[test]
    fn the_weekly_digest_sets_the_week_against_the_one_before() {
        let end: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let week = Window {
            start: end - jiff::SignedDuration::from_hours(7 * 24),
            end,
        };
        let day = jiff::SignedDuration::from_hours(24);
        let mut records: Vec<Record> = (0..4)
            .map(|i| record(i, week.start - day * (i as i32 + 1), "a"))
            .collect();
        records.push(record(9, week.start + day, "<!channel>"));
        records.push(record(
            10,
            week.start + day,
            &format!("a`*b*\n{}", "x".repeat(5000)),
        ));
        let now = report(&records, None, week, None);
        let before = report(&records, None, week.before(), None);
        let message = message(&now, &before, &[]);
        let text = message["blocks"][0]["text"]["text"].as_str().unwrap();
        assert!(text.starts_with("*Weekly healing digest*"), "{text}");
        assert!(
            text.contains("*Heals:* 2 (down 50% from 4 the period before)"),
            "{text}"
        );
        assert!(
            text.contains("*Distinct root causes:* 2 (+1 against the period before)"),
            "{text}"
        );
        // A record's text cannot end a code span, forge a line or overflow the section.
        assert!(text.contains("`a'*b* xxx"), "{text}");
        assert!(text.chars().count() <= 3000);
        assert_eq!(message["blocks"][0]["text"]["verbatim"], true);
        // Slack control sequences from the records are shown, not acted on.
        assert!(text.contains("`&lt;!channel&gt;` (1)"), "{text}");
        assert!(!text.contains("<!channel>"));
        assert!(text.contains("*Proposals:* none this period"), "{text}");
    }
}
