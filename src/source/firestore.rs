//! The Firestore mirror: keeps a PredictionBatch object per incomplete batch document, with
//! its observed progress current from Firestore's real-time listen stream (no scans).
//!
//! The mirror owns two status fields, `report` and `sourceError` (server-side apply as its
//! own field manager); the batch reconciler owns the rest. A malformed document gives an
//! object whose `sourceError` names every problem, so it shows in `kubectl get pb`, and it
//! never stops the mirror or any other batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firestore::gcloud_sdk::google::firestore::v1::target_change::TargetChangeType;
use firestore::{
    FirestoreDb, FirestoreListenEvent, FirestoreListener, FirestoreListenerParams,
    FirestoreListenerTarget, FirestoreMemListenStateStorage,
};
use jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use tracing::{debug, info, warn};

use super::firestore_doc::{BatchDoc, DocProblems, DocValue, fields_of, parse, proto_time};
use crate::api::PredictionBatch;
use crate::api::batch::{BatchSource, PredictionBatchSpec, PredictionBatchStatus};
use crate::decide::naming::object_name_for_document;
use crate::error::{Error, KubeResultExt};
use crate::runtime::MIRROR_MANAGER;
use crate::runtime::bookkeeping::Bookkeeping;
use crate::runtime::policies::PolicyCache;
use crate::runtime::status::{Precondition, apply_status};
use crate::runtime::workqueue::WorkQueue;

const TARGET: FirestoreListenerTarget = FirestoreListenerTarget::new(1);
/// How long a broken listen stream waits before it reconnects (the crate's default is 5 s;
/// every second of it delays stall detection for every batch).
const LISTEN_RETRY_DELAY: Duration = Duration::from_secs(1);
/// Documents mirrored at once. Mirroring a document is two API calls in a row; a controller
/// starting on a large collection, or a burst of new batches, is limited by how many are in
/// flight while the API server is busy with heals (in the burst benchmark, 16 mirrored 1,000
/// stalled documents in 12 s, 64 in about 5 s).
const MIRROR_WORKERS: usize = 64;

/// Where batches are read from and mirrored to.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    pub collection: String,
    pub namespace: String,
}

pub type Listener = FirestoreListener<FirestoreDb, FirestoreMemListenStateStorage>;

/// A running mirror.
pub struct Mirroring {
    /// Shut down by the caller.
    listener: Listener,
    /// True while the listen stream has sent the whole collection since it last connected:
    /// false from its (re)connection until Firestore says the target is current.
    pub snapshot_read: tokio::sync::watch::Receiver<bool>,
    /// The workers that apply changes; stopped with the listener (see [`Mirroring::stop`]).
    queue: WorkQueue<String, DocChange>,
}

impl Mirroring {
    /// Stops mirroring: the listener, then the workers and their retries (a term that ended
    /// must not apply what it queued from its stale cache while another replica leads).
    pub async fn stop(mut self) {
        if let Err(e) = self.listener.shutdown_with_timeout(LISTENER_STOP).await {
            warn!(error = %e, "the Firestore listener stopped uncleanly");
        }
        self.queue.stop();
    }
}

/// How long stopping the listener may take.
const LISTENER_STOP: Duration = Duration::from_secs(5);

/// A document as last applied.
#[derive(Clone, Copy, Debug)]
struct Applied {
    update_time: Timestamp,
    /// When; an entry younger than a sweep is kept even while its new object is not cached.
    at: std::time::Instant,
}

/// How often the record of applied documents drops those whose object is gone.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

struct Mirror {
    client: Client,
    config: MirrorConfig,
    policies: PolicyCache,
    /// The controller's cache of batches: whether a document's object exists, without a read.
    batches: Store<PredictionBatch>,
    /// True once `batches` holds every batch.
    batches_ready: tokio::sync::watch::Receiver<bool>,
    /// The update time of each mirrored document as last applied. Firestore may resend a
    /// target's whole initial state (the emulator does after every write); an unchanged
    /// document then costs no API call. Bounded by the live batches: only documents with an
    /// object are kept, an entry goes when its document is removed, and [`Mirror::sweep`]
    /// drops those whose object is gone (a finished batch cleaned up after retention).
    applied: Mutex<HashMap<String, Applied>>,
    /// The report of a complete document cannot lead to a heal: it takes its turn.
    bookkeeping: Bookkeeping,
}

/// Starts listening. An in-memory resume state means a restart re-reads the whole
/// collection, which is what re-mirroring needs.
pub async fn start(
    db: &FirestoreDb,
    client: Client,
    config: MirrorConfig,
    policies: PolicyCache,
    batches: Store<PredictionBatch>,
    batches_ready: tokio::sync::watch::Receiver<bool>,
    bookkeeping: Bookkeeping,
) -> Result<Mirroring, Error> {
    let params = FirestoreListenerParams::new().with_retry_delay(LISTEN_RETRY_DELAY);
    let mut listener = db
        .create_listener_with_params(FirestoreMemListenStateStorage::new(), params)
        .await
        .map_err(|e| Error::firestore("creating the listener", e))?;
    db.fluent()
        .select()
        .from(config.collection.as_str())
        .listen()
        .add_target(TARGET, &mut listener)
        .map_err(|e| Error::firestore("adding the listen target", e))?;
    info!(collection = %config.collection, namespace = %config.namespace, "mirroring Firestore batches");
    let mirror = Arc::new(Mirror {
        client,
        config,
        policies,
        batches,
        batches_ready,
        bookkeeping,
        applied: Mutex::new(HashMap::new()),
    });
    // Changes are applied by a few workers, the latest per document, retried on failure:
    // a stalled batch's document does not change again, so a failed write must not wait for
    // one. Even "permanent" API errors are retried (a mirror namespace created late, RBAC
    // fixed): only a document that cannot be mirrored as it is gets logged once and left.
    let worker_mirror = mirror.clone();
    let queue = WorkQueue::start(MIRROR_WORKERS, move |change: DocChange| {
        let mirror = worker_mirror.clone();
        async move {
            if mirror.already_applied(&change.name, change.update_time) {
                return Ok(());
            }
            match mirror.apply(&change).await {
                Ok(mirrored) => {
                    // An unmirrored document (complete, or too old) keeps no entry: the
                    // record is of live batches only.
                    if mirrored {
                        mirror.remember(&change);
                    }
                    Ok(())
                }
                Err(e) if !matches!(e, Error::Invalid { .. }) => {
                    warn!(document = %change.path, error = %e, "mirroring a batch document failed; retrying");
                    Err(e)
                }
                Err(e) => {
                    warn!(document = %change.path, error = %e, "batch document cannot be mirrored");
                    mirror.remember(&change);
                    Ok(())
                }
            }
        }
    });
    // The sweeper holds the mirror weakly, and ends with it or with the queue.
    let swept = Arc::downgrade(&mirror);
    let sweeping = queue.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            match swept.upgrade() {
                Some(mirror) if !sweeping.is_stopped() => mirror.sweep(),
                _ => return,
            }
        }
    });
    let (snapshot, snapshot_read) = tokio::sync::watch::channel(false);
    let pushing = queue.clone();
    listener
        .start(move |event| {
            match event {
                FirestoreListenEvent::TargetChange(change) => {
                    // Added on a new stream: its snapshot follows, and ends with Current.
                    match TargetChangeType::try_from(change.target_change_type) {
                        Ok(TargetChangeType::Add) => {
                            snapshot.send_replace(false);
                        }
                        Ok(TargetChangeType::Current) => {
                            snapshot.send_replace(true);
                        }
                        _ => {}
                    }
                }
                // Checked here as well as in the worker: a resent collection (the emulator
                // resends it after every write to it) must not fill the queue with documents
                // already applied.
                FirestoreListenEvent::DocumentChange(change) => {
                    if let Some(doc) = change.document
                        && !mirror.already_applied(&doc.name, DocChange::update_time_of(&doc))
                    {
                        let change = DocChange::read(&mirror.config.collection, &doc);
                        pushing.push(change.name.clone(), change);
                    }
                }
                FirestoreListenEvent::DocumentDelete(gone) => mirror.forget(&gone.document),
                FirestoreListenEvent::DocumentRemove(gone) => mirror.forget(&gone.document),
                _ => {}
            }
            async { Ok(()) }
        })
        .await
        .map_err(|e| Error::firestore("starting the listener", e))?;
    Ok(Mirroring {
        listener,
        snapshot_read,
        queue,
    })
}

/// A changed document as read when it arrives: what mirroring needs, not the document. A
/// controller starting on a large collection queues every document at once, and a whole
/// document (its player arrays) is many times the size of its reading.
#[derive(Clone, Debug)]
struct DocChange {
    /// The document's full resource name (the queue's key).
    name: String,
    /// `collection/doc_id`.
    path: String,
    doc_id: String,
    create_time: Option<Timestamp>,
    update_time: Option<Timestamp>,
    parsed: Result<BatchDoc, DocProblems>,
    /// The document's `correlation_id` even when the rest cannot be read.
    correlation_id: Option<String>,
}

impl DocChange {
    fn update_time_of(doc: &firestore::FirestoreDocument) -> Option<Timestamp> {
        doc.update_time.as_ref().and_then(proto_time)
    }

    fn read(collection: &str, doc: &firestore::FirestoreDocument) -> Self {
        let doc_id = doc.name.rsplit('/').next().unwrap_or_default().to_owned();
        let fields = fields_of(doc);
        let create_time = doc.create_time.as_ref().and_then(proto_time);
        let update_time = Self::update_time_of(doc);
        Self {
            name: doc.name.clone(),
            path: format!("{collection}/{doc_id}"),
            parsed: parse(&doc_id, &fields, create_time, update_time),
            correlation_id: string_field(&fields, "correlation_id"),
            doc_id,
            create_time,
            update_time,
        }
    }
}

impl Mirror {
    fn already_applied(&self, name: &str, update_time: Option<Timestamp>) -> bool {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        matches!((applied.get(name), update_time), (Some(seen), Some(t)) if t <= seen.update_time)
    }

    fn remember(&self, change: &DocChange) {
        if let Some(update_time) = change.update_time {
            let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
            let at = std::time::Instant::now();
            applied.insert(change.name.clone(), Applied { update_time, at });
        }
    }

    fn forget(&self, name: &str) {
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        applied.remove(name);
    }

    /// Drops the entries of documents whose object is gone (cleaned up after retention, or
    /// deleted by hand), unless applied within the last sweep period (a new object the cache
    /// does not show yet). A later resend of such a document is applied again, which finds
    /// it complete and mirrors nothing.
    fn sweep(&self) {
        let namespace = &self.config.namespace;
        let mut applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let before = applied.len();
        applied.retain(|name, entry| {
            let doc_id = name.rsplit('/').next().unwrap_or_default();
            let object = ObjectRef::new(&object_name_for_document(doc_id)).within(namespace);
            entry.at.elapsed() < SWEEP_EVERY || self.batches.get(&object).is_some()
        });
        debug!(
            kept = applied.len(),
            dropped = before - applied.len(),
            "applied documents swept"
        );
    }

    /// Mirrors the document; whether it has an object (false: complete, or too old, and
    /// not mirrored).
    async fn apply(&self, change: &DocChange) -> Result<bool, Error> {
        // Until the cache holds every batch, "not cached" does not mean "does not exist".
        // It fails only once the controller has stopped, and then nothing is to be mirrored.
        if self
            .batches_ready
            .clone()
            .wait_for(|ready| *ready)
            .await
            .is_err()
        {
            return Ok(false);
        }
        // Whether a document is mirrored at all depends on its namespace's policy (max age).
        self.policies.synced().await?;
        let name = object_name_for_document(&change.doc_id);
        debug!(document = %change.path, readable = change.parsed.is_ok(), "batch document changed");

        let api: Api<PredictionBatch> =
            Api::namespaced(self.client.clone(), &self.config.namespace);
        if !self.ensure_object(&api, &name, change).await? {
            return Ok(false);
        }
        // The mirror's two fields: the report, or why there is none.
        let status = match &change.parsed {
            Ok(doc) => PredictionBatchStatus {
                report: Some(doc.report.clone()),
                ..Default::default()
            },
            Err(problems) => PredictionBatchStatus {
                source_error: Some(problems.to_string()),
                ..Default::default()
            },
        };
        // A complete batch needs no heal: its report is bookkeeping.
        let complete = change.parsed.as_ref().is_ok_and(|d| d.report.complete);
        let _turn = if complete {
            self.bookkeeping.turn().await
        } else {
            None
        };
        // An object deleted since the cache saw it (retention, or by hand) fails here; the
        // retry finds it gone from the cache and creates it again if it is still wanted.
        apply_status(
            &api,
            &name,
            MIRROR_MANAGER,
            Precondition::None,
            &status,
            "writing the mirrored report",
        )
        .await?;
        Ok(true)
    }

    /// Makes sure the document's object exists, creating it for an incomplete document within
    /// the policy's max age; returns whether it exists. An object of the same name that
    /// mirrors another document is an error that retrying cannot fix.
    async fn ensure_object(
        &self,
        api: &Api<PredictionBatch>,
        name: &str,
        change: &DocChange,
    ) -> Result<bool, Error> {
        let DocChange {
            path,
            doc_id,
            parsed,
            create_time,
            ..
        } = change;
        let cached = ObjectRef::new(name).within(&self.config.namespace);
        if let Some(existing) = self.batches.get(&cached) {
            return mirrors_document(&existing, path).map(|()| true);
        }
        let created = parsed
            .as_ref()
            .ok()
            .and_then(|d| d.report.created_at.as_ref().map(|t| t.0))
            .or(*create_time);
        let complete = parsed.as_ref().is_ok_and(|d| d.report.complete);
        if complete || !self.within_max_age(created) {
            debug!(document = %path, complete, "not mirrored: complete or too old");
            return Ok(false);
        }
        let spec = PredictionBatchSpec {
            batch_id: doc_id.to_owned(),
            game_date: parsed.as_ref().ok().map(|d| d.game_date),
            source: BatchSource::Firestore,
            document_path: Some(path.to_owned()),
            expected_players: None,
            correlation_id: parsed
                .as_ref()
                .ok()
                .and_then(|d| d.correlation_id.clone())
                .or_else(|| change.correlation_id.clone()),
        };
        let mut object = PredictionBatch::new(name, spec);
        object.metadata.namespace = Some(self.config.namespace.clone());
        let created = api
            .create(&PostParams::default(), &object)
            .await
            .unless_conflict("creating the mirrored batch")?;
        match created {
            Some(_) => info!(batch = %name, document = %path, "mirroring a new batch"),
            // Created since the cache was filled (this mirror a moment ago, another replica's,
            // or a person): it must mirror this very document.
            None => {
                let existing = api.get(name).await.at("reading the mirrored batch")?;
                mirrors_document(&existing, path)?;
            }
        }
        Ok(true)
    }

    /// Whether a document created at `created` is young enough to mirror, by the mirror
    /// namespace's policy. A document with no creation time at all is mirrored (to show it).
    fn within_max_age(&self, created: Option<Timestamp>) -> bool {
        let policy = self.policies.spec_for(&self.config.namespace);
        created.is_none_or(|c| Timestamp::now() < c + policy.max_age.as_span())
    }
}

/// Whether `batch`, the object a document's name maps to, mirrors that document; two
/// documents whose ids map to one name cannot both be mirrored, and retrying cannot fix it.
fn mirrors_document(batch: &PredictionBatch, path: &str) -> Result<(), Error> {
    let mirrored = batch.spec.document_path.as_deref();
    if mirrored == Some(path) {
        return Ok(());
    }
    Err(Error::Invalid {
        what: format!("document {path}"),
        message: format!(
            "maps to object {}, which mirrors {}; rename one of the documents",
            batch.name_any(),
            mirrored.unwrap_or("<no document>")
        ),
    })
}

fn string_field(fields: &BTreeMap<String, DocValue>, name: &str) -> Option<String> {
    match fields.get(name) {
        Some(DocValue::Str(s)) => Some(s.clone()),
        _ => None,
    }
}
