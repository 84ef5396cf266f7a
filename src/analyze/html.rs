//! `analyze --html FILE`: one self-contained page (no network: the plot is inline SVG, the
//! style inline CSS) with the report, the proposals and the trend. Every text from the
//! records (root causes, reasons, ids: written by workers and tenants) is escaped.

use std::fmt::Write as _;

use super::propose::Proposal;
use super::render::Analysis;

/// Text as HTML character data or an attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page: `report_text` is the text report (as `analyze` prints it), `plot` the trend's
/// SVG when there is a trend.
pub fn page(analysis: &Analysis, report_text: &str, plot: Option<&str>) -> String {
    let r = &analysis.report;
    let minute = |t: jiff::Timestamp| t.strftime("%Y-%m-%d %H:%M UTC").to_string();
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>Healing report {start} to {end}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>Healing report</h1>\n<p class=\"window\">{start} to {end}</p>\n",
        start = escape(&minute(r.start)),
        end = escape(&minute(r.end)),
    );
    let _ = writeln!(
        out,
        "<section class=\"figures\">{}{}{}{}</section>",
        figure("Healing actions", &r.total.to_string()),
        figure(
            "Success rate",
            &r.success_rate
                .map_or("n/a".into(), |s| format!("{:.1}%", s * 100.0))
        ),
        figure(
            "Time to heal, p50",
            &super::render::duration(r.time_to_heal.p50_s)
        ),
        figure("Stalls healed by us", &r.stalls_healed_by_us.to_string()),
    );
    if let Some(proposals) = &analysis.proposals {
        proposals_section(&mut out, proposals);
    }
    if let Some(svg) = plot {
        let _ = write!(
            out,
            "<section>\n<h2>Trend</h2>\n<div class=\"plot\">{svg}</div>\n</section>\n"
        );
    }
    let _ = write!(
        out,
        "<section>\n<h2>Report</h2>\n<pre>{}</pre>\n</section>\n</body>\n</html>\n",
        escape(report_text)
    );
    out
}

fn figure(name: &str, value: &str) -> String {
    format!(
        "<div class=\"figure\"><div class=\"value\">{}</div><div class=\"name\">{}</div></div>",
        escape(value),
        escape(name)
    )
}

fn proposals_section(out: &mut String, proposals: &[Proposal]) {
    let _ = writeln!(out, "<section>\n<h2>Proposals</h2>");
    if proposals.is_empty() {
        let _ = writeln!(
            out,
            "<p>None: no recurring cause has the evidence for a change.</p>"
        );
    }
    for p in proposals {
        let kind = serde_json::to_value(p.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let _ = write!(
            out,
            "<article class=\"proposal\">\n<h3><span class=\"kind\">{}</span> {}</h3>\n\
             <p>{} heals considered, {} avoided.</p>\n",
            escape(&kind),
            escape(&p.summary),
            p.heals_considered,
            p.heals_avoided
        );
        if !p.evidence.is_empty() {
            let _ = writeln!(
                out,
                "<p class=\"evidence\">Evidence: {}</p>",
                escape(&p.evidence.join(", "))
            );
        }
        if let Some(patch) = &p.patch {
            let _ = writeln!(out, "<pre class=\"patch\">{}</pre>", escape(patch));
        }
        let _ = writeln!(out, "</article>");
    }
    let _ = writeln!(out, "</section>");
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em auto;max-width:1000px;color:#222}\
h1{margin-bottom:0}.window{color:#666;margin-top:.2em}\
.figures{display:flex;gap:1em;margin:1.5em 0}\
.figure{flex:1;border:1px solid #ddd;border-radius:6px;padding:.8em;text-align:center}\
.figure .value{font-size:1.8em;font-weight:bold}.figure .name{color:#666}\
.proposal{border-left:4px solid #e69f00;padding:.2em 1em;margin:1em 0;background:#fffaf0}\
.kind{font-family:monospace;background:#eee;padding:0 .3em;border-radius:3px}\
pre{background:#f6f6f6;padding:1em;overflow-x:auto}.plot svg{max-width:100%;height:auto}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_from_the_records_cannot_become_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
