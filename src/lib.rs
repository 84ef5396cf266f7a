//! pipeline-healer: a Kubernetes controller that keeps a batch prediction pipeline healthy and
//! accounts for every healing action. See README.md and ../shared/design.md for the shape.

pub mod analyze;
pub mod api;
pub mod controller;
pub mod crdgen;
pub mod decide;
pub mod error;
pub mod gcp;
pub mod runtime;
pub mod sink;
pub mod source;
pub mod telemetry;
pub mod timeouts;

pub use error::Error;
