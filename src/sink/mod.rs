//! Where healing events go besides the cluster: BigQuery and Firestore (and Slack alerts).

pub mod consolidation;
pub mod row;
