//! Observation: turning what a source says into the decision's input.

pub mod bigquery;
pub mod firestore;
pub mod firestore_doc;
pub mod report;
