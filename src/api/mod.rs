//! The custom resources of `healing.pipeline.dev/v1alpha1`, one module per kind, and the
//! schema pieces they share.

pub mod batch;
pub mod event;
pub mod phase;
pub mod policy;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use batch::{PredictionBatch, PredictionBatchSpec, PredictionBatchStatus};
pub use event::{HealingEvent, HealingEventSpec, HealingEventStatus};
pub use phase::{PhaseRun, PhaseRunSpec, PhaseRunStatus};
pub use policy::{HealingPolicy, HealingPolicySpec, HealingPolicyStatus};

/// The API group of every kind here.
pub const GROUP: &str = "healing.pipeline.dev";

/// Every CRD this controller serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        PredictionBatch::crd(),
        PhaseRun::crd(),
        HealingEvent::crd(),
        HealingPolicy::crd(),
    ]
}
