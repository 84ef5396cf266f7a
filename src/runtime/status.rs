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

/// [`apply_status`] for a writer that owns the whole status (a PhaseRun's, a HealingPolicy's):
/// any field the object still shows and `status` leaves out is then removed, with one merge
/// patch of nulls. An apply removes only the fields its own manager applied before; fields
/// recorded under another entry stay, such as those a release before server-side apply wrote
/// by merge patch (recorded as `pipeline-healer`, operation Update), or a hand edit.
pub async fn apply_whole_status<K, S>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    precondition: Precondition<'_>,
    status: &S,
    step: &'static str,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
    S: Serialize,
{
    let Some(written) = apply_status(api, name, manager, precondition, status, step).await? else {
        return Ok(None);
    };
    let shown = serde_json::to_value(&written).map_err(|source| Error::Serialize {
        what: "the written object",
        source,
    })?;
    let applied = serde_json::to_value(status).map_err(|source| Error::Serialize {
        what: "the status",
        source,
    })?;
    let Some(nulls) = leftovers(&applied, &shown["status"]) else {
        return Ok(Some(written));
    };
    let patch = serde_json::json!({ "status": nulls });
    let cleaned = api
        .patch_status(name, &PatchParams::apply(manager), &Patch::Merge(&patch))
        .await
        .at(step)?;
    Ok(Some(cleaned))
}

/// A merge patch removing what `shown` has and `applied` does not: a null for each such key,
/// recursing into objects both have (arrays are replaced whole by an apply, so never
/// partly left over). None: nothing is left over.
pub fn leftovers(
    applied: &serde_json::Value,
    shown: &serde_json::Value,
) -> Option<serde_json::Value> {
    let (Some(applied), Some(shown)) = (applied.as_object(), shown.as_object()) else {
        return None;
    };
    let patch: serde_json::Map<String, serde_json::Value> = shown
        .iter()
        .filter_map(|(key, value)| match applied.get(key) {
            None => Some((key.clone(), serde_json::Value::Null)),
            Some(mine) => leftovers(mine, value).map(|inner| (key.clone(), inner)),
        })
        .collect();
    (!patch.is_empty()).then_some(serde_json::Value::Object(patch))
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
    fn what_is_left_over_is_nulled_at_every_depth_and_nothing_else() {
        use serde_json::json;
        let applied = json!({"state": "Complete", "attempts": {"a": 1}, "plan": [["a"]]});
        let shown = json!({"state": "Complete", "currentWave": 1, "attempts": {"a": 1, "b": 2},
                           "plan": [["a"], ["b"]], "checks": 0});
        assert_eq!(
            leftovers(&applied, &shown),
            Some(json!({"currentWave": null, "attempts": {"b": null}, "checks": null}))
        );
        assert_eq!(leftovers(&applied, &applied), None);
        assert_eq!(leftovers(&applied, &json!(null)), None);
    }

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
