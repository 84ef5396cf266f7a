//! The time window of a report, from the command line: the original's
//! `--start/--end "YYYY-MM-DD HH:MM"` (UTC), RFC 3339, or `--since 7d`; the last 24 h by default.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};

/// Why the flags do not describe a window, as the command line shows it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadWindow(String);

impl BadWindow {
    /// Whether the message mentions `text` (for tests and callers that point at a flag).
    pub fn contains(&self, text: &str) -> bool {
        self.0.contains(text)
    }
}

/// `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Window {
    /// The window of the same length that ends where this one starts.
    pub fn before(self) -> Window {
        let length = self.end.duration_since(self.start);
        Window {
            start: self.start.checked_sub(length).unwrap_or(Timestamp::MIN),
            end: self.start,
        }
    }
}

/// Reads an instant: RFC 3339, `YYYY-MM-DD HH:MM[:SS]` in UTC, or a date (its midnight, UTC).
pub fn parse_instant(text: &str) -> Result<Timestamp, BadWindow> {
    let text = text.trim();
    if let Ok(t) = text.parse::<Timestamp>() {
        return Ok(t);
    }
    let civil = text.parse::<DateTime>().or_else(|_| {
        text.parse::<jiff::civil::Date>()
            .map(|d| d.to_datetime(jiff::civil::Time::midnight()))
    });
    civil
        .and_then(|dt| dt.to_zoned(TimeZone::UTC))
        .map(|z| z.timestamp())
        .map_err(|_| {
            BadWindow(format!(
                "{text:?} is not a time: use \"YYYY-MM-DD HH:MM\" (UTC) or RFC 3339"
            ))
        })
}

/// Reads a span back from now: a whole number and a unit, `s`, `m`, `h`, `d` or `w`
/// (`90m`, `36h`, `7d`, `2w`).
pub fn parse_span(text: &str) -> Result<SignedDuration, BadWindow> {
    let text = text.trim();
    let bad = || {
        BadWindow(format!(
            "{text:?} is not a span: use a number and s, m, h, d or w, e.g. 7d"
        ))
    };
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (number, unit) = text.split_at(unit_at);
    let n: i64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(bad()),
    };
    if n <= 0 {
        return Err(bad());
    }
    n.checked_mul(seconds)
        .map(SignedDuration::from_secs)
        .ok_or_else(bad)
}

/// The window the flags describe, at `now`.
pub fn window(
    start: Option<&str>,
    end: Option<&str>,
    since: Option<&str>,
    now: Timestamp,
) -> Result<Window, BadWindow> {
    let end = end.map(parse_instant).transpose()?.unwrap_or(now);
    let start = match (start, since) {
        (Some(_), Some(_)) => {
            return Err(BadWindow("use --start or --since, not both".into()));
        }
        (Some(s), None) => parse_instant(s)?,
        (None, Some(span)) => end
            .checked_sub(parse_span(span)?)
            .map_err(|e| BadWindow(format!("--since reaches too far back: {e}")))?,
        (None, None) => end - SignedDuration::from_hours(24),
    };
    if start >= end {
        return Err(BadWindow(format!(
            "the window is empty: {start} is not before {end}"
        )));
    }
    Ok(Window { start, end })
}

impl Window {
    pub fn contains(&self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn the_originals_format_rfc3339_and_dates_are_read_as_utc() {
        assert_eq!(
            parse_instant("2026-11-24 23:41"),
            Ok(at("2026-11-24T23:41:00Z"))
        );
        assert_eq!(
            parse_instant("2026-11-24 23:41:07"),
            Ok(at("2026-11-24T23:41:07Z"))
        );
        assert_eq!(
            parse_instant("2026-11-24T18:41:07-05:00"),
            Ok(at("2026-11-24T23:41:07Z"))
        );
        assert_eq!(parse_instant("2026-11-24"), Ok(at("2026-11-24T00:00:00Z")));
        assert!(
            parse_instant("yesterday")
                .unwrap_err()
                .contains("YYYY-MM-DD HH:MM")
        );
        assert!(parse_instant("2026-13-01 00:00").is_err());
    }

    #[test]
    fn spans_take_a_number_and_a_unit() {
        assert_eq!(parse_span("7d"), Ok(SignedDuration::from_hours(168)));
        assert_eq!(parse_span("90m"), Ok(SignedDuration::from_mins(90)));
        assert_eq!(parse_span("2w"), Ok(SignedDuration::from_hours(336)));
        for bad in ["7", "d", "7x", "-1d", "0h", "1.5h", "99999999999999999w"] {
            assert!(parse_span(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_is_the_last_24_hours_and_empty_windows_are_refused() {
        let now = at("2026-11-25T12:00:00Z");
        let w = window(None, None, None, now).unwrap();
        assert_eq!((w.start, w.end), (at("2026-11-24T12:00:00Z"), now));
        let w = window(None, Some("2026-11-25 00:00"), Some("7d"), now).unwrap();
        assert_eq!(w.start, at("2026-11-18T00:00:00Z"));
        assert!(
            window(
                Some("2026-11-25 00:00"),
                Some("2026-11-24 00:00"),
                None,
                now
            )
            .is_err()
        );
        assert!(window(Some("2026-11-24 00:00"), None, Some("1d"), now).is_err());
        assert!(w.contains(w.start) && !w.contains(w.end));
    }
}
