//! Logging, metrics and the health endpoints. Every log line is structured; `json` is for
//! log collectors, `text` for people.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. The level comes from RUST_LOG (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
    }
}

/// The controller's Prometheus metrics. Cheap to share: every family is reference counted.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    healings: Family<HealingLabels, Counter>,
    heal_latency: Family<TypeLabels, Histogram>,
    time_to_heal: Family<TypeLabels, Histogram>,
    alert_level: Family<NamespaceTypeLabels, Gauge>,
    circuit_state: Family<NamespaceTypeLabels, Gauge>,
    slack_messages: Family<SlackLabels, Counter>,
    export_backlog: Family<NamespaceSinkLabels, Gauge>,
    self_recoveries: Family<NamespaceLabels, Counter>,
}

/// What the controller reports to the process's health server: its metrics, and whether
/// it is ready (its caches are filled, or it is a standby waiting to lead).
#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub ready: tokio::sync::watch::Sender<bool>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Self {
            metrics: Arc::default(),
            ready: tokio::sync::watch::channel(false).0,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    category: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HealingLabels {
    healing_type: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TypeLabels {
    healing_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceTypeLabels {
    namespace: String,
    healing_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceSinkLabels {
    namespace: String,
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SlackLabels {
    channel: String,
    result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("pipeline_healer");
        let metrics = Self {
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            healings: Family::default(),
            // From 50 ms to about 14 min: a heal runs within seconds of its threshold, the
            // original's took up to 15 minutes.
            heal_latency: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.05, 2.0, 15))
            }),
            // From 1 s to about 18 h: onset to verified runs from a stall's last progress.
            time_to_heal: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 17))
            }),
            alert_level: Family::default(),
            circuit_state: Family::default(),
            slack_messages: Family::default(),
            export_backlog: Family::default(),
            self_recoveries: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "Reconciles started, by kind",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by kind and error category (conflict, throttled, unavailable, timeout and not_synced are retried with backoff; rejected, invalid, unconfigured and internal wait for a change)",
            metrics.reconcile_errors.clone(),
        );
        registry.register(
            "healings",
            "Healing actions finished by this controller, by type and result (the HealingEvent outcome)",
            metrics.healings.clone(),
        );
        registry.register(
            "heal_latency_seconds",
            "Seconds from the threshold instant to the heal's recorded outcome",
            metrics.heal_latency.clone(),
        );
        registry.register(
            "time_to_heal_seconds",
            "Seconds from a problem's onset (a batch's last progress, a phase's first observation of the missing rows) to its target seen healthy, by type",
            metrics.time_to_heal.clone(),
        );
        registry.register(
            "alert_level",
            "Pattern alert level per namespace and healing type (0 normal, 1 yellow, 2 red, 3 critical)",
            metrics.alert_level.clone(),
        );
        registry.register(
            "circuit_state",
            "Circuit breaker per namespace and healing type (0 closed, 1 open, 2 half-open)",
            metrics.circuit_state.clone(),
        );
        registry.register(
            "slack_messages",
            "Slack messages by channel and result (sent, failed after retries, dropped)",
            metrics.slack_messages.clone(),
        );
        registry.register(
            "export_backlog",
            "Finished healing events a sink does not have yet, per namespace and sink",
            metrics.export_backlog.clone(),
        );
        registry.register(
            "self_recoveries",
            "Batch pauses (no progress for the policy's watchAfter at or above the minimum completion) that ended without a heal, per namespace",
            metrics.self_recoveries.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, kind: &str) {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub fn reconcile_failed(&self, kind: &str, category: crate::error::Category) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels {
                kind: kind.into(),
                category: category.as_str().into(),
            })
            .inc();
    }

    /// Counts a finished action; a success observes its latency (threshold to outcome) and,
    /// when known, its time to heal (onset to verified).
    pub fn healed(
        &self,
        healing_type: &str,
        result: &str,
        latency_seconds: Option<f64>,
        time_to_heal_seconds: Option<f64>,
    ) {
        self.healings
            .get_or_create(&HealingLabels {
                healing_type: healing_type.into(),
                result: result.into(),
            })
            .inc();
        if let Some(seconds) = latency_seconds {
            self.heal_latency
                .get_or_create(&TypeLabels {
                    healing_type: healing_type.into(),
                })
                .observe(seconds);
        }
        if let Some(seconds) = time_to_heal_seconds {
            self.time_to_heal
                .get_or_create(&TypeLabels {
                    healing_type: healing_type.into(),
                })
                .observe(seconds);
        }
    }

    /// Sets the alert level and circuit gauges of one type (both as small integers).
    pub fn type_health(&self, namespace: &str, healing_type: &str, level: i64, circuit: i64) {
        let labels = NamespaceTypeLabels {
            namespace: namespace.into(),
            healing_type: healing_type.into(),
        };
        self.alert_level.get_or_create(&labels).set(level);
        self.circuit_state.get_or_create(&labels).set(circuit);
    }

    pub fn export_backlog(&self, namespace: &str, sink: &str, waiting: i64) {
        self.export_backlog
            .get_or_create(&NamespaceSinkLabels {
                namespace: namespace.into(),
                sink: sink.into(),
            })
            .set(waiting);
    }

    pub fn self_recovered(&self, namespace: &str) {
        self.self_recoveries
            .get_or_create(&NamespaceLabels {
                namespace: namespace.into(),
            })
            .inc();
    }

    pub fn slack_message(&self, channel: &str, result: &str) {
        self.slack_messages
            .get_or_create(&SlackLabels {
                channel: channel.into(),
                result: result.into(),
            })
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// Serves `/metrics`, `/healthz` (the process is up) and `/readyz` (`ready` is true: the
/// caches are filled) until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    ready: tokio::sync::watch::Receiver<bool>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{StatusCode, header};
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.render(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = *ready.borrow();
                async move {
                    if ready {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not yet filled")
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
