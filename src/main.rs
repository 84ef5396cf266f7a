use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A self-healing controller for batch prediction pipelines on Kubernetes.
#[derive(Parser)]
#[command(name = "pipeline-healer", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { dir, check } => crds(&dir, check),
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
