//! `pipeline-healer analyze`: the healing report engineers use to find what to fix so healing
//! is needed less. Records come from BigQuery (ours or the original's rows) or from the
//! cluster's HealingEvents; the same events give the same report from either.

pub mod digest;
pub mod html;
pub mod plot;
pub mod propose;
pub mod pyrepr;
pub mod record;
pub mod render;
pub mod report;
pub mod source;
pub mod trend;
pub mod window;

use std::io::{IsTerminal, Write};
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
    /// The trend's table (with --trend).
    Csv,
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
    /// Propose policy changes and findings (`--propose`).
    pub propose: Option<Propose>,
    /// The figures per period (`--trend`).
    pub trend: Option<trend::Period>,
    /// Write the report as one self-contained HTML page here (`--html`).
    pub html: Option<PathBuf>,
    /// Write the trend plot alone as SVG here (`--plot`).
    pub plot: Option<PathBuf>,
    /// Post the digest to this Slack webhook (`--slack`; a secret, never shown).
    pub slack: Option<String>,
}

/// The period plots use when `--trend` is not given: days for up to two weeks, else weeks.
fn plot_period(window: Window) -> trend::Period {
    if window.end.duration_since(window.start) <= jiff::SignedDuration::from_hours(14 * 24) {
        trend::Period::Day
    } else {
        trend::Period::Week
    }
}

pub struct Propose {
    pub min_occurrences: usize,
    /// Write the proposals' HealingPolicy manifest here.
    pub patch: Option<PathBuf>,
    /// The person's own policy manifest, changed by the patch (`--policy`).
    pub policy: Option<propose::PolicyFile>,
}

/// Fetches the records, writes the CSV export if asked, and returns the report to print.
pub async fn run(request: &Request) -> Result<String, Error> {
    let (label, what) = match &request.source {
        Source::BigQuery(_) => ("bigquery", "querying BigQuery"),
        Source::Cluster { .. } => ("cluster", "listing HealingEvents"),
    };
    let window = request.window;
    let pictures = request.html.is_some() || request.plot.is_some();
    let period = request
        .trend
        .or_else(|| pictures.then(|| plot_period(window)));
    if let Some(period) = period {
        trend::check(window, period).map_err(|message| Error::Invalid {
            what: "--trend".into(),
            message,
        })?;
    }
    let progress = Progress::start(what);
    // The digest sets the window against the one before it: both are read.
    let previous = window.before();
    let fetch_window = match request.slack {
        Some(_) => Window {
            start: previous.start,
            end: window.end,
        },
        None => window,
    };
    let fetched = fetch(request, fetch_window, &progress).await;
    progress.finish();
    let (records, batches) = fetched?;

    let healing_type = request.healing_type.as_deref();
    let selection = report::select(&records, window, healing_type);
    if let Some(path) = &request.export {
        write_file(path, |file| {
            render::csv(&selection.records, file).map_err(std::io::Error::other)
        })?;
    }
    let trend = period.map(|period| trend::trend(&selection.records, window, period));
    let mut analysis = render::Analysis {
        report: report::report(&records, batches.as_deref(), window, healing_type),
        proposals: None,
        trend: request.trend.and(trend.clone()),
    };
    // The digest read the window before too: proposals rest on this window's batches only.
    let finished: Option<Vec<record::BatchRecord>> = batches.as_ref().map(|all| {
        all.iter()
            .filter(|b| window.contains(b.finished_time))
            .cloned()
            .collect()
    });
    // The digest lists the top proposals whether or not --propose was given.
    let proposals = (request.propose.is_some() || request.slack.is_some()).then(|| {
        let (min, file) = match &request.propose {
            Some(p) => (p.min_occurrences, p.policy.as_ref()),
            None => (propose::DEFAULT_MIN_OCCURRENCES as usize, None),
        };
        propose::propose(&selection.records, finished.as_deref(), min, file)
    });
    if let Some(webhook) = &request.slack {
        let before = report::report(&records, batches.as_deref(), previous, healing_type);
        let listed = proposals.as_deref().unwrap_or_default();
        let message = digest::message(&analysis.report, &before, listed);
        crate::sink::slack::post_now(webhook, &message).await?;
    }
    if let (Some(propose), Some(proposals)) = (&request.propose, proposals) {
        if let Some(path) = &propose.patch {
            let manifest = propose::combined_patch(&proposals, propose.policy.as_ref())
                .unwrap_or_else(|| {
                    "# `pipeline-healer analyze --propose` found no policy change to propose.\n"
                        .to_owned()
                });
            write_file(path, |file| file.write_all(manifest.as_bytes()))?;
        }
        analysis.proposals = Some(proposals);
    }
    if let Some(trend) = trend.as_ref().filter(|_| pictures) {
        let svg = plot::svg(trend)
            .map_err(|e| Error::Io("drawing the trend plot".into(), std::io::Error::other(e)))?;
        if let Some(path) = &request.plot {
            write_file(path, |file| file.write_all(svg.as_bytes()))?;
        }
        if let Some(path) = &request.html {
            let shown = render::Analysis {
                trend: Some(trend.clone()),
                ..analysis.clone()
            };
            let page = html::page(&shown, &render::text(&shown, label), Some(&svg));
            write_file(path, |file| file.write_all(page.as_bytes()))?;
        }
    }
    match request.output {
        OutputFormat::Text => Ok(render::text(&analysis, label)),
        OutputFormat::Json => render::json(&analysis, label).map_err(|source| Error::Serialize {
            what: "the report",
            source,
        }),
        OutputFormat::Csv => match &analysis.trend {
            Some(trend) => render::trend_csv(trend).map_err(|e| {
                Error::Io("writing the trend as CSV".into(), std::io::Error::other(e))
            }),
            None => Err(Error::Invalid {
                what: "--output csv".into(),
                message: "a CSV table needs --trend day|week (use --export for the records)".into(),
            }),
        },
    }
}

/// Writes a file through `write`, naming the path in any error.
fn write_file(
    path: &std::path::Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), Error> {
    let file = std::fs::File::create(path)
        .map_err(|e| Error::Io(format!("creating {}", path.display()), e))?;
    let mut out = std::io::BufWriter::new(file);
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| Error::Io(format!("writing {}", path.display()), e))
}

/// The healing records, and the finished batches (None: no batch outcomes to read).
type Fetched = (Vec<record::Record>, Option<Vec<record::BatchRecord>>);

async fn fetch(request: &Request, window: Window, progress: &Progress) -> Result<Fetched, Error> {
    match &request.source {
        Source::BigQuery(export) => {
            let client = crate::gcp::bigquery_client(export.emulator_host.as_deref())
                .await
                .map_err(|e| Error::bigquery("connecting to BigQuery", e))?;
            let records = source::from_bigquery(
                &client,
                &export.table,
                window,
                request.healing_type.as_deref(),
                |n| progress.count(n),
            )
            .await?;
            let batches = match &export.outcomes {
                Some(table) => source::outcomes_from_bigquery(&client, table, window).await?,
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
