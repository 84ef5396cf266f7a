//! Re-running a processor over HTTP: POST `{processor, date, correlation_id}` to its URL,
//! with the correlation id in a header and, when an audience is set, a Google ID token from
//! the metadata server as Bearer (as the original called its Cloud Run services).

use std::time::Duration;

use serde_json::json;

use crate::api::phase::HttpTrigger;

const METADATA_IDENTITY: &str =
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/identity";

/// A processor run can take minutes; longer than this counts as a failed trigger.
const TRIGGER_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Clone)]
pub struct HttpTriggers {
    client: reqwest::Client,
}

impl Default for HttpTriggers {
    fn default() -> Self {
        let client = reqwest::Client::builder()
            .timeout(TRIGGER_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self { client }
    }
}

/// The URL with `{date}` and `{processor}` substituted (both URL-encoded).
pub fn url_for(template: &str, date: &str, processor: &str) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    template
        .replace("{date}", &encode(date))
        .replace("{processor}", &encode(processor))
}

impl HttpTriggers {
    /// Ok with the HTTP status of a 2xx answer; Err with what went wrong otherwise.
    pub async fn trigger(
        &self,
        trigger: &HttpTrigger,
        processor: &str,
        date: &str,
        correlation_id: &str,
    ) -> Result<u16, String> {
        let url = url_for(&trigger.url, date, processor);
        let mut request = self
            .client
            .post(&url)
            .header("X-Correlation-Id", correlation_id)
            .json(&json!({
                "processor": processor,
                "date": date,
                "correlation_id": correlation_id,
            }));
        if let Some(audience) = &trigger.audience {
            request = request.bearer_auth(self.id_token(audience).await?);
        }
        let response = request
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = response.status();
        if status.is_success() {
            Ok(status.as_u16())
        } else {
            Err(format!("POST {url} answered {status}"))
        }
    }

    /// An ID token for `audience` from the GKE metadata server (Workload Identity).
    async fn id_token(&self, audience: &str) -> Result<String, String> {
        let response = self
            .client
            .get(METADATA_IDENTITY)
            .query(&[("audience", audience), ("format", "full")])
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("fetching an ID token for {audience}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "fetching an ID token for {audience}: the metadata server answered {}",
                response.status()
            ));
        }
        response
            .text()
            .await
            .map_err(|e| format!("reading the ID token for {audience}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_substituted_and_encoded() {
        assert_eq!(
            url_for(
                "https://s.run.app/{processor}?game_date={date}",
                "2026-11-24",
                "nbac_schedule"
            ),
            "https://s.run.app/nbac_schedule?game_date=2026-11-24"
        );
        assert_eq!(
            url_for("http://x/{processor}", "d", "a b&c"),
            "http://x/a%20b%26c"
        );
    }
}
