//! `pipeline-healer analyze`: the healing report engineers use to find what to fix so healing
//! is needed less. Records come from BigQuery (ours or the original's rows) or from the
//! cluster's HealingEvents; the same events give the same report from either.

pub mod pyrepr;
pub mod record;
pub mod render;
pub mod report;
pub mod source;
pub mod window;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, KubeResultExt};
use crate::sink::bigquery::BigQueryExport;
use window::Window;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceKind {
    Bigquery,
    Cluster,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Text,
    Json,
}

pub enum Source {
    BigQuery(BigQueryExport),
    /// HealingEvents of one namespace, or of all.
    Cluster {
        namespace: Option<String>,
    },
}

pub struct Request {
    pub window: Window,
    pub healing_type: Option<String>,
    pub source: Source,
    pub output: OutputFormat,
    /// Also write the records as CSV here.
    pub export: Option<PathBuf>,
}

/// Fetches the records, writes the CSV export if asked, and returns the report to print.
pub async fn run(request: &Request) -> Result<String, Error> {
    let (label, what) = match &request.source {
        Source::BigQuery(_) => ("bigquery", "querying BigQuery"),
        Source::Cluster { .. } => ("cluster", "listing HealingEvents"),
    };
    let progress = Progress::start(what);
    let fetched = fetch(request, &progress).await;
    progress.finish();
    let (records, batches) = fetched?;

    let window = request.window;
    let healing_type = request.healing_type.as_deref();
    if let Some(path) = &request.export {
        let selection = report::select(&records, window, healing_type);
        let file = std::fs::File::create(path)
            .map_err(|e| Error::Io(format!("creating {}", path.display()), e))?;
        render::csv(&selection.records, std::io::BufWriter::new(file)).map_err(|e| {
            Error::Io(
                format!("writing {}", path.display()),
                std::io::Error::other(e),
            )
        })?;
    }
    let report = report::report(&records, batches.as_deref(), window, healing_type);
    Ok(match request.output {
        OutputFormat::Text => render::text(&report, label),
        OutputFormat::Json => render::json(&report, label).map_err(|source| Error::Serialize {
            what: "the report",
            source,
        })?,
    })
}

/// The healing records, and the finished batches (None: no batch outcomes to read).
type Fetched = (Vec<record::Record>, Option<Vec<record::BatchRecord>>);

async fn fetch(request: &Request, progress: &Progress) -> Result<Fetched, Error> {
    match &request.source {
        Source::BigQuery(export) => {
            let client = crate::gcp::bigquery_client(export.emulator_host.as_deref())
                .await
                .map_err(|e| Error::bigquery("connecting to BigQuery", e))?;
            let records = source::from_bigquery(
                &client,
                &export.table,
                request.window,
                request.healing_type.as_deref(),
                |n| progress.count(n),
            )
            .await?;
            let batches = match &export.outcomes {
                Some(table) => {
                    source::outcomes_from_bigquery(&client, table, request.window).await?
                }
                None => None,
            };
            Ok((records, batches))
        }
        Source::Cluster { namespace } => {
            let client = kube::Client::try_default()
                .await
                .at("connecting to the cluster")?;
            let records =
                source::from_cluster(client.clone(), namespace.as_deref(), |n| progress.count(n))
                    .await?;
            let batches = source::batches_from_cluster(client, namespace.as_deref()).await?;
            Ok((records, Some(batches)))
        }
    }
}

/// A spinner with the rows read so far, on stderr when it is a terminal; nothing otherwise.
struct Progress {
    rows: Arc<AtomicUsize>,
    spinner: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(what: &'static str) -> Self {
        let rows = Arc::new(AtomicUsize::new(0));
        let spinner = std::io::stderr().is_terminal().then(|| {
            let rows = rows.clone();
            tokio::spawn(async move {
                let started = Instant::now();
                for frame in ["|", "/", "-", "\\"].iter().cycle() {
                    eprint!(
                        "\r{frame} {what}: {} records, {:.1} s",
                        rows.load(Ordering::Relaxed),
                        started.elapsed().as_secs_f64()
                    );
                    tokio::time::sleep(Duration::from_millis(120)).await;
                }
            })
        });
        Self { rows, spinner }
    }

    fn count(&self, n: usize) {
        self.rows.store(n, Ordering::Relaxed);
    }

    fn finish(self) {
        if let Some(spinner) = self.spinner {
            spinner.abort();
            // Clear the spinner's line.
            eprint!("\r\x1b[2K");
        }
    }
}
