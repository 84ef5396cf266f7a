//! Fault drills' common parts: a burst of stalled Firestore batches and the end state every
//! drill checks in all three stores: exactly one HealingEvent per stall, final and
//! succeeded; every healed document naming its event's healing id; each id once in Firestore
//! and (by distinct id) in BigQuery. A failing drill prints its seed (`PH_DRILL_SEED` replays
//! it) and the ids that diverge.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use kube::api::ListParams;
use pipeline_healer::api::HealingEvent;
use pipeline_healer::api::event::{ExportState, Outcome};
use pipeline_healer::decide::heal::outcome_of;
use pipeline_healer::decide::naming::object_name_for_document;

use super::firestore_batch::{BatchDoc, doc, put};
use super::sinks::Sinks;
use super::{ControllerProcess, TestNamespace, firestore_db};

/// Stalls per drill (the issue asks for at least 200).
pub const STALLS: usize = 200;

/// A small seeded generator (splitmix64): the drill's random moments, replayable by seed.
pub struct Moments(pub u64);

impl Moments {
    /// Seeded from `PH_DRILL_SEED`, else from the clock; the seed is printed either way.
    pub fn seeded() -> Self {
        let seed = std::env::var("PH_DRILL_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
        eprintln!("drill seed: {seed} (PH_DRILL_SEED={seed} replays it)");
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in [low, high).
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = (high - low).as_millis() as u64;
        low + Duration::from_millis(self.next() % span.max(1))
    }
}

/// Where a drill's batches keep their progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Batches {
    /// Firestore documents, mirrored (`docs` are document ids).
    Firestore,
    /// The objects' status (`docs` are object names).
    Status,
}

/// One drill's namespace, sinks and stalled batches.
pub struct Drill {
    pub ns: TestNamespace,
    pub sinks: Sinks,
    pub docs: Vec<String>,
    batches: Batches,
    seed_note: String,
}

impl Drill {
    /// A namespace, its sinks (dataset and table created), and `STALLS` documents at 46 of
    /// 50, stalled half an hour ago.
    pub async fn prepare(name: &str, seed: u64) -> Self {
        Self::prepare_spread(name, seed, Duration::ZERO).await
    }

    /// As [`Drill::prepare`], the documents crossing their stall thresholds (the default
    /// policy's 15 minutes) one after another over `spread`, from 5 s after this returns;
    /// all at once, long ago, when `spread` is zero.
    pub async fn prepare_spread(name: &str, seed: u64, spread: Duration) -> Self {
        let ns = super::namespace(name).await;
        let sinks = Sinks::for_namespace(&ns);
        sinks.create_dataset().await;
        sinks.create_table(super::events_table_schema()).await;
        sinks.create_outcomes_table().await;
        let db = firestore_db().await;
        let docs: Vec<String> = (0..STALLS)
            .map(|i| format!("batch_2026-11-24_{i:03}"))
            .collect();
        let first = Timestamp::now() - SignedDuration::from_mins(15) + SignedDuration::from_secs(5);
        for (i, id) in docs.iter().enumerate() {
            let last_progress = if spread.is_zero() {
                Timestamp::now() - SignedDuration::from_mins(30)
            } else {
                let offset = spread.mul_f64(i as f64 / STALLS as f64);
                first + SignedDuration::try_from(offset).expect("a short spread")
            };
            put(
                &db,
                &sinks.batch_collection,
                id,
                &doc(id, 46, last_progress),
            )
            .await;
        }
        Self {
            ns,
            sinks,
            docs,
            batches: Batches::Firestore,
            seed_note: format!("drill seed {seed}"),
        }
    }

    /// A namespace and its sinks, ready for `STALLS` `source: status` batches, which
    /// [`Drill::stall_status_batches`] creates (the burst).
    pub async fn prepare_status(name: &str, seed: u64) -> Self {
        let ns = super::namespace(name).await;
        let sinks = Sinks::for_namespace(&ns);
        sinks.create_dataset().await;
        sinks.create_table(super::events_table_schema()).await;
        sinks.create_outcomes_table().await;
        let docs = (0..STALLS).map(|i| format!("b{i:03}")).collect();
        Self {
            ns,
            sinks,
            docs,
            batches: Batches::Status,
            seed_note: format!("drill seed {seed}"),
        }
    }

    /// Creates the status batches, each stalled half an hour ago at 9 of 10.
    pub async fn stall_status_batches(&self) {
        use futures::StreamExt;
        let last = Timestamp::now() - SignedDuration::from_mins(30);
        futures::stream::iter(&self.docs)
            .for_each_concurrent(16, |name| async move {
                super::status_batch::batch(&self.ns, name, last).await;
            })
            .await;
    }

    /// Whether batch `id` is complete, the healing id it names, and its object's name.
    async fn healed_by(&self, id: &str) -> (bool, Option<String>, String) {
        match self.batches {
            Batches::Firestore => {
                let db = firestore_db().await;
                let stored: BatchDoc =
                    super::firestore_batch::get(&db, &self.sinks.batch_collection, id).await;
                let named = stored.auto_completion_healing_id;
                (stored.is_complete, named, object_name_for_document(id))
            }
            Batches::Status => {
                let batch = self
                    .ns
                    .api::<pipeline_healer::api::PredictionBatch>()
                    .get(id)
                    .await
                    .expect("read the batch");
                let status = batch.status.unwrap_or_default();
                let complete =
                    status.state == Some(pipeline_healer::api::batch::BatchState::AutoCompleted);
                (complete, status.last_healing_event, id.to_owned())
            }
        }
    }

    /// `run` flags: both sinks (BigQuery at `bigquery_host`), a short bound on abandoned
    /// heals so the drill settles what a crash left open within seconds, and `more`.
    pub fn args(&self, bigquery_host: &str, more: &[&str]) -> Vec<String> {
        let mut args = self.sinks.args_via(bigquery_host);
        args.extend(["--abandoned-heal-after", "3s"].map(str::to_owned));
        args.extend(more.iter().map(|a| (*a).to_owned()));
        args
    }

    /// A controller exporting to both sinks as the emulators serve them.
    pub fn start(&self, instance: &str) -> ControllerProcess {
        self.start_with(instance, &super::emulators().bigquery, &[])
    }

    /// A controller reaching BigQuery at `bigquery_host`, with `more` flags.
    pub fn start_with(
        &self,
        instance: &str,
        bigquery_host: &str,
        more: &[&str],
    ) -> ControllerProcess {
        ControllerProcess::start_with(
            &self.ns.name,
            instance,
            &self.args(bigquery_host, more),
            &[],
        )
    }

    pub async fn events(&self) -> Vec<HealingEvent> {
        self.ns
            .api::<HealingEvent>()
            .list(&ListParams::default())
            .await
            .expect("list events")
            .items
    }

    /// Waits until every stall has an event that `up` has and `down` does not (`down`'s
    /// outage covers the whole burst); the events, one per stall.
    pub async fn only_in(&self, up: &str, down: &str, secs: u64) -> Vec<HealingEvent> {
        let what = format!("every stall healed and in {up} only");
        let events = super::eventually(secs, &what, || async {
            let events = self.events().await;
            let in_up_only = events
                .iter()
                .filter(|e| exported(e, up) && !exported(e, down))
                .count();
            (in_up_only == self.docs.len()).then_some(events)
        })
        .await;
        assert_eq!(
            events.len(),
            self.docs.len(),
            "{}: one event per stall",
            self.seed_note
        );
        events
    }

    /// Waits until every stall has a final event exported to both sinks.
    pub async fn settled(&self, secs: u64) -> Vec<HealingEvent> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let events = self.events().await;
            let open: Vec<&str> = events
                .iter()
                .filter(|e| !(exported(e, "firestore") && exported(e, "bigquery")))
                .map(|e| e.spec.healing_id.as_str())
                .collect();
            if events.len() >= self.docs.len() && open.is_empty() {
                return events;
            }
            if tokio::time::Instant::now() > deadline {
                let pending: Vec<String> = events
                    .iter()
                    .filter(|e| outcome_of(e) == Outcome::Pending)
                    .map(|e| e.spec.healing_id.clone())
                    .collect();
                panic!(
                    "{}: not settled after {secs} s: {} events for {} stalls; unexported: \
                     {open:?}; without an outcome: {pending:?}",
                    self.seed_note,
                    events.len(),
                    self.docs.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// The end state in all three stores.
    pub async fn assert_end_state(&self, events: &[HealingEvent]) {
        let note = &self.seed_note;
        // Kubernetes: one event per stall, final and succeeded.
        let mut by_batch: BTreeMap<&str, Vec<&HealingEvent>> = BTreeMap::new();
        for event in events {
            by_batch
                .entry(event.spec.target.name.as_str())
                .or_default()
                .push(event);
        }
        let not_one: Vec<(&str, Vec<&str>)> = by_batch
            .iter()
            .filter(|(_, evs)| evs.len() != 1)
            .map(|(b, evs)| (*b, evs.iter().map(|e| e.spec.healing_id.as_str()).collect()))
            .collect();
        assert!(
            not_one.is_empty(),
            "{note}: batches without exactly one event: {not_one:?}"
        );
        let unsucceeded: Vec<(&str, Outcome)> = events
            .iter()
            .filter(|e| outcome_of(e) != Outcome::Succeeded)
            .map(|e| (e.spec.healing_id.as_str(), outcome_of(e)))
            .collect();
        assert!(
            unsucceeded.is_empty(),
            "{note}: events not Succeeded: {unsucceeded:?}"
        );

        // The batches: every one healed, naming its event.
        let mut diverging = Vec::new();
        for id in &self.docs {
            let (complete, named, object) = self.healed_by(id).await;
            let event = by_batch.get(object.as_str()).and_then(|e| e.first());
            if !complete
                || named.is_none()
                || named.as_deref() != event.map(|e| e.spec.healing_id.as_str())
            {
                diverging.push((id.clone(), named, event.map(|e| e.spec.healing_id.clone())));
            }
        }
        assert!(
            diverging.is_empty(),
            "{note}: batches (id, healed by, event): {diverging:?}"
        );

        // The sinks: each id once in Firestore, each id in BigQuery.
        let ids: BTreeSet<String> = events.iter().map(|e| e.spec.healing_id.clone()).collect();
        let documents = self.sinks.firestore_documents().await;
        let in_firestore: BTreeSet<String> =
            documents.iter().map(|d| d.healing_id.clone()).collect();
        assert_eq!(
            documents.len(),
            in_firestore.len(),
            "{note}: an id twice in Firestore"
        );
        assert_eq!(
            in_firestore.symmetric_difference(&ids).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{note}: Firestore and Kubernetes differ"
        );
        let in_bigquery: BTreeSet<String> = self
            .sinks
            .bigquery_rows()
            .await
            .into_iter()
            .map(|r| r.healing_id)
            .collect();
        assert_eq!(
            in_bigquery.symmetric_difference(&ids).collect::<Vec<_>>(),
            Vec::<&String>::new(),
            "{note}: BigQuery and Kubernetes differ"
        );
    }
}

/// Whether `sink` has `event`.
pub fn exported(event: &HealingEvent, sink: &str) -> bool {
    event
        .status
        .as_ref()
        .and_then(|s| s.exports.get(sink))
        .is_some_and(|x| x.state == ExportState::Exported)
}
