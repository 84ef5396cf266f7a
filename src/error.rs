//! The crate's error type. Every error names the step it happened in ("recording the heal's
//! intent", "counting rows of nba_raw.x") and knows its [`Category`]: reconcilers requeue the
//! transient categories with backoff and leave the permanent ones waiting for a change (shown
//! in a condition), and the category is the `category` label of the error metric.

use std::time::Duration;

/// Everything that can go wrong, by what was being talked to.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{step}: kubernetes API: {source}")]
    Kube {
        step: &'static str,
        #[source]
        source: kube::Error,
    },

    #[error("{step}: firestore: {source}")]
    Firestore {
        step: &'static str,
        #[source]
        source: Box<firestore::errors::FirestoreError>,
    },

    #[error("{step}: bigquery: {source}")]
    BigQuery {
        step: String,
        #[source]
        source: Box<gcp_bigquery_client::error::BQError>,
    },

    /// An HTTP request that got no answer (`target` is the URL as it may be shown: no
    /// credentials or query).
    #[error("{step}: {target}: {source}")]
    Http {
        step: &'static str,
        target: String,
        #[source]
        source: reqwest::Error,
    },

    /// An HTTP request answered with a status other than success.
    #[error("{step}: {target} answered {status}")]
    HttpStatus {
        step: &'static str,
        target: String,
        status: reqwest::StatusCode,
    },

    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),

    #[error("rendering {what}: {source}")]
    Serialize {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },

    #[error("rendering YAML: {0}")]
    SerializeYaml(#[source] serde_yaml::Error),

    /// Input that cannot be used as it is: an object, a document, a flag or a query answer.
    #[error("invalid {what}: {message}")]
    Invalid { what: String, message: String },

    /// The object needs something the operator did not configure (a flag, a project).
    #[error("{0}")]
    Unconfigured(String),

    #[error("the {0} cache has not synced yet")]
    NotSynced(&'static str),

    #[error("{0}: no answer within {1:?}")]
    Timeout(&'static str, Duration),
}

/// What kind of failure an [`Error`] is, and so whether retrying can help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Category {
    /// The object changed since it was read (a 409): the newer version decides.
    Conflict,
    /// The server asked for less load (a 429).
    Throttled,
    /// The server failed or could not be reached (a 5xx, a refused connection, a reset).
    Unavailable,
    /// No answer within the call's bound.
    Timeout,
    /// A cache the decision reads is still filling.
    NotSynced,
    /// The server refused the request for good (a 4xx other than 409 and 429: forbidden,
    /// not found, invalid): it will refuse it again until something is changed.
    Rejected,
    /// The input cannot be used; the object must change.
    Invalid,
    /// The operator's configuration lacks what the object needs.
    Unconfigured,
    /// A bug or an environment fault on this side (a file, serialisation).
    Internal,
}

impl Category {
    /// The metric label and log field.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Conflict => "conflict",
            Category::Throttled => "throttled",
            Category::Unavailable => "unavailable",
            Category::Timeout => "timeout",
            Category::NotSynced => "not_synced",
            Category::Rejected => "rejected",
            Category::Invalid => "invalid",
            Category::Unconfigured => "unconfigured",
            Category::Internal => "internal",
        }
    }

    /// Whether the same call may succeed later without anything being changed by a person.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            Category::Conflict
                | Category::Throttled
                | Category::Unavailable
                | Category::Timeout
                | Category::NotSynced
        )
    }

    fn of_http_status(code: u16) -> Self {
        match code {
            409 => Category::Conflict,
            408 => Category::Timeout,
            429 => Category::Throttled,
            c if c >= 500 => Category::Unavailable,
            _ => Category::Rejected,
        }
    }
}

impl Error {
    pub fn firestore(step: &'static str, e: firestore::errors::FirestoreError) -> Self {
        Error::Firestore {
            step,
            source: Box::new(e),
        }
    }

    pub fn bigquery(step: impl Into<String>, e: gcp_bigquery_client::error::BQError) -> Self {
        Error::BigQuery {
            step: step.into(),
            source: Box::new(e),
        }
    }

    pub fn category(&self) -> Category {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(status) => Category::of_http_status(status.code),
                kube::Error::SerdeError(_) => Category::Invalid,
                _ => Category::Unavailable,
            },
            Error::Firestore { source, .. } => match **source {
                firestore::errors::FirestoreError::InvalidParametersError(_) => Category::Invalid,
                _ => Category::Unavailable,
            },
            Error::BigQuery { .. } => Category::Unavailable,
            Error::Http { source, .. } if source.is_timeout() => Category::Timeout,
            Error::Http { .. } => Category::Unavailable,
            Error::HttpStatus { status, .. } => Category::of_http_status(status.as_u16()),
            Error::Timeout(..) => Category::Timeout,
            Error::NotSynced(_) => Category::NotSynced,
            Error::Invalid { .. } => Category::Invalid,
            Error::Unconfigured(_) => Category::Unconfigured,
            Error::Io(..) | Error::Serialize { .. } | Error::SerializeYaml(_) => Category::Internal,
        }
    }

    /// Whether the same call may succeed later without anything being changed by a person.
    pub fn is_transient(&self) -> bool {
        self.category().is_transient()
    }

    /// Whether the Kubernetes object the call named does not exist (a 404).
    pub fn is_gone(&self) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(status), .. } if status.code == 404)
    }

    /// Whether the API server refused the write as invalid (422) for the reason `rule`
    /// names: a CRD validation rule's message, such as an outcome being final.
    pub fn is_refused_by(&self, rule: &str) -> bool {
        matches!(self, Error::Kube { source: kube::Error::Api(status), .. }
            if status.code == 422 && status.message.contains(rule))
    }
}

/// Names the step of a Kubernetes call, and the answers that are outcomes rather than
/// failures. The one place a 409 or a 404 is read.
pub trait KubeResultExt<T> {
    /// The call's error, named by `step`.
    fn at(self, step: &'static str) -> Result<T, Error>;

    /// None when the API server answered 409: a create found the object existing already, or
    /// a write conditional on a resourceVersion found the object changed since it was read.
    fn unless_conflict(self, step: &'static str) -> Result<Option<T>, Error>;

    /// None when the object is gone: a 404, or for a delete conditional on a uid a 409 (the
    /// name now belongs to a new object, and the one decided on is gone).
    fn unless_gone(self, step: &'static str) -> Result<Option<T>, Error>;
}

impl<T> KubeResultExt<T> for Result<T, kube::Error> {
    fn at(self, step: &'static str) -> Result<T, Error> {
        self.map_err(|source| Error::Kube { step, source })
    }

    fn unless_conflict(self, step: &'static str) -> Result<Option<T>, Error> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(source) => Err(Error::Kube { step, source }),
        }
    }

    fn unless_gone(self, step: &'static str) -> Result<Option<T>, Error> {
        match self {
            Ok(value) => Ok(Some(value)),
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(None),
            Err(source) => Err(Error::Kube { step, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure("refused", "Reason")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn an_api_answer_has_the_category_of_its_code_and_the_step_in_its_message() {
        let cases = [
            (409, Category::Conflict, true),
            (429, Category::Throttled, true),
            (500, Category::Unavailable, true),
            (503, Category::Unavailable, true),
            (403, Category::Rejected, false),
            (404, Category::Rejected, false),
            (422, Category::Rejected, false),
        ];
        for (code, category, transient) in cases {
            let error = Err::<(), _>(api_error(code))
                .at("writing the status")
                .unwrap_err();
            assert_eq!(error.category(), category, "{code}");
            assert_eq!(error.is_transient(), transient, "{code}");
            assert!(
                error.to_string().starts_with("writing the status: "),
                "{error}"
            );
        }
        assert!(!Error::Unconfigured("no project".into()).is_transient());
        assert!(Error::Timeout("x", Duration::from_secs(1)).is_transient());
        assert_eq!(Category::NotSynced.as_str(), "not_synced");
    }

    #[test]
    fn conflict_and_gone_are_answers_and_everything_else_stays_an_error() {
        let conflict = Err::<(), _>(api_error(409)).unless_conflict("creating");
        assert!(matches!(conflict, Ok(None)));
        let created = Ok::<_, kube::Error>(1).unless_conflict("creating");
        assert!(matches!(created, Ok(Some(1))));
        let forbidden = Err::<(), _>(api_error(403)).unless_conflict("creating");
        assert_eq!(forbidden.unwrap_err().category(), Category::Rejected);

        for code in [404, 409] {
            let gone = Err::<(), _>(api_error(code)).unless_gone("deleting");
            assert!(matches!(gone, Ok(None)), "{code}");
        }
        let unavailable = Err::<(), _>(api_error(503)).unless_gone("deleting");
        assert!(unavailable.unwrap_err().is_transient());
    }
}
