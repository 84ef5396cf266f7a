//! The trend as one SVG (plotters): heals per period stacked by root cause, the success rate,
//! and the median time to heal. Every bar and point carries its number as text, so the
//! picture can be read (and checked) without measuring it.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::trend::{PeriodStats, Trend};

/// Root causes drawn apart; the rest are stacked as `other`.
const CAUSES_SHOWN: usize = 8;
const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 320;
const OTHER: &str = "other";

/// Why the plot could not be drawn (plotters' drawing errors, in words).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PlotError(String);

fn drawing<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> PlotError {
    PlotError(e.to_string())
}

/// The root causes in the legend, most heals first, and `other` when more exist.
pub fn legend(trend: &Trend) -> Vec<String> {
    let mut totals: std::collections::BTreeMap<&str, usize> = Default::default();
    for p in &trend.periods {
        for (cause, n) in &p.by_root_cause {
            *totals.entry(cause).or_default() += n;
        }
    }
    let mut causes: Vec<(&str, usize)> = totals.into_iter().collect();
    causes.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let mut shown: Vec<String> = causes
        .iter()
        .take(CAUSES_SHOWN)
        .map(|(c, _)| (*c).to_owned())
        .collect();
    if causes.len() > CAUSES_SHOWN {
        shown.push(OTHER.to_owned());
    }
    shown
}

/// The trend plot as SVG text.
pub fn svg(trend: &Trend) -> Result<String, PlotError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, PANEL_HEIGHT * 3)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing)?;
        let panels = root.split_evenly((3, 1));
        heals_panel(&panels[0], trend)?;
        success_panel(&panels[1], trend)?;
        time_to_heal_panel(&panels[2], trend)?;
        root.present().map_err(drawing)?;
    }
    Ok(out)
}

fn labels(trend: &Trend) -> Vec<String> {
    trend.periods.iter().map(|p| p.label.clone()).collect()
}

/// x in `[0, n)`: period `i` spans `[i, i + 1)`.
fn period_label(labels: &[String], x: &f64) -> String {
    let i = x.floor();
    if (x - i - 0.5).abs() < 1e-9 && i >= 0.0 {
        labels.get(i as usize).cloned().unwrap_or_default()
    } else {
        String::new()
    }
}

fn heals_panel(area: &DrawingArea<SVGBackend, Shift>, trend: &Trend) -> Result<(), PlotError> {
    let names = labels(trend);
    let n = names.len().max(1);
    let top = trend
        .periods
        .iter()
        .map(|p| p.heals)
        .max()
        .unwrap_or(0)
        .max(1) as f64
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("Heals per {}, by root cause", period_word(trend)),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| period_label(&names, x))
        .y_desc("heals")
        .draw()
        .map_err(drawing)?;
    let legend = legend(trend);
    for (i, cause) in legend.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let bars: Vec<Rectangle<(f64, f64)>> = trend
            .periods
            .iter()
            .enumerate()
            .filter_map(|(x, p)| {
                let count = |c: &str| count_of(p, c, &legend);
                let below: usize = legend[..i].iter().map(|c| count(c)).sum();
                let here = count(cause);
                (here > 0).then(|| {
                    let x = x as f64;
                    Rectangle::new(
                        [(x + 0.15, below as f64), (x + 0.85, (below + here) as f64)],
                        color.filled(),
                    )
                })
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(drawing)?
            .label(cause.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .draw_series(trend.periods.iter().enumerate().map(|(x, p)| {
            Text::new(
                p.heals.to_string(),
                (x as f64 + 0.45, p.heals as f64 + top * 0.06),
                ("sans-serif", 14),
            )
        }))
        .map_err(drawing)?;
    if !legend.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(drawing)?;
    }
    Ok(())
}

/// Heals of `cause` in the period; `other` sums the causes the legend leaves out.
fn count_of(p: &PeriodStats, cause: &str, legend: &[String]) -> usize {
    if cause == OTHER && !p.by_root_cause.contains_key(OTHER) {
        return p
            .by_root_cause
            .iter()
            .filter(|(c, _)| !legend.contains(c))
            .map(|(_, n)| n)
            .sum();
    }
    p.by_root_cause.get(cause).copied().unwrap_or(0)
}

/// One point per period that has `value`, at the middle of its period.
fn points(trend: &Trend, value: impl Fn(&PeriodStats) -> Option<f64>) -> Vec<(f64, f64)> {
    trend
        .periods
        .iter()
        .enumerate()
        .filter_map(|(x, p)| Some((x as f64 + 0.5, value(p)?)))
        .collect()
}

fn success_panel(area: &DrawingArea<SVGBackend, Shift>, trend: &Trend) -> Result<(), PlotError> {
    let points = points(trend, |p| Some(p.success_rate? * 100.0));
    line_panel(
        area,
        trend,
        "Success rate (%)",
        (0.0, 110.0),
        &points,
        |v| format!("{v:.1}%"),
        GREEN.mix(0.9),
    )
}

fn time_to_heal_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    trend: &Trend,
) -> Result<(), PlotError> {
    let points = points(trend, |p| p.time_to_heal.p50_s);
    let top = points.iter().map(|(_, y)| *y).fold(1.0, f64::max) * 1.25;
    line_panel(
        area,
        trend,
        "Time to heal, median (s)",
        (0.0, top),
        &points,
        |v| format!("{v:.1} s"),
        BLUE.mix(0.9),
    )
}

fn line_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    trend: &Trend,
    caption: &str,
    (low, high): (f64, f64),
    points: &[(f64, f64)],
    label: impl Fn(f64) -> String,
    color: RGBAColor,
) -> Result<(), PlotError> {
    let names = labels(trend);
    let n = names.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(44)
        .build_cartesian_2d(0f64..n as f64, low..high)
        .map_err(drawing)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .light_line_style(WHITE)
        .x_labels(n * 2 + 1)
        .x_label_formatter(&|x| period_label(&names, x))
        .draw()
        .map_err(drawing)?;
    chart
        .draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(2),
        ))
        .map_err(drawing)?;
    chart
        .draw_series(
            points
                .iter()
                .map(|(x, y)| Circle::new((*x, *y), 4, color.filled())),
        )
        .map_err(drawing)?;
    let lift = (high - low) * 0.05;
    chart
        .draw_series(
            points
                .iter()
                .map(|(x, y)| Text::new(label(*y), (*x - 0.1, *y + lift), ("sans-serif", 13))),
        )
        .map_err(drawing)?;
    Ok(())
}

fn period_word(trend: &Trend) -> &'static str {
    match trend.period {
        super::trend::Period::Day => "day",
        super::trend::Period::Week => "week",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analyze::record::Record;
    use crate::analyze::trend::{Period, trend};
    use crate::analyze::window::Window;

    fn record(when: &str, cause: &str, success: bool) -> Record {
        Record {
            namespace: None,
            success,
            time_to_heal_seconds: Some(20.0),
            ..Record::sample(&format!("{when}-{cause}"), when.parse().unwrap(), cause)
        }
    }

    /// The texts of the SVG's `<text>` elements.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                Some(
                    t.split_once('>')?
                        .1
                        .split_once("</text>")?
                        .0
                        .trim()
                        .to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn the_plot_carries_each_periods_numbers_and_its_causes() {
        let records = [
            record("2026-11-16T10:00:00Z", "injury", true),
            record("2026-11-17T10:00:00Z", "injury", false),
            record("2026-11-18T10:00:00Z", "timeout", true),
            record("2026-11-24T10:00:00Z", "<script>x</script>", true),
        ];
        let refs: Vec<&Record> = records.iter().collect();
        let window = Window {
            start: "2026-11-16T00:00:00Z".parse().unwrap(),
            end: "2026-11-30T00:00:00Z".parse().unwrap(),
        };
        let t = trend(&refs, window, Period::Week);
        let svg = svg(&t).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        let texts = texts(&svg);
        for expected in [
            "3", "1", "66.7%", "100.0%", "20.0 s", "2026-W47", "2026-W48", "injury", "timeout",
        ] {
            assert!(
                texts.iter().any(|t| t == expected),
                "{expected} not in {texts:?}"
            );
        }
        // A worker's reason is text in the picture, never markup.
        assert!(!svg.contains("<script>"));
        assert_eq!(legend(&t), ["injury", "<script>x</script>", "timeout"]);
    }
}
