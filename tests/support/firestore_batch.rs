//! Batch documents as the original pipeline writes them (array mode), and their reads and
//! writes in the Firestore emulator.

use firestore::FirestoreDb;
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

/// An array-mode batch document, with the original's field names.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BatchDoc {
    pub batch_id: String,
    pub game_date: String,
    pub expected_players: i64,
    pub completed_players: Vec<String>,
    pub failed_players: Vec<String>,
    pub is_complete: bool,
    pub correlation_id: String,
    #[serde(with = "firestore::serialize_as_timestamp")]
    pub created_at: Timestamp,
    #[serde(with = "firestore::serialize_as_timestamp")]
    pub updated_at: Timestamp,
    #[serde(default)]
    pub auto_completed: Option<bool>,
    #[serde(default)]
    pub auto_completion_healing_id: Option<String>,
    #[serde(default)]
    pub auto_completion_reason: Option<String>,
}

pub fn doc(id: &str, done: usize, updated_at: Timestamp) -> BatchDoc {
    BatchDoc {
        batch_id: id.into(),
        game_date: "2026-11-24".into(),
        expected_players: 50,
        completed_players: (0..done).map(|i| format!("player{i}")).collect(),
        failed_players: vec!["lebronjames".into()],
        is_complete: false,
        correlation_id: "7f3c2a1e".into(),
        created_at: Timestamp::now() - SignedDuration::from_hours(1),
        updated_at,
        auto_completed: None,
        auto_completion_healing_id: None,
        auto_completion_reason: None,
    }
}

pub async fn put<T>(db: &FirestoreDb, collection: &str, id: &str, value: &T)
where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync,
{
    db.fluent()
        .update()
        .in_col(collection)
        .document_id(id)
        .object(value)
        .execute::<serde_json::Value>()
        .await
        .unwrap_or_else(|e| panic!("writing {id}: {e}"));
}

/// The batch document `id`, which must exist.
pub async fn get(db: &FirestoreDb, collection: &str, id: &str) -> BatchDoc {
    read(db, collection, id).await.expect("document")
}

/// The document `id` as `T`, if it exists.
pub async fn read<T>(db: &FirestoreDb, collection: &str, id: &str) -> Option<T>
where
    T: serde::de::DeserializeOwned + Send,
{
    db.fluent()
        .select()
        .by_id_in(collection)
        .obj()
        .one(id)
        .await
        .unwrap_or_else(|e| panic!("reading {id}: {e}"))
}
