use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use pipeline_healer::analyze::propose::PolicyFile;
use pipeline_healer::analyze::trend::Period;
use pipeline_healer::analyze::{OutputFormat, Propose, Request, Source, SourceKind, window};
use pipeline_healer::api::phase::PhaseRun;
use pipeline_healer::api::schema::PositiveDuration;
use pipeline_healer::controller;
use pipeline_healer::decide::trust::{Trust, UrlPrefix};
use pipeline_healer::error::KubeResultExt;
use pipeline_healer::runtime::leader::{LeaderElection, LeaseConfig};
use pipeline_healer::sink::bigquery::{BigQueryExport, TableRef};
use pipeline_healer::sink::consolidation::Consolidation;
use pipeline_healer::sink::slack::SlackConfig;
use pipeline_healer::source::firestore::MirrorConfig;
use pipeline_healer::telemetry::{LogFormat, Telemetry, init_logging, serve};
use std::sync::Arc;

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
    /// Report on healing: success rates, root causes, time to heal, recurring targets and
    /// recommendations, from BigQuery or the cluster's HealingEvents; with --propose, the
    /// policy changes and findings that would make healing needed less, replayed over the
    /// window; with --trend, --html, --plot and --slack, how it changes period over period.
    ///
    /// Exit codes: 0 report written, 1 the source could not be read or an output (a file,
    /// the Slack digest) could not be written, 2 bad arguments.
    Analyze(Box<AnalyzeArgs>),
    /// Create the PhaseRun `<name>-<date>` from a template (a PhaseRun spec without its
    /// date), the date counted from today in --time-zone: the chart's daily CronJob runs
    /// this. An existing PhaseRun of that name is left as it is (exit 0).
    CreatePhaserun(CreatePhaseRunArgs),
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
    /// Slack incoming webhook for yellow and red pattern alerts and resolutions (and
    /// critical ones when --slack-webhook-url-error is unset). Unset: alerts are Kubernetes
    /// Events and status only.
    #[arg(long, env = "SLACK_WEBHOOK_URL", hide_env_values = true)]
    slack_webhook_url: Option<String>,
    /// Slack incoming webhook for critical pattern alerts (the error channel).
    #[arg(long, env = "SLACK_WEBHOOK_URL_ERROR", hide_env_values = true)]
    slack_webhook_url_error: Option<String>,
    /// Address of the /metrics (Prometheus), /healthz and /readyz endpoints.
    #[arg(
        long,
        env = "PIPELINE_HEALER_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: std::net::SocketAddr,
    /// Act only while holding a Lease, so that of several replicas exactly one acts.
    #[arg(long, env = "PIPELINE_HEALER_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (the chart sets its release namespace).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    leader_election_namespace: String,
    /// Name of the leader-election Lease.
    #[arg(
        long,
        env = "PIPELINE_HEALER_LEADER_ELECTION_LEASE",
        default_value = "pipeline-healer"
    )]
    leader_election_lease: String,
    /// How long a leader's lease lasts without renewal: the longest a failover waits.
    #[arg(long, env = "PIPELINE_HEALER_LEASE_DURATION", default_value = "15s")]
    lease_duration: PositiveDuration,
    /// A heal whose HealingEvent has had no outcome this long lost its actor (a crash): the
    /// heal is taken over while the batch still calls for it; at twice this, a record still
    /// open is settled by what the batch shows.
    #[arg(
        long,
        env = "PIPELINE_HEALER_ABANDONED_HEAL_AFTER",
        default_value = "30s"
    )]
    abandoned_heal_after: PositiveDuration,
    /// A deleted HealingEvent (by hand, or its namespace deleted) is exported first; one
    /// that has not reached every sink after this long is let go anyway, with a Warning
    /// Event and its whole record in the log, so a namespace's deletion does not hang on a
    /// sink that is gone (it does wait for a controller that watches the namespace).
    #[arg(
        long,
        env = "PIPELINE_HEALER_EXPORT_FINALIZER_TIMEOUT",
        default_value = "10m"
    )]
    export_finalizer_timeout: PositiveDuration,
    /// After SIGTERM, the longest the controller takes to stop (reconciles in flight finish,
    /// the lease is released); past it the process exits anyway, whatever it waits on (a
    /// gone API server). Keep it under the pod's termination grace period (the chart's 30 s).
    #[arg(long, env = "PIPELINE_HEALER_SHUTDOWN_TIMEOUT", default_value = "10s")]
    shutdown_timeout: PositiveDuration,
    /// Google Cloud project whose BigQuery holds the PhaseRun tables (`dataset.table` names
    /// belong to it); default: --bigquery-project, else --firestore-project.
    #[arg(long, env = "PIPELINE_HEALER_PHASE_PROJECT")]
    phase_project: Option<String>,
    /// Other projects whose tables PhaseRuns may name as `project.dataset.table`
    /// (repeatable, or comma-separated in the variable). A table in any other project is
    /// refused before it is queried.
    #[arg(
        long = "phase-allowed-project",
        env = "PIPELINE_HEALER_PHASE_ALLOWED_PROJECTS",
        value_delimiter = ','
    )]
    phase_allowed_projects: Vec<String>,
    /// URL prefix a PhaseRun's http trigger may POST to (repeatable, or comma-separated in
    /// the variable), e.g. https://phase4-abc-uw.a.run.app/. The URL, once {processor} and
    /// {date} are substituted, is parsed and normalised and must have the prefix's scheme,
    /// host and port and continue its path; a URL with a user name is refused. None given:
    /// EVERY http trigger is refused (recorded as a Failed HealingEvent, root cause
    /// trigger_not_allowed).
    #[arg(
        long = "trigger-allowed-url-prefix",
        env = "PIPELINE_HEALER_TRIGGER_ALLOWED_URL_PREFIXES",
        value_delimiter = ',',
        value_parser = UrlPrefix::parse
    )]
    trigger_allowed_url_prefixes: Vec<UrlPrefix>,
    /// Audience an http trigger may ask an ID token for besides its URL's own origin
    /// (repeatable, or comma-separated in the variable).
    #[arg(
        long = "trigger-allowed-audience",
        env = "PIPELINE_HEALER_TRIGGER_ALLOWED_AUDIENCES",
        value_delimiter = ','
    )]
    trigger_allowed_audiences: Vec<String>,
    /// Service account a PhaseRun's Job trigger may run as (repeatable, or comma-separated in
    /// the variable); an empty serviceAccountName (the namespace's default) is always
    /// allowed. Host namespaces, hostPath volumes, privileged containers, privilege
    /// escalation and added capabilities are always refused.
    #[arg(
        long = "job-allowed-service-account",
        env = "PIPELINE_HEALER_JOB_ALLOWED_SERVICE_ACCOUNTS",
        value_delimiter = ','
    )]
    job_allowed_service_accounts: Vec<String>,
    /// Secret a PhaseRun's Job trigger may mount or read into its environment (repeatable,
    /// or comma-separated in the variable). Any other Secret reference is refused, as are
    /// volumes the node mounts (hostPath, nfs, csi, ...), hostPort and nodeName.
    #[arg(
        long = "job-allowed-secret",
        env = "PIPELINE_HEALER_JOB_ALLOWED_SECRETS",
        value_delimiter = ','
    )]
    job_allowed_secrets: Vec<String>,
    #[command(flatten)]
    bigquery: BigQueryArgs,
}

#[derive(Args)]
struct CreatePhaseRunArgs {
    /// YAML file with the PhaseRun spec, without `date`.
    #[arg(long, env = "PIPELINE_HEALER_PHASERUN_TEMPLATE")]
    template: PathBuf,
    /// Name prefix: the PhaseRun is `<name>-<date>`.
    #[arg(long, env = "PIPELINE_HEALER_PHASERUN_NAME")]
    name: String,
    /// Namespace to create it in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    namespace: String,
    /// Days from today: -1 is yesterday (the original checked yesterday's Phase 2).
    #[arg(
        long,
        env = "PIPELINE_HEALER_PHASERUN_DATE_OFFSET_DAYS",
        default_value_t = 0,
        allow_hyphen_values = true
    )]
    date_offset_days: i32,
    /// Time zone whose calendar "today" is in (the original's: America/New_York).
    #[arg(
        long,
        env = "PIPELINE_HEALER_PHASERUN_TIME_ZONE",
        default_value = "America/New_York"
    )]
    time_zone: String,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// Start of the window: "YYYY-MM-DD HH:MM" (UTC) or RFC 3339 (default: 24 h before --end).
    #[arg(long, env = "PIPELINE_HEALER_ANALYZE_START", conflicts_with = "since")]
    start: Option<String>,
    /// End of the window, exclusive: "YYYY-MM-DD HH:MM" (UTC) or RFC 3339 (default: now).
    #[arg(long, env = "PIPELINE_HEALER_ANALYZE_END")]
    end: Option<String>,
    /// The window as a span back from --end: 90m, 36h, 7d, 2w.
    #[arg(long, env = "PIPELINE_HEALER_ANALYZE_SINCE")]
    since: Option<String>,
    /// Only this healing type (batch_cleanup, phase_rerun, retry, ...).
    #[arg(long = "type", env = "PIPELINE_HEALER_ANALYZE_TYPE")]
    healing_type: Option<String>,
    /// Also write the events as CSV to this file.
    #[arg(long, env = "PIPELINE_HEALER_ANALYZE_EXPORT", value_name = "FILE.csv")]
    export: Option<PathBuf>,
    /// Where the events are read from.
    #[arg(
        long,
        env = "PIPELINE_HEALER_ANALYZE_SOURCE",
        value_enum,
        default_value = "bigquery"
    )]
    source: SourceKind,
    /// With --source cluster: one namespace's events (default: all namespaces).
    #[arg(long, env = "PIPELINE_HEALER_NAMESPACE")]
    namespace: Option<String>,
    /// Report format (csv: the --trend table).
    #[arg(
        long,
        env = "PIPELINE_HEALER_ANALYZE_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    output: OutputFormat,
    /// Propose HealingPolicy changes (and findings for what no policy fixes), each replayed
    /// over the window's recorded decisions.
    #[arg(long)]
    propose: bool,
    /// With --propose: how many heals a skip reason must be outstanding in, and how many
    /// failures a root cause needs, before a proposal rests on them.
    #[arg(long, default_value_t = pipeline_healer::analyze::propose::DEFAULT_MIN_OCCURRENCES, value_parser = clap::value_parser!(u32).range(1..), requires = "propose")]
    min_occurrences: u32,
    /// With --propose: write the proposed HealingPolicy manifest(s) here, ready to commit.
    #[arg(long, value_name = "FILE.yaml", requires = "propose")]
    propose_patch: Option<PathBuf>,
    /// The figures per period, with the change against the period before.
    #[arg(long, value_enum, value_name = "PERIOD")]
    trend: Option<Period>,
    /// Write one self-contained HTML page (report, proposals, trend plots; no network) here.
    #[arg(long, value_name = "FILE.html")]
    html: Option<PathBuf>,
    /// Write the trend plot alone as SVG here (by --trend's period, else days up to two
    /// weeks and weeks beyond).
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Post a digest (the window's figures, their change against the window before, the top
    /// proposals) to the Slack webhook in SLACK_WEBHOOK_URL (read from the environment only,
    /// so the secret is never on a command line); with --since 7d, the weekly digest.
    #[arg(long)]
    slack: bool,
    /// With --propose: your HealingPolicy manifest (from the GitOps repository); patches to
    /// its policy change this file and keep every other field.
    #[arg(long, value_name = "FILE.yaml", requires = "propose")]
    policy: Option<PathBuf>,
    #[command(flatten)]
    bigquery: BigQueryArgs,
}

/// The healing events table in BigQuery: where `run` exports and `analyze` reads.
#[derive(Args)]
struct BigQueryArgs {
    /// Google Cloud project of the healing events table. `run` without it exports no events
    /// to BigQuery; `analyze --source bigquery` needs it.
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
    /// BigQuery table of finished batches' outcomes, in the same dataset (schema:
    /// schemas/batch_outcomes.json); empty: not exported.
    #[arg(
        long,
        env = "PIPELINE_HEALER_BIGQUERY_OUTCOMES_TABLE",
        default_value = "batch_outcomes"
    )]
    bigquery_outcomes_table: String,
    /// host:port of a BigQuery emulator to use instead of BigQuery (tests, the demo).
    #[arg(long, env = "BIGQUERY_EMULATOR_HOST")]
    bigquery_emulator_host: Option<String>,
}

impl BigQueryArgs {
    /// The table as a BigQuery query names it (the alerts' investigation query).
    fn query_name(&self) -> String {
        let dataset_table = format!("{}.{}", self.bigquery_dataset, self.bigquery_table);
        match &self.bigquery_project {
            Some(project) => format!("{project}.{dataset_table}"),
            None => dataset_table,
        }
    }

    /// The export target, when a project is given.
    fn export(self) -> Option<BigQueryExport> {
        let Self {
            bigquery_project,
            bigquery_dataset,
            bigquery_table,
            bigquery_outcomes_table,
            bigquery_emulator_host,
        } = self;
        bigquery_project.map(|project| {
            let table_named = |table: String| TableRef {
                project: project.clone(),
                dataset: bigquery_dataset.clone(),
                table,
            };
            BigQueryExport {
                outcomes: (!bigquery_outcomes_table.is_empty())
                    .then(|| table_named(bigquery_outcomes_table)),
                table: table_named(bigquery_table),
                emulator_host: bigquery_emulator_host,
            }
        })
    }
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
                slack_webhook_url,
                slack_webhook_url_error,
                metrics_addr,
                leader_elect,
                leader_election_namespace,
                leader_election_lease,
                lease_duration,
                abandoned_heal_after,
                export_finalizer_timeout,
                shutdown_timeout,
                phase_project,
                phase_allowed_projects,
                trigger_allowed_url_prefixes,
                trigger_allowed_audiences,
                job_allowed_service_accounts,
                job_allowed_secrets,
                bigquery,
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
            let phase_bigquery = phase_project
                .or_else(|| bigquery.bigquery_project.clone())
                .or_else(|| firestore_project.clone())
                .map(|project| (project, bigquery.bigquery_emulator_host.clone()));
            let trust = Trust {
                url_prefixes: trigger_allowed_url_prefixes,
                audiences: trigger_allowed_audiences,
                job_service_accounts: job_allowed_service_accounts,
                job_secrets: job_allowed_secrets,
                phase_project: phase_bigquery.as_ref().map(|(project, _)| project.clone()),
                allowed_projects: phase_allowed_projects,
            };
            if trust.url_prefixes.is_empty() {
                tracing::info!(
                    "no --trigger-allowed-url-prefix: every http trigger of a PhaseRun is refused"
                );
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
            let election = leader_elect.then(|| LeaseConfig {
                namespace: leader_election_namespace,
                name: leader_election_lease,
                identity: instance
                    .clone()
                    .unwrap_or_else(|| format!("pipeline-healer-{}", std::process::id())),
                duration: lease_duration.as_std(),
            });
            let config = controller::Config {
                namespace,
                instance,
                consolidation: consolidation_url.map(Consolidation::new),
                events_collection: Some(events_collection),
                slack: SlackConfig {
                    warning_webhook: slack_webhook_url,
                    error_webhook: slack_webhook_url_error,
                    events_table: bigquery.query_name(),
                },
                phase_bigquery,
                trust,
                bigquery: bigquery.export(),
                abandoned_heal_after: abandoned_heal_after.as_std(),
                export_finalizer_timeout: export_finalizer_timeout.as_std(),
            };
            run(
                config,
                mirror,
                metrics_addr,
                election,
                shutdown_timeout.as_std(),
            )
        }
        Command::Analyze(args) => analyze(*args),
        Command::CreatePhaserun(args) => create_phase_run(args),
        Command::Crds { dir, check } => crds(&dir, check),
    }
}

/// Runs `work` with a Kubernetes client (in-cluster config or KUBECONFIG, as kubectl) on a
/// fresh async runtime; exits 1 when either cannot be had.
fn with_kubernetes<F, Fut>(work: F) -> ExitCode
where
    F: FnOnce(kube::Client) -> Fut,
    Fut: Future<Output = ExitCode>,
{
    pipeline_healer::gcp::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match kubernetes_client().await {
            Ok(client) => work(client).await,
            Err(error) => {
                tracing::error!(%error, "cannot reach Kubernetes (in-cluster config or KUBECONFIG)");
                ExitCode::FAILURE
            }
        }
    })
}

/// A client configured as kube does it (in-cluster, or KUBECONFIG), naming this program in its
/// user agent: the API server attributes the fields of a request without a field manager of
/// its own (a create, a merge patch) to the user agent's product, else to "unknown".
async fn kubernetes_client() -> Result<kube::Client, pipeline_healer::Error> {
    use http::{HeaderValue, header::USER_AGENT};
    let mut config = kube::Config::infer().await.map_err(|e| {
        pipeline_healer::Error::Unconfigured(format!("no Kubernetes configuration: {e}"))
    })?;
    config.read_timeout = Some(pipeline_healer::timeouts::KUBE_READ);
    let agent = concat!("pipeline-healer/", env!("CARGO_PKG_VERSION"));
    config
        .headers
        .push((USER_AGENT, HeaderValue::from_static(agent)));
    kube::Client::try_from(config).at("building the Kubernetes client")
}

fn run(
    config: controller::Config,
    mirror: Option<(String, MirrorConfig)>,
    metrics_addr: std::net::SocketAddr,
    election: Option<LeaseConfig>,
    shutdown_timeout: std::time::Duration,
) -> ExitCode {
    with_kubernetes(|client| async move {
        let firestore = match mirror {
            None => None,
            Some((project, mirror)) => match firestore::FirestoreDb::with_options(
                firestore::FirestoreDbOptions::new(project),
            )
            .await
            {
                Ok(db) => Some(controller::FirestoreSource { db, mirror }),
                Err(e) => {
                    tracing::error!(error = %e, "cannot reach Firestore (credentials, project, or FIRESTORE_EMULATOR_HOST)");
                    return ExitCode::FAILURE;
                }
            },
        };
        let listener = match tokio::net::TcpListener::bind(metrics_addr).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, %metrics_addr, "cannot bind the metrics port");
                return ExitCode::FAILURE;
            }
        };
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            stop_tx.send_replace(true);
            // The bound holds on a thread of its own, so no stuck task or busy runtime can
            // hold it back.
            std::thread::spawn(move || {
                std::thread::sleep(shutdown_timeout);
                tracing::error!(
                    ?shutdown_timeout,
                    "shutdown did not finish within --shutdown-timeout; exiting now"
                );
                std::process::exit(EXIT_SHUTDOWN_TIMED_OUT.into());
            });
        });
        // Resolves once `rx` says stop; a channel whose sender is gone (no election, so no
        // lease to lose) never does.
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            if rx.wait_for(|stop| *stop).await.is_err() {
                std::future::pending::<()>().await;
            }
        };

        // The health server runs for the whole process: a standby answers probes too.
        let telemetry = Telemetry::default();
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
        }
        let server = tokio::spawn(serve(
            listener,
            telemetry.metrics.clone(),
            telemetry.ready.subscribe(),
            stopped(stop_rx.clone()),
        ));

        let election = election.map(|c| Arc::new(LeaderElection::new(client.clone(), c)));
        // Leads, stops acting when the lease is lost (the API server gone past the lease, or
        // another replica holding it), and stands by in this process to compete again, so a
        // returning API server is answered within a lease instead of after the kubelet's
        // crash-loop backoff. Each term starts afresh: every cache is listed again before
        // anything is decided, so nothing acts on what it saw before the loss.
        let code = loop {
            if let Some(election) = &election {
                // A standby is healthy and ready: it only waits.
                telemetry.ready.send_replace(true);
                tokio::select! {
                    () = election.acquire() => {}
                    () = stopped(stop_rx.clone()) => break ExitCode::SUCCESS,
                }
                telemetry.ready.send_replace(false);
            }
            // Renewing runs on its own task; losing the lease stops the controllers.
            let (lost_tx, lost_rx) = tokio::sync::watch::channel(false);
            let holding = election.clone().map(|election| {
                tokio::spawn(async move {
                    election.hold().await;
                    lost_tx.send_replace(true);
                })
            });
            let stop = {
                let (stop_rx, lost_rx) = (stop_rx.clone(), lost_rx.clone());
                async move {
                    tokio::select! {
                        () = stopped(stop_rx) => {}
                        () = stopped(lost_rx) => {}
                    }
                }
            };
            let result = controller::run(
                client.clone(),
                config.clone(),
                firestore.clone(),
                telemetry.clone(),
                stop,
            )
            .await;
            if let Some(holding) = holding {
                holding.abort();
            }
            match result {
                Ok(()) if *lost_rx.borrow() && !*stop_rx.borrow() => {
                    tracing::warn!(
                        "lost the lease: stopped acting; standing by to lead again with fresh caches"
                    );
                }
                Ok(()) => {
                    if let Some(election) = &election {
                        election.release().await;
                    }
                    break ExitCode::SUCCESS;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the controller stopped");
                    break ExitCode::FAILURE;
                }
            }
        };
        server.abort();
        code
    })
}

fn create_phase_run(args: CreatePhaseRunArgs) -> ExitCode {
    init_logging(LogFormat::Text);
    let bad = |message: String| {
        tracing::error!("{message}");
        ExitCode::from(EXIT_BAD_ARGUMENTS)
    };
    let today = match jiff::Timestamp::now().in_tz(&args.time_zone) {
        Ok(now) => now.date(),
        Err(e) => return bad(format!("--time-zone {}: {e}", args.time_zone)),
    };
    let date = match today.checked_add(jiff::Span::new().days(args.date_offset_days)) {
        Ok(d) => d,
        Err(e) => return bad(format!("--date-offset-days {}: {e}", args.date_offset_days)),
    };
    let template = match std::fs::read_to_string(&args.template) {
        Ok(t) => t,
        Err(e) => return bad(format!("reading {}: {e}", args.template.display())),
    };
    let run = match PhaseRun::from_template(&args.name, &template, date) {
        Ok(r) => r,
        Err(e) => return bad(e.to_string()),
    };
    with_kubernetes(|client| async move {
        let api: kube::Api<PhaseRun> = kube::Api::namespaced(client, &args.namespace);
        let name = run.metadata.name.clone().unwrap_or_default();
        let created = api
            .create(&kube::api::PostParams::default(), &run)
            .await
            .unless_conflict("creating the PhaseRun");
        match created {
            Ok(Some(_)) => {
                tracing::info!(namespace = %args.namespace, %name, "PhaseRun created");
                ExitCode::SUCCESS
            }
            Ok(None) => {
                tracing::info!(namespace = %args.namespace, %name, "PhaseRun exists already");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(namespace = %args.namespace, %name, error = %e, "creating the PhaseRun failed");
                ExitCode::FAILURE
            }
        }
    })
}

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

/// Bad arguments exit 2, as clap's own errors do.
const EXIT_BAD_ARGUMENTS: u8 = 2;

/// A shutdown cut short by --shutdown-timeout.
const EXIT_SHUTDOWN_TIMED_OUT: u8 = 3;

fn analyze(args: AnalyzeArgs) -> ExitCode {
    let window = match window::window(
        args.start.as_deref(),
        args.end.as_deref(),
        args.since.as_deref(),
        jiff::Timestamp::now(),
    ) {
        Ok(w) => w,
        Err(message) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_BAD_ARGUMENTS);
        }
    };
    let source = match args.source {
        SourceKind::Cluster => Source::Cluster {
            namespace: args.namespace,
        },
        SourceKind::Bigquery => match args.bigquery.export() {
            Some(export) => Source::BigQuery(export),
            None => {
                eprintln!(
                    "error: --source bigquery needs --bigquery-project (or PIPELINE_HEALER_BIGQUERY_PROJECT)"
                );
                return ExitCode::from(EXIT_BAD_ARGUMENTS);
            }
        },
    };
    let slack = match (args.slack, std::env::var("SLACK_WEBHOOK_URL")) {
        (false, _) => None,
        (true, Ok(url)) if !url.is_empty() => Some(url),
        (true, _) => {
            eprintln!("error: --slack posts to SLACK_WEBHOOK_URL, which is not set");
            return ExitCode::from(EXIT_BAD_ARGUMENTS);
        }
    };
    let policy = match args.policy.as_deref().map(|path| {
        std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| PolicyFile::parse(&text))
            .map_err(|e| format!("--policy {}: {e}", path.display()))
    }) {
        None => None,
        Some(Ok(file)) => Some(file),
        Some(Err(message)) => {
            eprintln!("error: {message}");
            return ExitCode::from(EXIT_BAD_ARGUMENTS);
        }
    };
    if args.output == OutputFormat::Csv && args.trend.is_none() {
        eprintln!("error: --output csv prints the trend: add --trend day|week");
        return ExitCode::from(EXIT_BAD_ARGUMENTS);
    }
    let request = Request {
        window,
        healing_type: args.healing_type,
        source,
        output: args.output,
        export: args.export,
        propose: args.propose.then_some(Propose {
            min_occurrences: args.min_occurrences as usize,
            patch: args.propose_patch,
            policy,
        }),
        trend: args.trend,
        html: args.html,
        plot: args.plot,
        slack,
    };
    pipeline_healer::gcp::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(pipeline_healer::analyze::run(&request)) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        // What the arguments asked for cannot be done (a trend of too many periods).
        Err(e) if e.category() == pipeline_healer::error::Category::Invalid => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_BAD_ARGUMENTS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
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
