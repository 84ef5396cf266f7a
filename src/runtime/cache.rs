//! The caches the controller decides from: one watch per kind feeding a reflector store,
//! managed fields dropped, and objects that do not decode kept out (see [`super::decode`])
//! and reported instead of stopping their kind's cache.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::warn;

use super::MANAGER;
use super::decode;

pub fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A cache of `api`'s objects and the watch that fills it, the controller's main stream.
pub struct CachedWatch<K: Resource<DynamicType = ()> + 'static, S> {
    pub store: Store<K>,
    /// Turns true once the first list is in the cache. Use this, not
    /// `Store::wait_until_ready`, to wait beside the controller: that future keeps a single
    /// waker, so with two tasks waiting one of them may never wake.
    pub ready: tokio::sync::watch::Receiver<bool>,
    /// The objects of the kind that are left out of `store` because they do not decode.
    pub undecodables: decode::Undecodables,
    pub stream: S,
}

/// Told of each object a watch cannot decode: its kind's name and apiVersion, its metadata,
/// and the field that failed.
pub type Undecodable = Arc<dyn Fn(&str, &str, &ObjectMeta, &str) + Send + Sync>;

/// A watch of `K` (in `namespace`, or all) feeding a cache. Managed fields are dropped from
/// the cache: nothing reads them, and they are a large part of each object. An object that
/// does not decode is left out and told to `undecodable`: it must not stop its kind's cache
/// from syncing (see [`decode`]).
pub fn cached_watch<K>(
    client: &Client,
    namespace: Option<&str>,
    config: watcher::Config,
    undecodable: Undecodable,
) -> CachedWatch<K, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let (ready_tx, ready) = tokio::sync::watch::channel(false);
    let cache = store.clone();
    let undecodables = decode::Undecodables::default();
    let tracked = undecodables.clone();
    let events = watcher(api::<decode::Decoded<K>>(client, namespace), config)
        .default_backoff()
        .modify(|object| object.managed_fields_mut().clear())
        .filter_map(move |event| {
            let event = match event {
                Ok(e) => {
                    if let Some((metadata, error)) = tracked.observe(&e) {
                        undecodable(&K::kind(&()), &K::api_version(&()), metadata, error);
                    }
                    decode::decoded_event(e, &cache).map(Ok)
                }
                Err(e) => Some(Err(e)),
            };
            std::future::ready(event)
        });
    let stream = reflector::reflector(writer, events)
        // The reflector has applied an event to the store by the time it passes it on.
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                ready_tx.send_replace(true);
            }
        })
        .applied_objects();
    CachedWatch {
        store,
        ready,
        undecodables,
        stream,
    }
}

/// Logs an object that cannot be decoded and publishes a Warning Event on it, naming the
/// field: it is left alone (out of the caches) until someone fixes or deletes it.
pub fn report_undecodable(client: &Client, instance: Option<String>) -> Undecodable {
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: MANAGER.into(),
            instance,
        },
    );
    Arc::new(move |kind, api_version, metadata, error| {
        let name = metadata.name.clone().unwrap_or_default();
        warn!(%kind, namespace = metadata.namespace.as_deref().unwrap_or_default(), %name, %error, "object cannot be decoded; it is left alone until it is fixed");
        let reference = k8s_openapi::api::core::v1::ObjectReference {
            api_version: Some(api_version.to_owned()),
            kind: Some(kind.to_owned()),
            name: metadata.name.clone(),
            namespace: metadata.namespace.clone(),
            uid: metadata.uid.clone(),
            // Not the resourceVersion: the Recorder counts repeats of an Event on one
            // reference as a series instead of a new Event each time.
            ..Default::default()
        };
        let event = Event {
            type_: EventType::Warning,
            reason: "Undecodable".into(),
            note: Some(format!(
                "{kind} {name} cannot be read by pipeline-healer and is left alone until it is fixed: {error}"
            )),
            action: "Decode".into(),
            secondary: None,
        };
        let recorder = recorder.clone();
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                warn!(error = %e, "publishing the Undecodable Event failed");
            }
        });
    })
}
