//! After an auto-completion, ask the pipeline to consolidate the batch's staged predictions
//! into the main table: the original marked stalled batches complete and forgot this step.

use std::time::Duration;

use serde_json::json;

use super::{Retries, post_retried};
use crate::Error;
use crate::decide::naming::percent_encode;

const CONSOLIDATING: &str = "requesting consolidation";

/// Where to POST, as a template: `{batch_id}` and `{game_date}` are substituted.
#[derive(Clone, Debug)]
pub struct Consolidation {
    pub url_template: String,
    pub client: reqwest::Client,
}

/// Tries this often in all, backing off between tries; healing does not wait longer.
const ATTEMPTS: u32 = 3;
const FIRST_BACKOFF: Duration = Duration::from_millis(500);

impl Consolidation {
    pub fn new(url_template: String) -> Self {
        let client = reqwest::Client::builder()
            .timeout(crate::timeouts::CONSOLIDATION_REQUEST)
            .build()
            .unwrap_or_default();
        Self {
            url_template,
            client,
        }
    }

    /// POSTs `{batch_id, game_date, correlation_id, healing_id}`; Ok with the HTTP status, or
    /// the last error after the retries.
    pub async fn request(
        &self,
        batch_id: &str,
        game_date: Option<&str>,
        correlation_id: Option<&str>,
        healing_id: &str,
    ) -> Result<u16, Error> {
        let url = self
            .url_template
            .replace("{batch_id}", &percent_encode(batch_id))
            .replace(
                "{game_date}",
                &percent_encode(game_date.unwrap_or_default()),
            );
        let body = json!({
            "batch_id": batch_id,
            "game_date": game_date,
            "correlation_id": correlation_id,
            "healing_id": healing_id,
            "reason": "auto_completed",
        });
        let headers = [("X-Healing-Id", healing_id)];
        let retries = Retries {
            attempts: ATTEMPTS,
            first: FIRST_BACKOFF,
        };
        // Errors show the URL without its query string, which can carry a key.
        let status = post_retried(
            &self.client,
            &url,
            &headers,
            &body,
            retries,
            CONSOLIDATING,
            None,
        )
        .await?;
        Ok(status.as_u16())
    }
}

#[cfg(test)]
mod tests {
    use crate::decide::naming::percent_encode;

    #[test]
    fn ids_are_encoded_into_the_url() {
        assert_eq!(
            percent_encode("batch_2026-11-24_1795480001"),
            "batch_2026-11-24_1795480001"
        );
        assert_eq!(percent_encode("a b/c?d&e"), "a%20b%2Fc%3Fd%26e");
    }
}
