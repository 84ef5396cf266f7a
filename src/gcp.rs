//! Clients for Google Cloud services, with production auth (Application Default Credentials,
//! i.e. GKE Workload Identity) or, when an emulator host is given, the emulator's conventions.

use std::sync::Arc;

use gcp_bigquery_client::Client as BigQueryClient;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::query_parameter::QueryParameter;
use gcp_bigquery_client::model::query_parameter_type::QueryParameterType;
use gcp_bigquery_client::model::query_parameter_value::QueryParameterValue;

/// Installs the process-wide rustls crypto provider. kube and the Google clients enable both
/// of rustls' providers between them, and rustls then refuses to choose one by itself (the
/// first TLS connection panics). Call once at start-up; later calls do nothing.
pub fn install_crypto_provider() {
    // Err means one is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Sends a fixed token: the BigQuery emulator accepts any.
#[derive(Clone)]
struct EmulatorToken;

#[async_trait::async_trait]
impl Authenticator for EmulatorToken {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok("emulator".to_owned())
    }
}

/// A BigQuery client: against the emulator at `emulator_host` (host:port) when given,
/// else the real service with Application Default Credentials.
/// Every call is bounded by [`crate::timeouts::BIGQUERY_REQUEST`].
pub async fn bigquery_client(emulator_host: Option<&str>) -> Result<BigQueryClient, BQError> {
    bigquery_client_with_timeout(emulator_host, crate::timeouts::BIGQUERY_REQUEST).await
}

/// [`bigquery_client`] with its calls bounded by `timeout`.
pub async fn bigquery_client_with_timeout(
    emulator_host: Option<&str>,
    timeout: std::time::Duration,
) -> Result<BigQueryClient, BQError> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(crate::timeouts::BIGQUERY_CONNECT.min(timeout))
        .build()
        .map_err(BQError::RequestError)?;
    let mut builder = ClientBuilder::new();
    builder.with_client(http);
    match emulator_host {
        Some(host) => {
            builder
                .with_v2_base_url(format!("http://{host}/bigquery/v2"))
                .build_from_authenticator(Arc::new(EmulatorToken))
                .await
        }
        None => builder.build_from_application_default_credentials().await,
    }
}

/// A named scalar query parameter: values reach BigQuery only this way, never in the SQL.
pub fn query_parameter(name: &str, kind: &str, value: String) -> QueryParameter {
    QueryParameter {
        name: Some(name.into()),
        parameter_type: Some(QueryParameterType {
            r#type: kind.into(),
            array_type: None,
            struct_types: None,
        }),
        parameter_value: Some(QueryParameterValue {
            value: Some(value),
            array_values: None,
            struct_values: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BigQuery that accepts connections and never answers: a hung insert must end.
    #[tokio::test]
    async fn a_call_that_gets_no_answer_ends_at_the_timeout() {
        install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let host = listener.local_addr().unwrap().to_string();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let client =
            bigquery_client_with_timeout(Some(&host), std::time::Duration::from_millis(500))
                .await
                .unwrap();
        let started = std::time::Instant::now();
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client.dataset().list("p", Default::default()),
        )
        .await
        .expect("the call hung past its timeout");
        assert!(answer.is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        silent.abort();
    }
}
