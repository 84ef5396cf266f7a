//! Objects the controller cannot decode, kept out of its caches instead of stopping them.
//!
//! kube's list decodes a whole page at once: one object that does not fit the Rust type (a
//! count above `u32::MAX` admitted by a CRD applied by hand, an object written under an older
//! schema) would fail every list of its kind, so the cache never syncs and every reconcile
//! that waits on it waits for ever, in every namespace. The watch therefore decodes each
//! object as a [`Decoded`]: the object, or its metadata and the field that failed. The bad
//! ones are reported (log and Warning Event, by the caller) and left out; the others flow on.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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

/// One watch event with the undecodable objects taken out. An object that turns undecodable
/// after it was cached leaves the cache (as a deletion), so nothing acts on the stale copy;
/// during a (re)list it is simply not part of the new cache.
pub fn decoded_event<K>(
    event: watcher::Event<Decoded<K>>,
    cache: &Store<K>,
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
        watcher::Event::Apply(Decoded::Undecodable { metadata, .. })
        | watcher::Event::Delete(Decoded::Undecodable { metadata, .. }) => {
            cached(&metadata).map(watcher::Event::Delete)
        }
        watcher::Event::InitApply(Decoded::Undecodable { .. }) => None,
        watcher::Event::Init => Some(watcher::Event::Init),
        watcher::Event::InitDone => Some(watcher::Event::InitDone),
    }
}

/// (namespace, name) of an object.
type Key = (Option<String>, String);

fn key_of(metadata: &ObjectMeta) -> Key {
    (
        metadata.namespace.clone(),
        metadata.name.clone().unwrap_or_default(),
    )
}

/// The objects of one kind that exist but are not in its cache because they do not decode,
/// kept as the watch reports them (a relist replaces the set when it is complete). Clones
/// share it.
#[derive(Clone, Default)]
pub struct Undecodables(Arc<Mutex<Tracked>>);

#[derive(Default)]
struct Tracked {
    /// Each undecodable object and its error.
    current: HashMap<Key, String>,
    /// The set a relist under way is building.
    relisting: Option<HashMap<Key, String>>,
}

impl Undecodables {
    /// Follows one watch event. Returns the object and error to report when the event shows
    /// an object undecodable that was not so before (or fails otherwise now): a worker that
    /// keeps writing the same bad count, or a relist, reports nothing new.
    pub fn observe<'e, K: Resource<DynamicType = ()>>(
        &self,
        event: &'e watcher::Event<Decoded<K>>,
    ) -> Option<(&'e ObjectMeta, &'e str)> {
        let mut tracked = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Tracked { current, relisting } = &mut *tracked;
        match event {
            watcher::Event::Init => *relisting = Some(HashMap::new()),
            watcher::Event::InitDone => {
                if let Some(listed) = relisting.take() {
                    *current = listed;
                }
            }
            watcher::Event::InitApply(Decoded::Undecodable { metadata, error }) => {
                let key = key_of(metadata);
                let news = current.get(&key) != Some(error);
                relisting
                    .get_or_insert_with(HashMap::new)
                    .insert(key, error.clone());
                return news.then_some((&**metadata, error.as_str()));
            }
            watcher::Event::Apply(Decoded::Undecodable { metadata, error }) => {
                let previous = current.insert(key_of(metadata), error.clone());
                return (previous.as_ref() != Some(error)).then_some((&**metadata, error.as_str()));
            }
            watcher::Event::Apply(Decoded::Ok(k)) | watcher::Event::InitApply(Decoded::Ok(k)) => {
                current.remove(&key_of(k.meta()));
            }
            watcher::Event::Delete(decoded) => {
                current.remove(&key_of(decoded.meta()));
            }
        }
        None
    }

    /// Whether an object of this kind in `namespace` cannot be decoded.
    pub fn in_namespace(&self, namespace: &str) -> bool {
        let tracked = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        tracked
            .current
            .keys()
            .any(|(ns, _)| ns.as_deref() == Some(namespace))
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
    fn a_cached_object_that_turns_undecodable_leaves_the_cache_and_is_reported_once() {
        let (store, mut writer) = kube::runtime::reflector::store::<PredictionBatch>();
        let good: PredictionBatch = serde_json::from_value(batch(21.into())).unwrap();
        writer.apply_watcher_event(&watcher::Event::Apply(good.clone()));
        let tracked = Undecodables::default();
        let bad: Decoded<PredictionBatch> =
            serde_json::from_value(batch(4_294_967_296u64.into())).unwrap();
        let apply_bad = watcher::Event::Apply(bad.clone());
        let reported = tracked
            .observe(&apply_bad)
            .map(|(m, e)| (m.name.clone(), e.to_owned()));
        assert!(matches!(reported, Some((Some(n), e)) if n == "b1" && e.contains("completed")));
        assert!(tracked.in_namespace("pipeline"));
        assert!(!tracked.in_namespace("elsewhere"));
        let event = decoded_event(apply_bad.clone(), &store);
        assert!(matches!(event, Some(watcher::Event::Delete(b)) if b.spec == good.spec));
        // The same bad write again, or a relist that finds it, is no news.
        assert!(tracked.observe(&apply_bad).is_none());
        let relist = [
            watcher::Event::Init,
            watcher::Event::InitApply(bad.clone()),
            watcher::Event::InitDone,
        ];
        assert!(relist.iter().all(|e| tracked.observe(e).is_none()));
        assert!(decoded_event(watcher::Event::InitApply(bad), &store).is_none());
        assert!(tracked.in_namespace("pipeline"));
        // Fixed: it decodes, flows on, and the namespace is clear.
        let fixed = watcher::Event::Apply(Decoded::Ok(good.clone()));
        assert!(tracked.observe(&fixed).is_none());
        assert!(!tracked.in_namespace("pipeline"));
        assert!(
            matches!(decoded_event(fixed, &store), Some(watcher::Event::Apply(b)) if b.spec == good.spec)
        );
        // A relist that no longer finds a bad object forgets it.
        tracked.observe(&apply_bad);
        for e in [watcher::Event::Init, watcher::Event::InitDone] {
            tracked.observe::<PredictionBatch>(&e);
        }
        assert!(!tracked.in_namespace("pipeline"));
    }
}
