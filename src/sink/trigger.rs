//! Re-running a processor over HTTP: POST `{processor, date, correlation_id}` to its URL,
//! with the correlation id in a header and, when an audience is set, a Google ID token from
//! the metadata server as Bearer (as the original called its Cloud Run services). No redirect
//! is followed, and no error shows the URL's query string.

use serde_json::json;

use crate::Error;
use crate::decide::trust::AllowedRequest;

const TRIGGERING: &str = "triggering the processor";
const FETCHING_TOKEN: &str = "fetching an ID token";

const METADATA_IDENTITY: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity";

#[derive(Clone)]
pub struct HttpTriggers {
    client: reqwest::Client,
}

impl Default for HttpTriggers {
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .timeout(crate::timeouts::TRIGGER_REQUEST)
            // A request may carry an ID token: a redirect would hand it to a URL nobody
            // checked against the allowlist. A 3xx answer is a failed trigger.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self { client }
    }
}

impl HttpTriggers {
    /// Ok with the HTTP status of a 2xx answer; Err with what went wrong otherwise. The
    /// request was checked against the operator's allowlist ([`crate::decide::rerun`]).
    pub async fn trigger(
        &self,
        request: &AllowedRequest,
        processor: &str,
        date: &str,
        correlation_id: &str,
    ) -> Result<u16, Error> {
        let shown = super::shown_url(request.url.as_str());
        let mut post = self
            .client
            .post(request.url.clone())
            .header("X-Correlation-Id", correlation_id)
            .json(&json!({
                "processor": processor,
                "date": date,
                "correlation_id": correlation_id,
            }));
        if let Some(audience) = &request.audience {
            post = post.bearer_auth(self.id_token(audience).await?);
        }
        // reqwest's errors print the whole URL: it is dropped, and the shown form named.
        let response = post.send().await.map_err(|e| Error::Http {
            step: TRIGGERING,
            target: shown.clone(),
            source: e.without_url(),
        })?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(Error::HttpStatus {
                step: TRIGGERING,
                target: shown,
                status,
            })
        }
    }

    /// An ID token for `audience` from the GKE metadata server (Workload Identity).
    async fn id_token(&self, audience: &str) -> Result<String, Error> {
        let failed = |source: reqwest::Error| Error::Http {
            step: FETCHING_TOKEN,
            target: format!("for {audience}"),
            source: source.without_url(),
        };
        let response = self
            .client
            .get(METADATA_IDENTITY)
            .query(&[("audience", audience), ("format", "full")])
            .header("Metadata-Flavor", "Google")
            .timeout(crate::timeouts::METADATA_TOKEN)
            .send()
            .await
            .map_err(failed)?;
        if !response.status().is_success() {
            return Err(Error::HttpStatus {
                step: FETCHING_TOKEN,
                target: format!("the metadata server, for {audience},"),
                status: response.status(),
            });
        }
        response.text().await.map_err(failed)
    }
}
