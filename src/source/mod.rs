//! Sources: where the pipeline's state comes from and how it enters the cluster. What a
//! batch's report says, as the decision's input (`report.rs`); a Firestore batch document,
//! read field by field (`firestore_doc.rs`); the Firestore mirror, which keeps a
//! PredictionBatch object per incomplete document and writes its `report` (`firestore.rs`);
//! and row counts of a phase's BigQuery tables (`bigquery.rs`). Writers of anything outside
//! the cluster are in `sink/`.

pub mod bigquery;
pub mod firestore;
pub mod firestore_doc;
pub mod report;
