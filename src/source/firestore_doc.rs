//! Reading a `prediction_batches` document: the original's field names, both progress modes,
//! and every way a document can be wrong, reported field by field instead of failing a whole
//! typed deserialisation. Pure: the Firestore value is first turned into [`DocValue`].
//!
//! Modes (reference section 1):
//! - array: `completed_players` (list of player ids) with `updated_at`;
//! - counter: `completed_count` with `last_updated` (per-player documents in `completions/`).

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

use crate::api::batch::BatchReport;
use crate::api::schema::GameDate;

/// Written by a heal next to the original's `auto_completed`, naming the HealingEvent.
pub const HEALED_BY_FIELD: &str = "auto_completion_healing_id";
/// Far beyond any NBA slate; larger values are corrupt documents, not batches.
pub const MAX_PLAYERS: i64 = 100_000;
/// The outstanding players kept as a sample for the healing record.
const MISSING_SAMPLE: usize = 100;

/// A Firestore value, as far as this module cares.
#[derive(Clone, Debug, PartialEq)]
pub enum DocValue {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(String),
    Time(Timestamp),
    Array(Vec<DocValue>),
    Map(BTreeMap<String, DocValue>),
    /// Bytes, references, geo points: never valid in a batch document.
    Other(&'static str),
}

impl DocValue {
    fn kind(&self) -> &'static str {
        match self {
            DocValue::Null => "null",
            DocValue::Bool(_) => "boolean",
            DocValue::Int(_) => "integer",
            DocValue::Double(_) => "double",
            DocValue::Str(_) => "string",
            DocValue::Time(_) => "timestamp",
            DocValue::Array(_) => "array",
            DocValue::Map(_) => "map",
            DocValue::Other(kind) => kind,
        }
    }
}

/// A batch document read successfully.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchDoc {
    pub batch_id: String,
    pub game_date: GameDate,
    pub correlation_id: Option<String>,
    pub report: BatchReport,
}

/// Why a document cannot be read: every problem, each naming its field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("document {doc_id}: {}", problems.join("; "))]
pub struct DocProblems {
    pub doc_id: String,
    pub problems: Vec<String>,
}

/// Collects problems while reading fields.
struct Reader<'a> {
    fields: &'a BTreeMap<String, DocValue>,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    fn get(&self, name: &str) -> Option<&'a DocValue> {
        match self.fields.get(name) {
            None | Some(DocValue::Null) => None,
            Some(v) => Some(v),
        }
    }

    fn wrong(&mut self, name: &str, want: &str, got: &DocValue) {
        self.problems
            .push(format!("{name} must be {want}, found {}", got.kind()));
    }

    fn string(&mut self, name: &str) -> Option<String> {
        match self.get(name)? {
            DocValue::Str(s) => Some(s.clone()),
            other => {
                self.wrong(name, "a string", other);
                None
            }
        }
    }

    fn boolean(&mut self, name: &str) -> Option<bool> {
        match self.get(name)? {
            DocValue::Bool(b) => Some(*b),
            other => {
                self.wrong(name, "a boolean", other);
                None
            }
        }
    }

    /// A count: an integer (or a whole double, as some clients write numbers) in 0..=max.
    fn count(&mut self, name: &str, min: i64) -> Option<i64> {
        let n = match self.get(name)? {
            DocValue::Int(n) => *n,
            DocValue::Double(d) if d.fract() == 0.0 && d.abs() < 1e15 => *d as i64,
            other => {
                self.wrong(name, "an integer", other);
                return None;
            }
        };
        if !(min..=MAX_PLAYERS).contains(&n) {
            self.problems.push(format!(
                "{name} is {n}; it must be between {min} and {MAX_PLAYERS}"
            ));
            return None;
        }
        Some(n)
    }

    /// A time: a Firestore timestamp, or an RFC 3339 string (as some writers store them).
    fn time(&mut self, name: &str) -> Option<Timestamp> {
        match self.get(name)? {
            DocValue::Time(t) => Some(*t),
            DocValue::Str(s) => match s.parse::<Timestamp>() {
                Ok(t) => Some(t),
                Err(_) => {
                    self.problems
                        .push(format!("{name} {s:?} is not a timestamp"));
                    None
                }
            },
            other => {
                self.wrong(name, "a timestamp", other);
                None
            }
        }
    }

    /// A list of player ids, at most MAX_PLAYERS long.
    fn players(&mut self, name: &str) -> Option<Vec<String>> {
        let items = match self.get(name)? {
            DocValue::Array(items) => items,
            other => {
                self.wrong(name, "an array of player ids", other);
                return None;
            }
        };
        if items.len() as i64 > MAX_PLAYERS {
            self.problems.push(format!(
                "{name} has {} entries; at most {MAX_PLAYERS} are read",
                items.len()
            ));
            return None;
        }
        let mut players = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                DocValue::Str(s) => players.push(s.clone()),
                other => {
                    self.problems.push(format!(
                        "{name}[{i}] must be a string, found {}",
                        other.kind()
                    ));
                    return None;
                }
            }
        }
        Some(players)
    }
}

/// Reads a batch document. `create_time` and `update_time` are Firestore's own; they fill in
/// for `created_at` and the progress time when a document lacks them.
pub fn parse(
    doc_id: &str,
    fields: &BTreeMap<String, DocValue>,
    create_time: Option<Timestamp>,
    update_time: Option<Timestamp>,
) -> Result<BatchDoc, DocProblems> {
    let mut r = Reader {
        fields,
        problems: Vec::new(),
    };

    let batch_id = r.string("batch_id").unwrap_or_else(|| doc_id.to_owned());
    if batch_id != doc_id {
        r.problems.push(format!(
            "batch_id {batch_id:?} differs from the document id"
        ));
    }
    let game_date = match r.string("game_date") {
        Some(s) => match s.parse::<GameDate>() {
            Ok(d) => Some(d),
            Err(e) => {
                r.problems.push(format!("game_date: {e}"));
                None
            }
        },
        None => {
            if !fields.contains_key("game_date") {
                r.problems.push("game_date is missing".into());
            }
            None
        }
    };
    let expected = r.count("expected_players", 1);
    if expected.is_none() && r.get("expected_players").is_none() {
        r.problems.push("expected_players is missing".into());
    }

    let completed_players = r.players("completed_players");
    let completed_count = r.count("completed_count", 0);
    let failed_players = r.players("failed_players").unwrap_or_default();
    let is_complete = r.boolean("is_complete").unwrap_or(false);
    let correlation_id = r.string("correlation_id");
    let auto_completed_by = r.string(HEALED_BY_FIELD);
    let created_at = r.time("created_at").or(create_time);
    // Counter mode maintains `last_updated`; array mode `updated_at` (reference section 1).
    let last_updated = r.time("last_updated");
    let updated_at = r.time("updated_at");

    let (completed, last_progress) = match (&completed_players, completed_count) {
        (_, Some(count)) => (Some(count), last_updated.or(updated_at)),
        (Some(players), None) => (Some(players.len() as i64), updated_at.or(last_updated)),
        (None, None) => {
            if r.get("completed_players").is_none() && r.get("completed_count").is_none() {
                r.problems
                    .push("neither completed_players nor completed_count is present".into());
            }
            (None, None)
        }
    };

    if !r.problems.is_empty() {
        return Err(DocProblems {
            doc_id: doc_id.to_owned(),
            problems: r.problems,
        });
    }
    let (Some(game_date), Some(expected), Some(completed)) = (game_date, expected, completed)
    else {
        // Unreachable: each None above recorded a problem.
        return Err(DocProblems {
            doc_id: doc_id.to_owned(),
            problems: vec!["unreadable".into()],
        });
    };

    let done: std::collections::HashSet<&str> = completed_players
        .iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let missing_players: Vec<String> = failed_players
        .iter()
        .filter(|p| !done.contains(p.as_str()))
        .take(MISSING_SAMPLE)
        .cloned()
        .collect();
    let still_failing = failed_players
        .iter()
        .filter(|p| !done.contains(p.as_str()))
        .count();
    let mut failing = BTreeMap::new();
    if still_failing > 0 {
        // The document names failed players but not why; the key says as much.
        failing.insert(
            "worker_failed".to_owned(),
            u32::try_from(still_failing).unwrap_or(u32::MAX),
        );
    }
    let to_u32 = |n: i64| u32::try_from(n).unwrap_or(u32::MAX);
    let time = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    Ok(BatchDoc {
        batch_id,
        game_date,
        correlation_id,
        report: BatchReport {
            expected: Some(to_u32(expected)),
            completed: to_u32(completed),
            skipped: BTreeMap::new(),
            failing,
            missing_players,
            last_progress_time: last_progress.or(update_time).map(MicroTime),
            created_at: created_at.map(time),
            complete: is_complete,
            auto_completed_by,
            source_version: update_time.map(|t| t.to_string()),
        },
    })
}

/// Converts a document's fields from the Firestore wire form.
pub fn fields_of(doc: &firestore::FirestoreDocument) -> BTreeMap<String, DocValue> {
    doc.fields
        .iter()
        .map(|(k, v)| (k.clone(), from_proto(v)))
        .collect()
}

fn from_proto(v: &firestore::gcloud_sdk::google::firestore::v1::Value) -> DocValue {
    use firestore::gcloud_sdk::google::firestore::v1::value::ValueType;
    match &v.value_type {
        None | Some(ValueType::NullValue(_)) => DocValue::Null,
        Some(ValueType::BooleanValue(b)) => DocValue::Bool(*b),
        Some(ValueType::IntegerValue(n)) => DocValue::Int(*n),
        Some(ValueType::DoubleValue(d)) => DocValue::Double(*d),
        Some(ValueType::StringValue(s)) => DocValue::Str(s.clone()),
        Some(ValueType::TimestampValue(t)) => {
            proto_time(t).map_or(DocValue::Other("invalid timestamp"), DocValue::Time)
        }
        Some(ValueType::ArrayValue(a)) => {
            DocValue::Array(a.values.iter().map(from_proto).collect())
        }
        Some(ValueType::MapValue(m)) => DocValue::Map(
            m.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_proto(v)))
                .collect(),
        ),
        Some(ValueType::BytesValue(_)) => DocValue::Other("bytes"),
        Some(ValueType::ReferenceValue(_)) => DocValue::Other("reference"),
        Some(ValueType::GeoPointValue(_)) => DocValue::Other("geo point"),
        // Pipeline expressions and the like: never stored in a document.
        Some(_) => DocValue::Other("expression"),
    }
}

/// A protobuf timestamp (Firestore's `create_time`, `update_time` and timestamp values).
pub fn proto_time(t: &firestore::gcloud_sdk::prost_types::Timestamp) -> Option<Timestamp> {
    Timestamp::new(t.seconds, t.nanos).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().unwrap()
    }
    fn s(v: &str) -> DocValue {
        DocValue::Str(v.into())
    }
    fn players(n: usize) -> DocValue {
        DocValue::Array((0..n).map(|i| s(&format!("player{i}"))).collect())
    }

    const ID: &str = "batch_2026-11-24_1795480001";

    /// An array-mode document as the original writes it: 414 of 450 done.
    fn array_doc() -> BTreeMap<String, DocValue> {
        BTreeMap::from([
            ("batch_id".into(), s(ID)),
            ("game_date".into(), s("2026-11-24")),
            ("expected_players".into(), DocValue::Int(450)),
            ("completed_players".into(), players(414)),
            (
                "failed_players".into(),
                DocValue::Array(vec![s("player3"), s("lebronjames"), s("stephencurry")]),
            ),
            ("is_complete".into(), DocValue::Bool(false)),
            ("correlation_id".into(), s("7f3c2a1e")),
            (
                "created_at".into(),
                DocValue::Time(t("2026-11-24T18:00:00Z")),
            ),
            (
                "updated_at".into(),
                DocValue::Time(t("2026-11-24T20:00:00Z")),
            ),
        ])
    }

    fn problems(fields: &BTreeMap<String, DocValue>) -> Vec<String> {
        parse(ID, fields, None, None)
            .expect_err("must be refused")
            .problems
    }

    fn with(edit: impl FnOnce(&mut BTreeMap<String, DocValue>)) -> BTreeMap<String, DocValue> {
        let mut doc = array_doc();
        edit(&mut doc);
        doc
    }

    #[test]
    fn reads_an_array_mode_document() {
        let doc = parse(ID, &array_doc(), None, None).unwrap();
        assert_eq!(doc.batch_id, ID);
        assert_eq!(doc.game_date.to_string(), "2026-11-24");
        assert_eq!(doc.correlation_id.as_deref(), Some("7f3c2a1e"));
        let r = doc.report;
        assert_eq!(
            (r.expected, r.completed, r.complete),
            (Some(450), 414, false)
        );
        assert_eq!(r.last_progress_time.unwrap().0, t("2026-11-24T20:00:00Z"));
        assert_eq!(r.created_at.unwrap().0, t("2026-11-24T18:00:00Z"));
        // player3 failed earlier but has since completed: not outstanding.
        assert_eq!(r.missing_players, ["lebronjames", "stephencurry"]);
        assert_eq!(r.failing.get("worker_failed"), Some(&2));
    }

    #[test]
    fn reads_a_counter_mode_document() {
        let doc = with(|d| {
            d.remove("completed_players");
            d.remove("updated_at");
            d.insert("completed_count".into(), DocValue::Int(420));
            d.insert(
                "last_updated".into(),
                DocValue::Time(t("2026-11-24T20:30:00Z")),
            );
        });
        let r = parse(ID, &doc, None, None).unwrap().report;
        assert_eq!(r.completed, 420);
        assert_eq!(r.last_progress_time.unwrap().0, t("2026-11-24T20:30:00Z"));
    }

    #[test]
    fn firestore_times_fill_in_missing_fields() {
        let doc = with(|d| {
            d.remove("created_at");
            d.remove("updated_at");
        });
        let r = parse(
            ID,
            &doc,
            Some(t("2026-11-24T17:00:00Z")),
            Some(t("2026-11-24T21:00:00Z")),
        )
        .unwrap()
        .report;
        assert_eq!(r.created_at.unwrap().0, t("2026-11-24T17:00:00Z"));
        assert_eq!(r.last_progress_time.unwrap().0, t("2026-11-24T21:00:00Z"));
    }

    #[test]
    fn rfc3339_strings_and_whole_doubles_are_accepted() {
        let doc = with(|d| {
            d.insert("updated_at".into(), s("2026-11-24T20:00:00.5Z"));
            d.insert("expected_players".into(), DocValue::Double(450.0));
        });
        let r = parse(ID, &doc, None, None).unwrap().report;
        assert_eq!(r.expected, Some(450));
        assert_eq!(r.last_progress_time.unwrap().0, t("2026-11-24T20:00:00.5Z"));
    }

    #[test]
    fn the_mirrored_report_keeps_the_progress_time_to_the_microsecond() {
        // The report goes to the object as JSON; the stall threshold is measured from it.
        let doc = with(|d| {
            d.insert("updated_at".into(), s("2026-11-24T20:00:00.654321Z"));
        });
        let report = parse(ID, &doc, None, None).unwrap().report;
        let written = serde_json::to_value(&report).unwrap();
        assert_eq!(written["lastProgressTime"], "2026-11-24T20:00:00.654321Z");
    }

    /// Each malformed kind is refused with a message naming the field.
    #[test]
    fn malformed_documents_are_refused_naming_the_field() {
        let cases: Vec<(&str, BTreeMap<String, DocValue>, &str)> = vec![
            (
                "missing expected",
                with(|d| {
                    d.remove("expected_players");
                }),
                "expected_players is missing",
            ),
            (
                "expected as a string",
                with(|d| {
                    d.insert("expected_players".into(), s("450"));
                }),
                "expected_players must be an integer, found string",
            ),
            (
                "negative expected",
                with(|d| {
                    d.insert("expected_players".into(), DocValue::Int(-5));
                }),
                "expected_players is -5",
            ),
            (
                "zero expected",
                with(|d| {
                    d.insert("expected_players".into(), DocValue::Int(0));
                }),
                "expected_players is 0",
            ),
            (
                "absurd expected",
                with(|d| {
                    d.insert("expected_players".into(), DocValue::Int(10_000_000));
                }),
                "expected_players is 10000000",
            ),
            (
                "fractional expected",
                with(|d| {
                    d.insert("expected_players".into(), DocValue::Double(450.5));
                }),
                "expected_players must be an integer, found double",
            ),
            (
                "negative counter",
                with(|d| {
                    d.insert("completed_count".into(), DocValue::Int(-1));
                }),
                "completed_count is -1",
            ),
            (
                "players not a list",
                with(|d| {
                    d.insert("completed_players".into(), s("a,b,c"));
                }),
                "completed_players must be an array",
            ),
            (
                "non-string player",
                with(|d| {
                    d.insert(
                        "completed_players".into(),
                        DocValue::Array(vec![s("a"), DocValue::Int(7)]),
                    );
                }),
                "completed_players[1] must be a string, found integer",
            ),
            (
                "huge array",
                with(|d| {
                    d.insert("completed_players".into(), players(100_001));
                }),
                "completed_players has 100001 entries",
            ),
            (
                "no progress field",
                with(|d| {
                    d.remove("completed_players");
                }),
                "neither completed_players nor completed_count",
            ),
            (
                "missing date",
                with(|d| {
                    d.remove("game_date");
                }),
                "game_date is missing",
            ),
            (
                "date in another format",
                with(|d| {
                    d.insert("game_date".into(), s("11/24/2026"));
                }),
                "game_date: invalid date",
            ),
            (
                "date as a number",
                with(|d| {
                    d.insert("game_date".into(), DocValue::Int(20261124));
                }),
                "game_date must be a string, found integer",
            ),
            (
                "timestamp garbage",
                with(|d| {
                    d.insert("updated_at".into(), s("yesterday"));
                }),
                "updated_at \"yesterday\" is not a timestamp",
            ),
            (
                "timestamp as a map",
                with(|d| {
                    d.insert("created_at".into(), DocValue::Map(BTreeMap::new()));
                }),
                "created_at must be a timestamp, found map",
            ),
            (
                "flag as a string",
                with(|d| {
                    d.insert("is_complete".into(), s("yes"));
                }),
                "is_complete must be a boolean, found string",
            ),
            (
                "failed players as bytes",
                with(|d| {
                    d.insert("failed_players".into(), DocValue::Other("bytes"));
                }),
                "failed_players must be an array of player ids, found bytes",
            ),
            (
                "another batch's id",
                with(|d| {
                    d.insert("batch_id".into(), s("batch_other"));
                }),
                "differs from the document id",
            ),
        ];
        assert!(cases.len() >= 10);
        for (what, doc, expect) in cases {
            let found = problems(&doc);
            assert!(
                found.iter().any(|p| p.contains(expect)),
                "{what}: {found:?} does not say {expect:?}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let doc = with(|d| {
            d.insert("expected_players".into(), DocValue::Int(-1));
            d.insert("game_date".into(), s("tomorrow"));
            d.insert("is_complete".into(), DocValue::Int(1));
        });
        let found = problems(&doc);
        assert_eq!(found.len(), 3, "{found:?}");
        let err = parse(ID, &doc, None, None).unwrap_err();
        assert!(err.to_string().starts_with(&format!("document {ID}: ")));
    }

    #[test]
    fn null_fields_count_as_absent() {
        let doc = with(|d| {
            d.insert("correlation_id".into(), DocValue::Null);
            d.insert("failed_players".into(), DocValue::Null);
        });
        let r = parse(ID, &doc, None, None).unwrap();
        assert_eq!(r.correlation_id, None);
        assert!(r.report.missing_players.is_empty());
    }
}
