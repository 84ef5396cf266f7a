//! The crate's error type. Each variant knows whether retrying can help, so reconcilers
//! requeue transient failures with backoff and surface permanent ones as conditions.

/// Everything that can go wrong, by where it happens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),

    #[error("rendering YAML: {0}")]
    SerializeYaml(#[source] serde_yaml::Error),

    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),

    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },

    #[error("firestore: {0}")]
    Firestore(#[source] Box<firestore::errors::FirestoreError>),

    #[error("bigquery: {0}")]
    BigQuery(#[source] Box<gcp_bigquery_client::error::BQError>),

    #[error("the {0} cache has not synced yet")]
    NotSynced(&'static str),

    #[error("{0}: no answer within {1:?}")]
    Timeout(&'static str, std::time::Duration),
}

impl Error {
    pub fn firestore(e: firestore::errors::FirestoreError) -> Self {
        Error::Firestore(Box::new(e))
    }

    pub fn bigquery(e: gcp_bigquery_client::error::BQError) -> Self {
        Error::BigQuery(Box::new(e))
    }

    /// Whether the same call may succeed later without anything being changed by a person.
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Kube(kube::Error::Api(status)) => {
                // 409 conflicts, 429 throttling and 5xx are worth retrying; other 4xx are not.
                status.code == 409 || status.code == 429 || status.code >= 500
            }
            Error::Kube(_)
            | Error::Io(..)
            | Error::BigQuery(_)
            | Error::NotSynced(_)
            | Error::Timeout(..) => true,
            Error::Firestore(e) => !matches!(
                **e,
                firestore::errors::FirestoreError::InvalidParametersError(_)
            ),
            Error::SerializeYaml(_) | Error::Invalid { .. } => false,
        }
    }
}
