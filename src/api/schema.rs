//! Schema building blocks shared by the four custom resources: identifiers that end up in SQL,
//! Go-style durations, dates and free-form JSON objects. Each type validates itself twice: in
//! the OpenAPI schema the API server enforces on admission, and when deserialised in Rust, so
//! a value that slipped past admission (an older CRD, a direct etcd write) is still refused
//! where it enters the controller.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use regex::Regex;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A BigQuery table reference: `dataset.table` or `project.dataset.table`. Project ids may
/// contain hyphens (as GCP allows); datasets and tables are letters, digits and underscores.
/// No quotes, spaces, backticks or semicolons can ever pass, so a validated name can be
/// placed in SQL between backticks.
/// (Lengths are bounded by the schema's `maxLength`: RE2 refuses repeat counts above 1000.)
pub const TABLE_PATTERN: &str =
    r"^([a-z][a-z0-9-]{4,28}[a-z0-9]\.)?[A-Za-z0-9_]+\.[A-Za-z_][A-Za-z0-9_]*$";
const TABLE_MAX_LEN: usize = 1100;
/// A BigQuery column name.
pub const COLUMN_PATTERN: &str = r"^[A-Za-z_][A-Za-z0-9_]{0,299}$";
/// A calendar date as the pipeline writes it (`game_date`): `YYYY-MM-DD`.
pub const DATE_PATTERN: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$";
/// A Go duration as `time.ParseDuration` reads it, without a sign: `90s`, `15m`, `1h30m`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$";
/// A healing type or a skip reason: lower snake case, as the original system writes them.
pub const SNAKE_CASE_PATTERN: &str = r"^[a-z][a-z0-9_]{0,62}$";
/// The longest [`PositiveDuration`], in hours: a century of 365-day years (`876000h`). Far
/// beyond any threshold, it keeps timestamp arithmetic in range. Rust refuses longer values
/// when it parses one, and the schema's [`duration_bound_rule`] on admission, with this one
/// number, so the API server admits exactly the durations the controller can read.
pub const MAX_DURATION_HOURS: u64 = 100 * 365 * 24;
const NANOS_PER_HOUR: u64 = 3_600_000_000_000;

static TABLE_RE: LazyLock<Regex> = LazyLock::new(|| compile(TABLE_PATTERN));
static COLUMN_RE: LazyLock<Regex> = LazyLock::new(|| compile(COLUMN_PATTERN));
static DATE_RE: LazyLock<Regex> = LazyLock::new(|| compile(DATE_PATTERN));
static DURATION_RE: LazyLock<Regex> = LazyLock::new(|| compile(DURATION_PATTERN));
/// One `<number><unit>` of a duration that matched [`DURATION_PATTERN`].
static DURATION_PART_RE: LazyLock<Regex> =
    LazyLock::new(|| compile(r"([0-9]+)(?:\.([0-9]+))?(ns|us|µs|ms|s|m|h)"));

fn compile(pattern: &str) -> Regex {
    // The patterns are constants covered by unit tests; failing here is a programming error.
    Regex::new(pattern).unwrap_or_else(|e| panic!("invalid built-in pattern {pattern}: {e}"))
}

/// Text matching [`SNAKE_CASE_PATTERN`] (a skip reason, a healing type), checked in Rust for
/// values that did not come through admission (records read back).
pub fn is_snake_case(text: &str) -> bool {
    let mut chars = text.chars();
    text.len() <= 63
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A DNS-1123 label: a namespace's name.
pub fn is_dns_label(text: &str) -> bool {
    text.len() <= 63 && !text.contains('.') && is_dns_subdomain(text)
}

/// A DNS-1123 subdomain: most objects' names (a HealingPolicy's).
pub fn is_dns_subdomain(text: &str) -> bool {
    let alphanumeric = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    (1..=253).contains(&text.len())
        && text.starts_with(alphanumeric)
        && text.ends_with(alphanumeric)
        && text
            .chars()
            .all(|c| alphanumeric(c) || c == '-' || c == '.')
}

/// A value that did not pass its own validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct InvalidValue {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Implements `Serialize`, `Deserialize` (validating) and `Display` for a newtype over a string
/// that is checked by `FromStr`.
macro_rules! string_newtype {
    ($ty:ident) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse().map_err(serde::de::Error::custom)
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// A validated BigQuery table reference; see [`TABLE_PATTERN`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableName(String);

impl TableName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TableName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() <= TABLE_MAX_LEN && TABLE_RE.is_match(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidValue {
                what: "table name",
                value: s.to_owned(),
                reason: "must be dataset.table or project.dataset.table (letters, digits, underscores)",
            })
        }
    }
}
string_newtype!(TableName);

impl JsonSchema for TableName {
    fn schema_name() -> Cow<'static, str> {
        "TableName".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": TABLE_MAX_LEN,
            "pattern": TABLE_PATTERN,
            "description": "BigQuery table: dataset.table or project.dataset.table",
        })
    }
}

/// A validated BigQuery column name; see [`COLUMN_PATTERN`].
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ColumnName(String);

impl ColumnName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ColumnName {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if COLUMN_RE.is_match(s) {
            Ok(Self(s.to_owned()))
        } else {
            Err(InvalidValue {
                what: "column name",
                value: s.to_owned(),
                reason: "must start with a letter or underscore and hold only letters, digits, underscores",
            })
        }
    }
}
string_newtype!(ColumnName);

impl JsonSchema for ColumnName {
    fn schema_name() -> Cow<'static, str> {
        "ColumnName".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 300,
            "pattern": COLUMN_PATTERN,
            "description": "BigQuery column name",
        })
    }
}

/// A calendar date `YYYY-MM-DD` (the pipeline's `game_date`), checked to exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GameDate(jiff::civil::Date);

impl GameDate {
    pub fn date(&self) -> jiff::civil::Date {
        self.0
    }
    fn as_str(&self) -> String {
        self.0.to_string()
    }
}

impl FromStr for GameDate {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidValue {
            what: "date",
            value: s.to_owned(),
            reason,
        };
        if !DATE_RE.is_match(s) {
            return Err(invalid("must be YYYY-MM-DD"));
        }
        s.parse::<jiff::civil::Date>()
            .map(Self)
            .map_err(|_| invalid("is not a calendar date"))
    }
}

impl From<jiff::civil::Date> for GameDate {
    fn from(d: jiff::civil::Date) -> Self {
        Self(d)
    }
}

impl Serialize for GameDate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}
impl<'de> Deserialize<'de> for GameDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}
impl fmt::Display for GameDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl JsonSchema for GameDate {
    fn schema_name() -> Cow<'static, str> {
        "GameDate".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // `format: date` makes the API server check that the day exists (2026-02-30 fails).
        json_schema!({
            "type": "string",
            "format": "date",
            "pattern": DATE_PATTERN,
            "description": "calendar date, YYYY-MM-DD",
        })
    }
}

/// A positive Go-style duration (`15m`, `24h`, `1h30m`), kept as written so GitOps diffs and
/// `kubectl get` show what the user wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PositiveDuration {
    text: String,
    value: std::time::Duration,
}

impl PositiveDuration {
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn as_std(&self) -> std::time::Duration {
        self.value
    }
    /// The duration as a span of wall-clock time for arithmetic on timestamps.
    pub fn as_span(&self) -> jiff::SignedDuration {
        // Cannot fail: parsing bounds the value far below SignedDuration's range.
        jiff::SignedDuration::try_from(self.value).unwrap_or(jiff::SignedDuration::MAX)
    }

    /// A measured span, to the millisecond, written as Go writes it (`1h2m3.25s`), for a
    /// status field; None below a millisecond (not positive once rounded) or beyond the bound.
    pub fn from_span(span: jiff::SignedDuration) -> Option<Self> {
        let millis = u128::try_from(span.as_millis()).ok()?;
        let (hours, minutes) = (millis / 3_600_000, millis / 60_000 % 60);
        let (seconds, fraction) = (millis / 1000 % 60, millis % 1000);
        let mut text = String::new();
        if hours > 0 {
            text.push_str(&format!("{hours}h"));
        }
        if minutes > 0 {
            text.push_str(&format!("{minutes}m"));
        }
        if fraction > 0 {
            let digits = format!("{fraction:03}");
            text.push_str(&format!("{seconds}.{}s", digits.trim_end_matches('0')));
        } else if seconds > 0 || text.is_empty() {
            text.push_str(&format!("{seconds}s"));
        }
        text.parse().ok()
    }
}

impl FromStr for PositiveDuration {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason| InvalidValue {
            what: "duration",
            value: s.to_owned(),
            reason,
        };
        if s.len() > 32 || !DURATION_RE.is_match(s) {
            return Err(invalid("must be a Go duration such as 90s, 15m or 1h30m"));
        }
        // An overflow of Go's int64 nanoseconds is far above the bound, too.
        let nanos = go_duration_nanos(s).unwrap_or(u64::MAX);
        if nanos == 0 || nanos > MAX_DURATION_HOURS * NANOS_PER_HOUR {
            return Err(invalid("must be positive and at most 100 years"));
        }
        Ok(Self {
            text: s.to_owned(),
            value: std::time::Duration::from_nanos(nanos),
        })
    }
}
string_newtype!(PositiveDuration);

/// The nanoseconds of a duration that matched [`DURATION_PATTERN`], computed as Go's
/// `time.ParseDuration` computes them (fractions through float64, truncated), because that
/// is what CEL's `duration()` calls when the API server checks [`duration_bound_rule`]: a
/// value at the bound is then admitted by both or refused by both. `None` where Go reports
/// an overflow (above 2^63 - 1 ns, about 2562047h).
fn go_duration_nanos(text: &str) -> Option<u64> {
    const LIMIT: u64 = 1 << 63;
    let mut total: u64 = 0;
    for part in DURATION_PART_RE.captures_iter(text) {
        let unit: u64 = match &part[3] {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => NANOS_PER_HOUR,
            _ => return None, // the pattern admits no other unit
        };
        // Go's leadingInt: the digits before the point, at most 1<<63.
        let mut whole: u64 = 0;
        for digit in part[1].bytes() {
            if whole > LIMIT / 10 {
                return None;
            }
            whole = whole * 10 + u64::from(digit - b'0');
            if whole > LIMIT {
                return None;
            }
        }
        // Go's leadingFraction: the digits after the point, up to the first that would
        // overflow (the rest are ignored), and the power of ten they are scaled by.
        let mut fraction: u64 = 0;
        let mut scale: f64 = 1.0;
        for digit in part.get(2).map_or("", |m| m.as_str()).bytes() {
            if fraction > (LIMIT - 1) / 10 {
                break;
            }
            let next = fraction * 10 + u64::from(digit - b'0');
            if next > LIMIT {
                break;
            }
            fraction = next;
            scale *= 10.0;
        }
        if whole > LIMIT / unit {
            return None;
        }
        let mut value = whole * unit;
        if fraction > 0 {
            // Exactly Go's `uint64(float64(f) * (float64(unit) / scale))`.
            value += (fraction as f64 * (unit as f64 / scale)) as u64;
            if value > LIMIT {
                return None;
            }
        }
        total = total.checked_add(value)?;
        if total > LIMIT {
            return None;
        }
    }
    (total < LIMIT).then_some(total)
}

/// The CEL rule that bounds a [`PositiveDuration`] on admission at [`MAX_DURATION_HOURS`]:
/// `duration(self) <= duration('876000h')`. (A value beyond Go's range makes `duration()`
/// fail, and a rule that fails refuses the object, too.)
pub fn duration_bound_rule() -> String {
    format!("duration(self) <= duration('{MAX_DURATION_HOURS}h')")
}

impl JsonSchema for PositiveDuration {
    fn schema_name() -> Cow<'static, str> {
        "PositiveDuration".into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "maxLength": 32,
            "pattern": DURATION_PATTERN,
            "description": "a positive duration such as 90s, 15m or 1h30m",
            "x-kubernetes-validations": [{
                "rule": "duration(self) > duration('0s')",
                "message": "must be a positive duration such as 15m",
            }, {
                "rule": duration_bound_rule(),
                "message": format!("must be at most {MAX_DURATION_HOURS}h (100 years)"),
            }],
        })
    }
}

/// What an integer of each `format` schemars writes decodes to in Rust, as far as the API
/// server's int64 reaches: `(minimum, maximum)`, or `None` for the 64-bit signed formats
/// (and formats that name no integer type), which need no bound.
pub fn integer_format_range(format: &str) -> Option<(i64, i64)> {
    let range: (i64, i64) = match format {
        "int8" => (i8::MIN.into(), i8::MAX.into()),
        "int16" => (i16::MIN.into(), i16::MAX.into()),
        "int32" => (i32::MIN.into(), i32::MAX.into()),
        "uint8" => (0, u8::MAX.into()),
        "uint16" => (0, u16::MAX.into()),
        "uint32" => (0, u32::MAX.into()),
        "uint64" | "uint" | "uint128" => (0, i64::MAX),
        _ => return None,
    };
    Some(range)
}

/// A schemars transform, `#[schemars(transform = bounded_integers)]`: every integer of the
/// field's schema, map values and array items included, gets the `minimum` and `maximum` of
/// its Rust type ([`integer_format_range`]); a tighter bound already there is kept. The API
/// server enforces only the bounds a schema states: without them a worker could store a
/// count that the controller then cannot decode. For what `range(...)` cannot reach, such
/// as the values of a map.
pub fn bounded_integers(schema: &mut Schema) {
    if let Some(node) = schema.as_object_mut() {
        bound_node(node);
    }
}

fn bound_node(node: &mut serde_json::Map<String, serde_json::Value>) {
    use serde_json::Value;
    let is_integer = match node.get("type") {
        Some(Value::String(t)) => t == "integer",
        Some(Value::Array(types)) => types.iter().any(|t| t == "integer"),
        _ => false,
    };
    let range = node
        .get("format")
        .and_then(Value::as_str)
        .and_then(integer_format_range);
    if let (true, Some((min, max))) = (is_integer, range) {
        let tight_min = node
            .get("minimum")
            .and_then(Value::as_f64)
            .is_some_and(|m| m >= min as f64);
        if !tight_min {
            node.insert("minimum".to_owned(), Value::from(min));
        }
        let tight_max = node
            .get("maximum")
            .and_then(Value::as_f64)
            .is_some_and(|m| m <= max as f64);
        if !tight_max {
            node.insert("maximum".to_owned(), Value::from(max));
        }
    }
    for (key, child) in node.iter_mut() {
        match (key.as_str(), child) {
            ("properties", Value::Object(properties)) => {
                for property in properties.values_mut() {
                    if let Value::Object(property) = property {
                        bound_node(property);
                    }
                }
            }
            ("additionalProperties" | "items", Value::Object(schema)) => bound_node(schema),
            ("items" | "anyOf" | "oneOf" | "allOf", Value::Array(schemas)) => {
                for schema in schemas {
                    if let Value::Object(schema) = schema {
                        bound_node(schema);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Schema for a free-form JSON object (state snapshots, metadata): kept as sent.
pub fn free_form_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_checked_in_rust_agree_with_their_patterns() {
        let snake = compile(SNAKE_CASE_PATTERN);
        for text in [
            "player_injury_out",
            "a",
            "a1_b",
            "",
            "Player",
            "1a",
            "a-b",
            "a\nb",
        ] {
            assert_eq!(is_snake_case(text), snake.is_match(text), "{text:?}");
        }
        assert!(!is_snake_case(&"a".repeat(64)));
        for (text, label, subdomain) in [
            ("nba", true, true),
            ("nba.policy", false, true),
            ("-nba", false, false),
            ("nba-", false, false),
            ("NBA", false, false),
            ("a\n---", false, false),
            ("", false, false),
        ] {
            assert_eq!(is_dns_label(text), label, "{text:?}");
            assert_eq!(is_dns_subdomain(text), subdomain, "{text:?}");
        }
    }

    #[test]
    fn table_names_accept_the_originals_tables() {
        for ok in [
            "nba_raw.nbac_schedule",
            "nba_precompute.player_composite_factors",
            "nba-props-platform.nba_predictions.ml_feature_store_v2",
            "ds.t",
        ] {
            assert!(ok.parse::<TableName>().is_ok(), "{ok} should be valid");
        }
    }

    #[test]
    fn table_names_refuse_anything_that_could_escape_sql() {
        for bad in [
            "",
            "table_only",
            "nba_raw.t; DROP TABLE x",
            "nba_raw.`t`",
            "nba_raw.t'--",
            "nba raw.t",
            "a.b.c.d",
            "nba_raw.t\n",
            "UPPER-project.ds.t",
            "nba_raw.1abc",
        ] {
            let err = bad.parse::<TableName>().unwrap_err();
            assert_eq!(err.what, "table name");
        }
    }

    #[test]
    fn column_names() {
        assert!("game_date_est".parse::<ColumnName>().is_ok());
        assert!("_x1".parse::<ColumnName>().is_ok());
        for bad in ["", "1col", "game date", "a;b", "a`", "a.b"] {
            assert!(
                bad.parse::<ColumnName>().is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn dates_must_exist() {
        assert_eq!(
            "2026-11-24".parse::<GameDate>().unwrap().to_string(),
            "2026-11-24"
        );
        for bad in ["2026-02-30", "2026-13-01", "24/11/2026", "2026-1-1", ""] {
            assert!(bad.parse::<GameDate>().is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn durations_keep_their_text_and_value() {
        let d: PositiveDuration = "1h30m".parse().unwrap();
        assert_eq!(d.as_str(), "1h30m");
        assert_eq!(d.as_std().as_secs(), 5400);
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m\"");
        let back: PositiveDuration = serde_json::from_str("\"15m\"").unwrap();
        assert_eq!(back.as_std().as_secs(), 900);
    }

    #[test]
    fn durations_must_be_positive_and_well_formed() {
        for bad in ["0s", "0", "-5m", "15", "fifteen", "15 m", "", "1000000h"] {
            assert!(
                bad.parse::<PositiveDuration>().is_err(),
                "{bad:?} must be refused"
            );
        }
        assert!(serde_json::from_str::<PositiveDuration>("\"-1h\"").is_err());
    }

    #[test]
    fn durations_end_at_the_bound_the_schema_states() {
        let max = format!("{MAX_DURATION_HOURS}h");
        assert_eq!(max, "876000h");
        let d: PositiveDuration = max.parse().unwrap();
        assert_eq!(d.as_std().as_secs(), 100 * 365 * 24 * 3600);
        assert!("875999h60m".parse::<PositiveDuration>().is_ok());
        for over in [
            "876001h",
            "876000h1ns",
            "875999h60m0.000000001s",
            // Beyond Go's int64 nanoseconds: refused, never a panic.
            "2562048h",
            "9223372036854775808ns",
            "99999999999999999999999999999h",
        ] {
            let error = over.parse::<PositiveDuration>().unwrap_err();
            assert!(error.reason.contains("at most"), "{over}: {error}");
        }
        assert_eq!(
            duration_bound_rule(),
            "duration(self) <= duration('876000h')"
        );
        let schema = PositiveDuration::json_schema(&mut SchemaGenerator::default());
        let rules = schema.get("x-kubernetes-validations").unwrap().to_string();
        assert!(rules.contains(&duration_bound_rule()), "{rules}");
    }

    #[test]
    fn durations_add_up_as_go_parses_them() {
        let nanos = |s: &str| go_duration_nanos(s).unwrap();
        assert_eq!(nanos("1h30m"), 5_400_000_000_000);
        assert_eq!(nanos("1.5h"), 5_400_000_000_000);
        assert_eq!(nanos("1.5µs"), 1_500);
        assert_eq!(nanos("2us3ns"), 2_003);
        // Fractions of a nanosecond are truncated, as Go does.
        assert_eq!(nanos("1.9ns"), 1);
        assert_eq!(nanos("0.0000000019s"), 1);
        assert_eq!(nanos("9223372036854775807ns"), i64::MAX as u64);
        assert_eq!(go_duration_nanos("9223372036854775808ns"), None);
        assert!("0.1ns".parse::<PositiveDuration>().is_err());
    }

    #[test]
    fn integers_get_the_bounds_of_their_rust_type() {
        use serde_json::json;
        let mut schema = json_schema!({
            "type": "object",
            "properties": {
                "count": {"type": "integer", "format": "uint32", "minimum": 0},
                "tight": {"type": "integer", "format": "uint32", "minimum": 1, "maximum": 100},
                "wide": {"type": "integer", "format": "uint16", "minimum": -5, "maximum": 1e9},
                "optional": {"type": ["integer", "null"], "format": "int32"},
                "big": {"type": "integer", "format": "int64"},
                "unsigned": {"type": "integer", "format": "uint64", "minimum": 0},
                "byReason": {
                    "type": "object",
                    "additionalProperties": {"type": "integer", "format": "uint32", "minimum": 0},
                },
                "list": {"type": "array", "items": {"type": "integer", "format": "uint8"}},
            },
        });
        bounded_integers(&mut schema);
        let value = schema.as_value();
        let bounds = |pointer: &str| {
            let node = value.pointer(pointer).unwrap();
            (node.get("minimum").cloned(), node.get("maximum").cloned())
        };
        let both = |min: serde_json::Value, max: serde_json::Value| (Some(min), Some(max));
        assert_eq!(
            bounds("/properties/count"),
            both(json!(0), json!(4294967295u32))
        );
        assert_eq!(bounds("/properties/tight"), both(json!(1), json!(100)));
        assert_eq!(bounds("/properties/wide"), both(json!(0), json!(65535)));
        assert_eq!(
            bounds("/properties/optional"),
            both(json!(i32::MIN), json!(i32::MAX))
        );
        assert_eq!(bounds("/properties/big"), (None, None));
        assert_eq!(
            bounds("/properties/unsigned"),
            both(json!(0), json!(i64::MAX))
        );
        assert_eq!(
            bounds("/properties/byReason/additionalProperties"),
            both(json!(0), json!(4294967295u32))
        );
        assert_eq!(bounds("/properties/list/items"), both(json!(0), json!(255)));
    }
}
