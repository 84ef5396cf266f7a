//! Objects the controller cannot decode, kept out of its caches instead of stopping them.
//!
//! kube's list decodes a whole page at once: one object that does not fit the Rust type (a
//! count above `u32::MAX` admitted by a CRD applied by hand, an object written under an older
//! schema) would fail every list of its kind, so the cache never syncs and every reconcile
//! that waits on it waits for ever, in every namespace. The watch therefore decodes each
//! object as a [`Decoded`]: the object, or its metadata and the field that failed. The bad
//! ones are reported (log and Warning Event, by the caller) and left out; the others flow on.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};

/// An object of kind `K` as read from the API server: decoded, or not, with the reason.
#[derive(Clone, Debug)]
pub enum Decoded<K> {
    Ok(K),
    Undecodable {
        /// Boxed: the decoded variant is the one that is common.
        metadata: Box<ObjectMeta>,
        /// The field that failed and why, e.g. `status.report.completed: invalid value: ...`.
        error: String,
    },
}

impl<'de, K: DeserializeOwned> Deserialize<'de> for Decoded<K> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        match serde_path_to_error::deserialize::<_, K>(&value) {
            Ok(object) => Ok(Self::Ok(object)),
            Err(e) => {
                // Without readable metadata the object cannot even be named: that fails the
                // list, as it would have before (the API server never sends one).
                let metadata = value
                    .get("metadata")
                    .map(ObjectMeta::deserialize)
                    .transpose()
                    .map_err(D::Error::custom)?
                    .unwrap_or_default();
                Ok(Self::Undecodable {
                    metadata: Box::new(metadata),
                    error: format!("{}: {}", e.path(), e.inner()),
                })
            }
        }
    }
}

impl<K: Resource<DynamicType = ()>> Resource for Decoded<K> {
    type DynamicType = ();
    type Scope = K::Scope;

    fn kind(dt: &()) -> Cow<'_, str> {
        K::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        K::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        K::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        K::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        match self {
            Self::Ok(object) => object.meta(),
            Self::Undecodable { metadata, .. } => metadata,
        }
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        match self {
            Self::Ok(object) => object.meta_mut(),
            Self::Undecodable { metadata, .. } => metadata,
        }
    }
}

/// One watch event with the undecodable objects taken out: `undecodable` is told of each
/// (its metadata and error). An object that turns undecodable after it was cached leaves the
/// cache (as a deletion), so nothing acts on the stale copy; during a (re)list it is simply
/// not part of the new cache.
pub fn decoded_event<K>(
    event: watcher::Event<Decoded<K>>,
    cache: &Store<K>,
    undecodable: &(dyn Fn(&ObjectMeta, &str) + Send + Sync),
) -> Option<watcher::Event<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let cached = |metadata: &ObjectMeta| {
        let name = metadata.name.as_deref()?;
        let mut key = ObjectRef::<K>::new(name);
        if let Some(ns) = metadata.namespace.as_deref() {
            key = key.within(ns);
        }
        cache.get(&key).map(|k| (*k).clone())
    };
    match event {
        watcher::Event::Apply(Decoded::Ok(k)) => Some(watcher::Event::Apply(k)),
        watcher::Event::InitApply(Decoded::Ok(k)) => Some(watcher::Event::InitApply(k)),
        watcher::Event::Delete(Decoded::Ok(k)) => Some(watcher::Event::Delete(k)),
        watcher::Event::Apply(Decoded::Undecodable { metadata, error }) => {
            undecodable(&metadata, &error);
            cached(&metadata).map(watcher::Event::Delete)
        }
        watcher::Event::InitApply(Decoded::Undecodable { metadata, error }) => {
            undecodable(&metadata, &error);
            None
        }
        watcher::Event::Delete(Decoded::Undecodable { metadata, .. }) => {
            cached(&metadata).map(watcher::Event::Delete)
        }
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PredictionBatch;

    fn batch(completed: serde_json::Value) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
            "metadata": {"name": "b1", "namespace": "pipeline", "resourceVersion": "7"},
            "spec": {"batchId": "b1", "gameDate": "2026-11-24", "source": "status"},
            "status": {"report": {"completed": completed}},
        })
    }

    #[test]
    fn one_bad_object_does_not_fail_its_list_and_names_its_field() {
        let list = serde_json::json!([batch(21.into()), batch(4_294_967_296u64.into())]);
        let decoded: Vec<Decoded<PredictionBatch>> = serde_json::from_value(list).unwrap();
        assert!(matches!(decoded[0], Decoded::Ok(_)));
        let Decoded::Undecodable { metadata, error } = &decoded[1] else {
            panic!("the bad object decoded");
        };
        assert_eq!(metadata.name.as_deref(), Some("b1"));
        assert!(error.starts_with("status.report.completed: "), "{error}");
        assert!(error.contains("4294967296"), "{error}");
    }

    #[test]
    fn a_cached_object_that_turns_undecodable_leaves_the_cache() {
        let (store, mut writer) = kube::runtime::reflector::store::<PredictionBatch>();
        let good: PredictionBatch = serde_json::from_value(batch(21.into())).unwrap();
        writer.apply_watcher_event(&watcher::Event::Apply(good.clone()));
        let reported = std::sync::Mutex::new(Vec::new());
        let report = |m: &ObjectMeta, e: &str| {
            reported
                .lock()
                .unwrap()
                .push(format!("{}: {e}", m.name.clone().unwrap_or_default()))
        };
        let bad: Decoded<PredictionBatch> =
            serde_json::from_value(batch(4_294_967_296u64.into())).unwrap();
        let event = decoded_event(watcher::Event::Apply(bad.clone()), &store, &report);
        assert!(matches!(event, Some(watcher::Event::Delete(b)) if b.spec == good.spec));
        assert_eq!(reported.lock().unwrap().len(), 1);
        // In a (re)list it is left out, and reported.
        let event = decoded_event(watcher::Event::InitApply(bad), &store, &report);
        assert!(event.is_none());
        assert_eq!(reported.lock().unwrap().len(), 2);
        let event = decoded_event(
            watcher::Event::Apply(Decoded::Ok(good.clone())),
            &store,
            &report,
        );
        assert!(matches!(event, Some(watcher::Event::Apply(b)) if b.spec == good.spec));
    }
}
