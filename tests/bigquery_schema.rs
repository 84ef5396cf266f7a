//! schemas/healing_events.json is the table definition users create the table from; the Rust
//! row type is what the exporter sends. They must agree, and the original's nine columns must
//! keep their names, types and modes.

use pipeline_healer::sink::row::{BatchOutcomeRow, Column, HealingEventRow};

fn schema_file() -> Vec<Column> {
    columns_in("healing_events.json")
}

fn columns_in(file: &str) -> Vec<Column> {
    let path = format!("{}/schemas/{file}", env!("CARGO_MANIFEST_DIR"));
    let fields: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    fields
        .iter()
        .map(|f| Column {
            name: f["name"].as_str().unwrap().into(),
            r#type: f["type"].as_str().unwrap().into(),
            mode: f["mode"].as_str().unwrap().into(),
        })
        .collect()
}

#[test]
fn row_type_and_schema_file_agree() {
    let mut file = schema_file();
    let mut code = HealingEventRow::columns();
    assert!(!code.is_empty());
    file.sort();
    code.sort();
    assert_eq!(code, file);
}

#[test]
fn the_batch_outcomes_row_and_its_schema_file_agree() {
    let mut file = columns_in("batch_outcomes.json");
    let mut code = BatchOutcomeRow::columns();
    assert!(
        code.iter()
            .any(|c| c.name == "game_date" && c.r#type == "DATE")
    );
    file.sort();
    code.sort();
    assert_eq!(code, file);
}

#[test]
fn the_originals_nine_columns_come_first_unchanged() {
    let original = [
        ("healing_id", "STRING", "REQUIRED"),
        ("timestamp", "TIMESTAMP", "REQUIRED"),
        ("healing_type", "STRING", "REQUIRED"),
        ("trigger_reason", "STRING", "REQUIRED"),
        ("action_taken", "STRING", "REQUIRED"),
        ("before_state", "STRING", "NULLABLE"),
        ("after_state", "STRING", "NULLABLE"),
        ("success", "BOOLEAN", "REQUIRED"),
        ("metadata", "STRING", "NULLABLE"),
    ];
    let file = schema_file();
    for (i, (name, ty, mode)) in original.iter().enumerate() {
        assert_eq!(
            (
                file[i].name.as_str(),
                file[i].r#type.as_str(),
                file[i].mode.as_str()
            ),
            (*name, *ty, *mode)
        );
    }
    // Every added column is nullable, so the original's inserts still fit.
    assert!(file[original.len()..].iter().all(|c| c.mode == "NULLABLE"));
}
