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
pub async fn bigquery_client(emulator_host: Option<&str>) -> Result<BigQueryClient, BQError> {
    match emulator_host {
        Some(host) => {
            ClientBuilder::new()
                .with_v2_base_url(format!("http://{host}/bigquery/v2"))
                .build_from_authenticator(Arc::new(EmulatorToken))
                .await
        }
        None => BigQueryClient::from_application_default_credentials().await,
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
