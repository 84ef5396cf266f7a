//! The custom resources of `healing.pipeline.dev/v1alpha1`, one module per kind, and the
//! schema pieces they share.

// kube's `printcolumn(type_ = "string", ...)` arguments repeat across columns; clippy takes
// the repeats for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod batch;
pub mod event;
pub mod health;
pub mod phase;
pub mod policy;
pub mod schema;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray, JSONSchemaPropsOrBool,
};
use kube::CustomResourceExt;

pub use batch::{PredictionBatch, PredictionBatchSpec, PredictionBatchStatus};
pub use event::{HealingEvent, HealingEventSpec, HealingEventStatus};
pub use phase::{PhaseRun, PhaseRunSpec, PhaseRunStatus};
pub use policy::{HealingPolicy, HealingPolicySpec, HealingPolicyStatus};

/// The API group of every kind here.
pub const GROUP: &str = "healing.pipeline.dev";

/// Every CRD this controller serves, in a stable order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    let mut crds = vec![
        PredictionBatch::crd(),
        PhaseRun::crd(),
        HealingEvent::crd(),
        HealingPolicy::crd(),
    ];
    for crd in &mut crds {
        for version in &mut crd.spec.versions {
            if let Some(schema) = version
                .schema
                .as_mut()
                .and_then(|s| s.open_api_v3_schema.as_mut())
            {
                normalize_integer_formats(schema);
            }
        }
    }
    crds
}

/// schemars marks unsigned integers `format: uint32`; Kubernetes knows only `int32` and
/// `int64` and warns on every apply about the rest. The minimums schemars also emits keep the
/// values non-negative, and int64 holds every u32.
fn normalize_integer_formats(schema: &mut JSONSchemaProps) {
    if matches!(
        schema.format.as_deref(),
        Some("uint8" | "uint16" | "uint32" | "uint")
    ) {
        schema.format = Some("int64".into());
    }
    let children = schema
        .properties
        .iter_mut()
        .flat_map(|p| p.values_mut())
        .chain(schema.additional_properties.as_mut().and_then(|a| match a {
            JSONSchemaPropsOrBool::Schema(s) => Some(s.as_mut()),
            JSONSchemaPropsOrBool::Bool(_) => None,
        }))
        .chain(schema.items.as_mut().and_then(|i| match i {
            JSONSchemaPropsOrArray::Schema(s) => Some(s.as_mut()),
            JSONSchemaPropsOrArray::Schemas(_) => None,
        }));
    for child in children {
        normalize_integer_formats(child);
    }
}
