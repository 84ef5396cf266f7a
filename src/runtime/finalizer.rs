//! Adding and removing a finalizer, each conditional on the version read: a merge patch of
//! the whole list (a list is replaced whole by a merge patch) with the resourceVersion, so
//! a list another client changed meanwhile is not overwritten; a conflict answers false,
//! and the newer version decides.

use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::error::{Error, KubeResultExt};

/// Whether `object` carries the finalizer `name`.
pub fn has<K: Resource>(object: &K, name: &str) -> bool {
    object.finalizers().iter().any(|f| f == name)
}

/// Adds the finalizer `name` to `object`. False: it changed since it was read.
pub async fn add<K>(api: &Api<K>, object: &K, name: &str, step: &'static str) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let mut finalizers = object.finalizers().to_vec();
    finalizers.push(name.to_owned());
    write(api, object, finalizers, step).await
}

/// Removes the finalizer `name` from `object`. False: it changed since it was read.
pub async fn remove<K>(
    api: &Api<K>,
    object: &K,
    name: &str,
    step: &'static str,
) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<String> = object
        .finalizers()
        .iter()
        .filter(|f| *f != name)
        .cloned()
        .collect();
    write(api, object, finalizers, step).await
}

async fn write<K>(
    api: &Api<K>,
    object: &K,
    finalizers: Vec<String>,
    step: &'static str,
) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    let patch = json!({
        "metadata": {
            "finalizers": finalizers,
            "resourceVersion": object.resource_version(),
        }
    });
    let written = api
        .patch(
            &object.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unless_conflict(step);
    match written {
        // Gone already: nothing is held back.
        Err(e) if e.is_gone() => Ok(true),
        other => Ok(other?.is_some()),
    }
}
