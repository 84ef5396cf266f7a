//! The one way the controller writes a status: server-side apply of a typed status struct
//! under the writer's own field manager. The fields a writer owns are the ones its struct
//! carries (`None` fields are left out of the body), so a field it once set and now leaves
//! out is removed, which is what clearing it means; fields other writers own are untouched.

use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, KubeResultExt};

/// Whether the write must find the object at the version it was decided from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition<'a> {
    /// Conditional on this resourceVersion: a decision made from a stale read must not
    /// overwrite what changed meanwhile. A conflict is answered `Ok(None)`.
    Version(&'a str),
    /// Whatever the object's version: the writer's fields are its own.
    None,
}

impl<'a> Precondition<'a> {
    /// Conditional on the version `object` was read at (when it has one).
    pub fn decided_from<K: Resource>(object: &'a K) -> Self {
        match object.meta().resource_version.as_deref() {
            Some(version) => Precondition::Version(version),
            None => Precondition::None,
        }
    }
}

/// Applies `status` to the status subresource of `api`'s object `name` as `manager`.
/// `Ok(None)`: the object changed since it was read (only with [`Precondition::Version`]).
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    precondition: Precondition<'_>,
    status: &S,
    step: &'static str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let body = apply_body::<K, S>(precondition, status);
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(manager).force(),
            &Patch::Apply(&body),
        )
        .await;
    match precondition {
        Precondition::Version(_) => written.unless_conflict(step),
        Precondition::None => written.at(step).map(Some),
    }
}

/// The apply body: the kind, the resourceVersion when conditional, and the status.
fn apply_body<K, S>(precondition: Precondition, status: &S) -> serde_json::Value
where
    K: Resource<DynamicType = ()>,
    S: Serialize,
{
    let mut metadata = serde_json::Map::new();
    if let Precondition::Version(version) = precondition {
        metadata.insert("resourceVersion".into(), version.into());
    }
    serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": metadata,
        "status": status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PhaseRun;
    use crate::api::phase::{PhaseRunStatus, PhaseState};

    #[test]
    fn the_body_carries_the_kind_the_typed_status_and_the_version_only_when_conditional() {
        let mut run: PhaseRun = serde_json::from_value(serde_json::json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PhaseRun",
            "metadata": {"name": "p", "resourceVersion": "42"},
            "spec": {"phase": "phase4", "date": "2026-11-24", "processors": [
                {"name": "a", "table": "d.a", "dateColumn": "game_date"}]},
        }))
        .unwrap();
        let status = PhaseRunStatus {
            state: Some(PhaseState::Complete),
            ..Default::default()
        };
        let body = apply_body::<PhaseRun, _>(Precondition::decided_from(&run), &status);
        assert_eq!(body["kind"], "PhaseRun");
        assert_eq!(body["apiVersion"], "healing.pipeline.dev/v1alpha1");
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        assert_eq!(
            body["status"],
            serde_json::json!({"state": "Complete", "checks": 0})
        );
        let body = apply_body::<PhaseRun, _>(Precondition::None, &status);
        assert_eq!(body["metadata"], serde_json::json!({}));
        run.metadata.resource_version = None;
        let body = apply_body::<PhaseRun, _>(Precondition::decided_from(&run), &status);
        assert_eq!(body["metadata"], serde_json::json!({}));
    }
}
