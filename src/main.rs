use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pipeline_healer::controller;
use pipeline_healer::sink::bigquery::{BigQueryExport, TableRef};
use pipeline_healer::sink::consolidation::Consolidation;
use pipeline_healer::source::firestore::MirrorConfig;
use pipeline_healer::telemetry::{LogFormat, init_logging};

/// A self-healing controller for batch prediction pipelines on Kubernetes.
#[derive(Parser)]
#[command(name = "pipeline-healer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller. Kubernetes access as kubectl has it: in-cluster, or KUBECONFIG.
    Run(Box<RunArgs>),
    /// Write the CustomResourceDefinitions as YAML, one file per CRD.
    Crds {
        /// Directory to write `<plural>.healing.pipeline.dev.yaml` into.
        #[arg(long, env = "PIPELINE_HEALER_CRDS_DIR", default_value = "crds")]
        dir: PathBuf,
        /// Write nothing; exit 1 if a file in the directory is missing or out of date.
        #[arg(long, env = "PIPELINE_HEALER_CRDS_CHECK")]
        check: bool,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Watch one namespace only (default: all namespaces).
    #[arg(long, env = "PIPELINE_HEALER_NAMESPACE")]
    namespace: Option<String>,
    /// Log format.
    #[arg(
        long,
        env = "PIPELINE_HEALER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// This replica's name, reported on Kubernetes Events (the chart sets the pod name).
    #[arg(long, env = "POD_NAME")]
    instance: Option<String>,
    /// Google Cloud project whose Firestore holds the batches; without it, Firestore
    /// batches are not mirrored. FIRESTORE_EMULATOR_HOST points it at the emulator.
    #[arg(long, env = "GOOGLE_CLOUD_PROJECT")]
    firestore_project: Option<String>,
    /// Firestore collection of the batch documents.
    #[arg(
        long,
        env = "PIPELINE_HEALER_BATCH_COLLECTION",
        default_value = "prediction_batches"
    )]
    batch_collection: String,
    /// POSTed after each auto-completion so staged predictions are consolidated; `{batch_id}`
    /// and `{game_date}` are substituted. Unset: no request.
    #[arg(long, env = "PIPELINE_HEALER_CONSOLIDATION_URL")]
    consolidation_url: Option<String>,
    /// Namespace of the mirrored PredictionBatch objects (default: --namespace, else `default`).
    #[arg(long, env = "PIPELINE_HEALER_MIRROR_NAMESPACE")]
    mirror_namespace: Option<String>,
    /// Firestore collection HealingEvents are exported to (document id = healing_id);
    /// needs --firestore-project.
    #[arg(
        long,
        env = "PIPELINE_HEALER_EVENTS_COLLECTION",
        default_value = "healing_events"
    )]
    events_collection: String,
    /// Google Cloud project of the BigQuery table HealingEvents are exported to; without
    /// it, events are not exported to BigQuery.
    #[arg(long, env = "PIPELINE_HEALER_BIGQUERY_PROJECT")]
    bigquery_project: Option<String>,
    /// BigQuery dataset of the events table.
    #[arg(
        long,
        env = "PIPELINE_HEALER_BIGQUERY_DATASET",
        default_value = "nba_orchestration"
    )]
    bigquery_dataset: String,
    /// BigQuery table of healing events (schema: schemas/healing_events.json).
    #[arg(
        long,
        env = "PIPELINE_HEALER_BIGQUERY_TABLE",
        default_value = "healing_events"
    )]
    bigquery_table: String,
    /// host:port of a BigQuery emulator to use instead of BigQuery (tests, the demo).
    #[arg(long, env = "BIGQUERY_EMULATOR_HOST")]
    bigquery_emulator_host: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let RunArgs {
                namespace,
                log_format,
                instance,
                firestore_project,
                batch_collection,
                mirror_namespace,
                consolidation_url,
                events_collection,
                bigquery_project,
                bigquery_dataset,
                bigquery_table,
                bigquery_emulator_host,
            } = *args;
            init_logging(log_format);
            if firestore_project.is_some() && batch_collection == events_collection {
                // The mirror would read every exported event as a malformed batch.
                tracing::error!(
                    collection = %batch_collection,
                    "--batch-collection and --events-collection must name different collections"
                );
                return ExitCode::from(2);
            }
            let mirror = firestore_project.map(|project| {
                let namespace = mirror_namespace
                    .or_else(|| namespace.clone())
                    .unwrap_or_else(|| "default".into());
                (
                    project,
                    MirrorConfig {
                        collection: batch_collection,
                        namespace,
                    },
                )
            });
            let config = controller::Config {
                namespace,
                instance,
                consolidation: consolidation_url.map(Consolidation::new),
                events_collection: Some(events_collection),
                bigquery: bigquery_project.map(|project| BigQueryExport {
                    table: TableRef {
                        project,
                        dataset: bigquery_dataset,
                        table: bigquery_table,
                    },
                    emulator_host: bigquery_emulator_host,
                }),
                ..Default::default()
            };
            run(config, mirror)
        }
        Command::Crds { dir, check } => crds(&dir, check),
    }
}

fn run(config: controller::Config, mirror: Option<(String, MirrorConfig)>) -> ExitCode {
    pipeline_healer::gcp::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let client = match kube::Client::try_default().await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot reach Kubernetes (in-cluster config or KUBECONFIG)");
                return ExitCode::FAILURE;
            }
        };
        let firestore = match mirror {
            None => None,
            Some((project, mirror)) => match firestore::FirestoreDb::with_options(firestore::FirestoreDbOptions::new(project)).await {
                Ok(db) => Some(controller::FirestoreSource { db, mirror }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot reach Firestore (credentials, project, or FIRESTORE_EMULATOR_HOST)");
                    return ExitCode::FAILURE;
                }
            },
        };
        match controller::run(client, config, firestore, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %e, "the controller stopped");
                ExitCode::FAILURE
            }
        }
    })
}

/// Resolves on SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM; stopping on Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

fn crds(dir: &std::path::Path, check: bool) -> ExitCode {
    let result = if check {
        pipeline_healer::crdgen::stale(dir).map(|stale| {
            for name in &stale {
                eprintln!(
                    "{}: out of date; run `pipeline-healer crds`",
                    dir.join(name).display()
                );
            }
            stale.is_empty()
        })
    } else {
        pipeline_healer::crdgen::write(dir).map(|written| {
            for name in written {
                println!("{}", dir.join(name).display());
            }
            true
        })
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
