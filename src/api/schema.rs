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

static TABLE_RE: LazyLock<Regex> = LazyLock::new(|| compile(TABLE_PATTERN));
static COLUMN_RE: LazyLock<Regex> = LazyLock::new(|| compile(COLUMN_PATTERN));
static DATE_RE: LazyLock<Regex> = LazyLock::new(|| compile(DATE_PATTERN));
static DURATION_RE: LazyLock<Regex> = LazyLock::new(|| compile(DURATION_PATTERN));

fn compile(pattern: &str) -> Regex {
    // The patterns are constants covered by unit tests; failing here is a programming error.
    Regex::new(pattern).unwrap_or_else(|e| panic!("invalid built-in pattern {pattern}: {e}"))
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
        let parsed: kube::core::Duration = s.parse().map_err(|_| invalid("cannot be parsed"))?;
        let value = std::time::Duration::from(parsed);
        // A century is far beyond any threshold and keeps timestamp arithmetic in range.
        if value.is_zero() || value > std::time::Duration::from_secs(100 * 365 * 24 * 3600) {
            return Err(invalid("must be positive and at most 100 years"));
        }
        Ok(Self {
            text: s.to_owned(),
            value,
        })
    }
}
string_newtype!(PositiveDuration);

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
            }],
        })
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
}
