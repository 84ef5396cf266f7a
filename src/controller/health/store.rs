//! Where a namespace's health is kept, and the writes that change it: the status of its
//! HealingPolicy, or the controller's ConfigMap for a namespace without one. Every write is
//! conditional on the version read, so a trial is claimed once and nothing is sent twice.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use tracing::{info, warn};

use crate::api::HealingPolicy;
use crate::api::health::TypeHealth;
use crate::controller::Context;
use crate::decide::breaker;
use crate::decide::health::{self, Gate, policy_status};
use crate::error::{Error, KubeResultExt};
use crate::runtime::status::{Precondition, apply_whole_status};
use crate::runtime::{HEALTH_MANAGER, MANAGER};

/// The ConfigMap holding a namespace's health when it has no HealingPolicy.
pub const HEALTH_CONFIGMAP: &str = "pipeline-healer-health";
/// The label that selects the controller's health ConfigMaps (for its cache).
pub const HEALTH_LABEL: &str = "healing.pipeline.dev/health";
const HEALTH_KEY: &str = "healingTypes";

/// Where a namespace's health is kept.
pub enum Holder {
    Policy(Arc<HealingPolicy>),
    ConfigMap(Option<Arc<ConfigMap>>),
}

/// A namespace's stored health and where it came from.
pub struct StoredHealth {
    pub holder: Holder,
    pub types: BTreeMap<String, TypeHealth>,
}

/// The namespace's health as the caches hold it.
pub fn stored_health(ctx: &Context, namespace: &str) -> StoredHealth {
    let map = ctx
        .health_maps
        .get(&ObjectRef::new(HEALTH_CONFIGMAP).within(namespace));
    let from_map = || {
        map.as_ref()
            .and_then(|m| m.data.as_ref())
            .and_then(|d| d.get(HEALTH_KEY))
            .and_then(|json| match serde_json::from_str(json) {
                Ok(types) => Some(types),
                Err(error) => {
                    // Ours, and only a hand edit breaks it: start again rather than stop.
                    warn!(namespace, %error, "the stored health is malformed; starting from empty");
                    None
                }
            })
            .unwrap_or_default()
    };
    match ctx.policies.chosen(namespace) {
        Some(policy) => {
            let in_status = policy
                .status
                .as_ref()
                .map(|s| s.healing_types.clone())
                .unwrap_or_default();
            // A policy new to a namespace takes over the state the defaults kept, so what
            // was sent before is not sent again.
            let types = if in_status.is_empty() {
                from_map()
            } else {
                in_status
            };
            StoredHealth {
                holder: Holder::Policy(policy),
                types,
            }
        }
        None => StoredHealth {
            types: from_map(),
            holder: Holder::ConfigMap(map),
        },
    }
}

/// Writes `types` where `stored` came from, only if that object has not changed since.
/// `Ok(None)`: it changed (another writer got there: a trial claim, another replica).
pub async fn save(
    ctx: &Context,
    namespace: &str,
    stored: &StoredHealth,
    types: &BTreeMap<String, TypeHealth>,
) -> Result<Option<ObjectReference>, Error> {
    match &stored.holder {
        Holder::Policy(policy) => {
            let status = policy_status(
                policy.status.as_ref(),
                types,
                policy.metadata.generation,
                Timestamp::now(),
            );
            let api: Api<HealingPolicy> = Api::namespaced(ctx.client.clone(), namespace);
            let saved = apply_whole_status(
                &api,
                &policy.name_any(),
                HEALTH_MANAGER,
                Precondition::decided_from(&**policy),
                &status,
                "storing the health in the HealingPolicy",
            )
            .await?;
            Ok(saved.map(|p| p.object_ref(&())))
        }
        Holder::ConfigMap(existing) => {
            let map = health_map(namespace, existing.as_deref(), types)?;
            let api: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), namespace);
            let saved = match existing {
                Some(_) => api
                    .replace(HEALTH_CONFIGMAP, &PostParams::default(), &map)
                    .await
                    .unless_conflict("storing the health in its ConfigMap")?,
                None => api
                    .create(&PostParams::default(), &map)
                    .await
                    .unless_conflict("storing the health in a new ConfigMap")?,
            };
            Ok(saved.map(|m| m.object_ref(&())))
        }
    }
}

/// The health ConfigMap holding `types`, replacing `existing` (its resourceVersion makes the
/// write conditional).
fn health_map(
    namespace: &str,
    existing: Option<&ConfigMap>,
    types: &BTreeMap<String, TypeHealth>,
) -> Result<ConfigMap, Error> {
    let json = serde_json::to_string(types).map_err(|source| Error::Serialize {
        what: "the healing health",
        source,
    })?;
    Ok(ConfigMap {
        metadata: ObjectMeta {
            name: Some(HEALTH_CONFIGMAP.into()),
            namespace: Some(namespace.into()),
            resource_version: existing.and_then(|m| m.resource_version()),
            labels: Some(BTreeMap::from([
                (HEALTH_LABEL.to_owned(), "true".to_owned()),
                ("app.kubernetes.io/managed-by".to_owned(), MANAGER.to_owned()),
            ])),
            annotations: Some(BTreeMap::from([(
                "healing.pipeline.dev/description".to_owned(),
                "Alert and circuit-breaker state of this namespace's healing types (it has no HealingPolicy); kept by pipeline-healer".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(HEALTH_KEY.to_owned(), json)])),
        ..Default::default()
    })
}

/// The gate for a heal of `healing_type` in `namespace` now (see [`health::gate`]).
pub fn gate(ctx: &Context, namespace: &str, healing_type: &str, now: Timestamp) -> Gate {
    let policy = ctx.policies.spec_for(namespace);
    let circuit = || {
        stored_health(ctx, namespace)
            .types
            .get(healing_type)
            .map(|h| h.circuit.clone())
            .unwrap_or_default()
    };
    health::gate(
        &policy,
        healing_type,
        circuit,
        ctx.abandoned_heal_after(),
        now,
    )
}

/// Claims the trial heal `healing_id` of an open circuit. False: the circuit changed first
/// (another heal claimed it, or the loop stored newer state); decide again.
pub async fn claim_trial(
    ctx: &Context,
    namespace: &str,
    healing_type: &str,
    healing_id: &str,
    now: Timestamp,
) -> Result<bool, Error> {
    let stored = stored_health(ctx, namespace);
    let mut types = stored.types.clone();
    let health = types.entry(healing_type.to_owned()).or_default();
    health.circuit = breaker::trial_started(healing_id, now);
    let claimed = save(ctx, namespace, &stored, &types).await?.is_some();
    if claimed {
        info!(
            namespace,
            healing_type, healing_id, "circuit half-open: trial heal"
        );
    }
    Ok(claimed)
}
