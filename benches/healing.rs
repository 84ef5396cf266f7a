//! Stalled-batch healing at scale, on the local API server and the Firestore emulator, with
//! the release binary as the controller process. Prints `BENCH <name> <value> <unit>` lines.
//!
//! - burst: documents already stalled when the controller starts; time until every one is
//!   healed and recorded (its batch's AutoCompleted Event seen).
//! - steady: live batches mirrored; the controller's idle CPU and peak RSS with them; then
//!   200 stalls crossing their thresholds at 20 per second, with each heal's latency
//!   from its threshold instant to its batch's AutoCompleted Event seen (p50, p99). Beside
//!   them, the emulator's own time for a write to the listened collection, which every heal
//!   commit pays before anything of the controller's (see `listened_write_ms`).
//!
//! - burst_api_writes_per_heal: the API server's own count of the writes (creates, updates,
//!   patches, applies) of the controller's kinds and of Events during the Firestore burst,
//!   divided by the heals; a figure no machine's noise moves.
//!
//! - turnover: 10,000 batches mirrored and completed (their objects removed after a 1 s
//!   retention, then their documents), then 10,000 more: the controller's RSS after each round
//!   (`steady_rss_after_turnover_mib` is the second, held to 10 % above the first), since
//!   what the mirror keeps per document must go with the batch.
//!
//! Sizes: PH_BENCH_BURST (default 1000), PH_BENCH_BATCHES (default 10000),
//! PH_BENCH_TURNOVER (default 10000).

mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bench, size};
use firestore::FirestoreDb;
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Api;
use kube::ResourceExt;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use pipeline_healer::api::PredictionBatch;
use pipeline_healer::decide::naming::object_name_for_document;
use pipeline_healer::sink::firestore_commit::commit_each;
use serde_json::{Value, json};
use support::{ControllerProcess, firestore_db, namespace};

const EXPECTED: usize = 50;
const STALL_RATE_PER_SECOND: usize = 20;
const STEADY_STALLS: usize = 200;
/// Writes timed to measure the emulator's answer to a write into the listened collection.
const LISTENED_WRITE_PROBES: usize = 5;

/// Figures of the controller process, from /proc.
struct Usage(u32);

impl Usage {
    /// Peak resident set size (VmHWM), MiB.
    fn peak_rss_mib(&self) -> f64 {
        self.status_mib("VmHWM:")
    }

    /// Resident set size now (VmRSS), MiB.
    fn rss_mib(&self) -> f64 {
        self.status_mib("VmRSS:")
    }

    /// A kB figure of /proc/PID/status, in MiB.
    fn status_mib(&self, field: &str) -> f64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0)).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    }

    /// User + system CPU time so far, seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<&str> = after.split_whitespace().collect();
        let ticks: f64 = fields.get(11).zip(fields.get(12)).map_or(0.0, |(u, s)| {
            u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)
        });
        ticks / clock_ticks_per_second()
    }
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

fn batch_doc(id: &str, done: usize, updated_at: Timestamp) -> Value {
    json!({
        "batch_id": id, "game_date": "2026-11-24", "expected_players": EXPECTED,
        "completed_players": (0..done).map(|p| format!("player{p}")).collect::<Vec<_>>(),
        "failed_players": ["lebronjames"], "is_complete": false,
        "created_at": (Timestamp::now() - SignedDuration::from_hours(1)).to_string(),
        "updated_at": updated_at.to_string(),
    })
}

/// Writes documents in Commits of 500. (A Commit, not a BatchWrite: the emulator counts a
/// BatchWrite as one write per document, and resends a listened collection after each.)
async fn write_all(db: &FirestoreDb, collection: &str, docs: Vec<(String, Value)>) {
    for chunk in docs.chunks(500) {
        let written = commit_each(db, chunk, |(id, body), writes| {
            db.fluent()
                .update()
                .in_col(collection)
                .document_id(id)
                .object(body)
                .add_to_transaction(writes)
                .map(|_| ())
        })
        .await;
        assert!(written.iter().all(Result::is_ok), "{written:?}");
    }
}

fn auto_completed(event: &K8sEvent) -> bool {
    event.reason.as_deref() == Some("AutoCompleted")
}

fn has_state(batch: &PredictionBatch) -> bool {
    batch.status.as_ref().and_then(|s| s.state).is_some()
}

/// Waits until `n` objects pass `done`, and returns each with the instant it was seen to. It
/// watches rather than lists: listing every object every 200 ms (10,000 batches) would load
/// the API server whose throughput is measured.
async fn watch_until<K>(
    api: Api<K>,
    n: usize,
    limit: Duration,
    done: fn(&K) -> bool,
) -> Vec<(K, Instant)>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
{
    let mut passed = BTreeMap::new();
    let changes = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut changes = std::pin::pin!(changes);
    let deadline = tokio::time::sleep(limit);
    let mut deadline = std::pin::pin!(deadline);
    while passed.len() < n {
        tokio::select! {
            change = changes.next() => match change {
                Some(Ok(object)) if done(&object) => {
                    passed.entry(object.name_any()).or_insert((object, Instant::now()));
                }
                Some(_) => {}
                None => panic!("the watch ended"),
            },
            () = &mut deadline => {
                panic!("{} of {n} {} done after {limit:?}", passed.len(), K::kind(&Default::default()));
            }
        }
    }
    passed.into_values().collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Resources whose writes `burst_api_writes_per_heal` counts: the controller's kinds and
/// Events (core and events.k8s.io share the resource name). Leases (the election renews on
/// a timer) and ConfigMaps (per namespace, not per heal) are left out.
const COUNTED_RESOURCES: [&str; 5] = [
    "predictionbatches",
    "healingevents",
    "phaseruns",
    "healingpolicies",
    "events",
];

/// The API server's count of writes of [`COUNTED_RESOURCES`] so far, from its own
/// `apiserver_request_total` (every answer, including conflicts: each is a write sent).
async fn api_writes(client: &kube::Client) -> f64 {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .expect("metrics request");
    let text = client
        .request_text(request)
        .await
        .expect("the API server's /metrics");
    text.lines()
        .filter_map(|line| {
            let (labels, value) = line
                .strip_prefix("apiserver_request_total{")?
                .split_once("} ")?;
            let label = |key: &str| {
                labels.split(',').find_map(|pair| {
                    pair.strip_prefix(key)?
                        .strip_prefix("=\"")?
                        .strip_suffix('"')
                })
            };
            let write = matches!(label("verb")?, "CREATE" | "UPDATE" | "PATCH" | "APPLY");
            let counted = COUNTED_RESOURCES.contains(&label("resource")?);
            (write && counted).then(|| value.trim().parse::<f64>().ok())?
        })
        .sum()
}

/// Waits until the API server's write count has not moved for `quiet` (the exports and
/// outcome records after the last heal settle), at most `limit`; the count then.
async fn settled_api_writes(client: &kube::Client, quiet: Duration, limit: Duration) -> f64 {
    let start = Instant::now();
    let mut last = api_writes(client).await;
    loop {
        tokio::time::sleep(quiet).await;
        let now = api_writes(client).await;
        if now == last || start.elapsed() > limit {
            return now;
        }
        last = now;
    }
}

async fn burst(n: usize) {
    let ns = namespace("bench-burst").await;
    let db = firestore_db().await;
    let collection = ns.own_name("bench");
    let stalled = Timestamp::now() - SignedDuration::from_mins(20);
    let docs = (0..n).map(|i| {
        let id = format!("batch_2026-11-24_{:010}", 1_795_000_000 + i);
        let body = batch_doc(&id, EXPECTED * 92 / 100, stalled);
        (id, body)
    });
    write_all(&db, &collection, docs.collect()).await;

    let client = support::cluster().client().await;
    let writes_before = api_writes(&client).await;
    let start = Instant::now();
    let process = ControllerProcess::start(&ns.name, &collection, "bench");
    watch_until(
        ns.api::<K8sEvent>(),
        n,
        Duration::from_secs(600),
        auto_completed,
    )
    .await;
    bench(
        &format!("burst_{n}_stalled_all_healed"),
        start.elapsed().as_secs_f64(),
        "s",
    );
    bench(
        &format!("burst_{n}_controller_cpu"),
        Usage(process.0.id()).cpu_seconds(),
        "s",
    );
    let writes_after =
        settled_api_writes(&client, Duration::from_secs(3), Duration::from_secs(120)).await;
    bench(
        "burst_api_writes_per_heal",
        (writes_after - writes_before) / n as f64,
        "writes",
    );
}

/// The same burst with `source: status` batches: no Firestore in the path, so this is the
/// controller and the API server alone.
async fn burst_status(n: usize) {
    let ns = namespace("bench-burst-status").await;
    let api = ns.api::<PredictionBatch>();
    let stalled = Timestamp::now() - SignedDuration::from_mins(20);
    futures::stream::iter(0..n)
        .for_each_concurrent(16, |i| {
            let api = api.clone();
            async move {
                let name = format!("b{i:05}");
                let batch: PredictionBatch = serde_json::from_value(json!({
                    "metadata": {"name": name},
                    "spec": {"batchId": format!("batch_2026-11-24_{i}"), "gameDate": "2026-11-24",
                             "source": "status", "expectedPlayers": EXPECTED},
                }))
                .expect("batch");
                api.create(&PostParams::default(), &batch)
                    .await
                    .expect("create batch");
                let report = json!({
                    "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "PredictionBatch",
                    "status": {"report": {
                        "completed": EXPECTED * 92 / 100,
                        "failing": {"feature_store_timeout": EXPECTED - EXPECTED * 92 / 100},
                        "lastProgressTime": stalled.to_string(),
                    }},
                });
                api.patch_status(
                    &name,
                    &PatchParams::apply("worker").force(),
                    &Patch::Apply(&report),
                )
                .await
                .expect("report progress");
            }
        })
        .await;

    let start = Instant::now();
    let process = ControllerProcess::start(&ns.name, "bench_unused", "bench");
    watch_until(
        ns.api::<K8sEvent>(),
        n,
        Duration::from_secs(600),
        auto_completed,
    )
    .await;
    bench(
        &format!("burst_{n}_status_source_stalled_all_healed"),
        start.elapsed().as_secs_f64(),
        "s",
    );
    bench(
        &format!("burst_{n}_status_source_controller_cpu"),
        Usage(process.0.id()).cpu_seconds(),
        "s",
    );
}

/// The median time the emulator takes to answer a one-document write while the controller
/// listens to the collection. The emulator answers only after resending the listener every
/// document the listen target matches (a RESET, then all of them, after each write), where
/// Firestore sends the changed document alone; so each heal commit costs at least this, and
/// a heal that arrives during one waits for it first. The writes are quiet batches' progress,
/// written again (the last ids: no stall is among them). They also warm the emulator's
/// resend, which gets faster over its first few dozen (about 430 ms at 10,000 documents at
/// first, 250 ms later), as steady traffic would have.
async fn listened_write_ms(db: &FirestoreDb, collection: &str, ids: &[String]) -> f64 {
    let mut times = Vec::new();
    for id in ids.iter().rev().take(LISTENED_WRITE_PROBES) {
        let quiet = batch_doc(id, EXPECTED * 70 / 100, Timestamp::now());
        let started = Instant::now();
        write_all(db, collection, vec![(id.clone(), quiet)]).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    percentile(&times, 50.0)
}

async fn steady(n: usize) {
    let ns = namespace("bench-steady").await;
    let db = firestore_db().await;
    let collection = ns.own_name("bench");
    let ids: Vec<String> = (0..n)
        .map(|i| format!("batch_2026-11-24_{:010}", 1_796_000_000 + i))
        .collect();
    // Live and quiet: 70 % done, progressing, far from any threshold during the run.
    let quiet = ids.iter().map(|id| {
        (
            id.clone(),
            batch_doc(id, EXPECTED * 70 / 100, Timestamp::now()),
        )
    });
    write_all(&db, &collection, quiet.collect()).await;

    let start = Instant::now();
    let process = ControllerProcess::start(&ns.name, &collection, "bench");
    let controller = Usage(process.0.id());
    watch_until(
        ns.api::<PredictionBatch>(),
        n,
        Duration::from_secs(900),
        has_state,
    )
    .await;
    bench(
        &format!("steady_{n}_batches_mirrored"),
        start.elapsed().as_secs_f64(),
        "s",
    );

    // Idle: nothing changes, so nothing should run.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (cpu0, t0) = (controller.cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_secs(20)).await;
    let idle = (controller.cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() * 100.0;
    bench(&format!("steady_{n}_idle_cpu"), idle, "percent");
    bench(
        &format!("steady_{n}_peak_rss_after_mirroring"),
        controller.peak_rss_mib(),
        "MiB",
    );

    let listened_write = listened_write_ms(&db, &collection, &ids).await;
    bench(
        &format!("steady_{n}_listened_write_p50"),
        listened_write,
        "ms",
    );

    // Stalls crossing their thresholds at 20 per second: the documents are written in one
    // Commit, each with its last progress 15 min before its threshold, the first threshold 10 s
    // after the write (so the listen stream has delivered them all) and the others 50 ms apart.
    // (One Commit: the emulator resends the whole collection to the listener after each write.
    // A write per stall, or a BatchWrite of them all, cost about 300 ms of resending each at
    // 10,000 documents, and held the mirror, and so the stalls, to about 3 per second.)
    let stall_after = SignedDuration::from_mins(15);
    let stall_count = STEADY_STALLS.min(n);
    let cadence = Duration::from_millis(1000 / STALL_RATE_PER_SECOND as u64);
    // Watching from before the write, so each Event is seen when it is written.
    let recorded = tokio::spawn(watch_until(
        ns.api::<K8sEvent>(),
        stall_count,
        Duration::from_secs(300),
        auto_completed,
    ));
    let lead = Duration::from_secs(10);
    let (first_threshold, first_instant) = (Timestamp::now() + lead, Instant::now() + lead);
    let mut thresholds = HashMap::new();
    let mut stalls = Vec::new();
    for (i, id) in ids.iter().take(stall_count).enumerate() {
        let offset = cadence * u32::try_from(i).expect("a few hundred stalls");
        thresholds.insert(object_name_for_document(id), first_instant + offset);
        let last_progress = first_threshold + offset - stall_after;
        stalls.push((
            id.clone(),
            batch_doc(id, EXPECTED * 92 / 100, last_progress),
        ));
    }
    write_all(&db, &collection, stalls).await;
    // From the threshold instant to the batch's AutoCompleted Event seen by a watch: the
    // Event is written after the document and the HealingEvent's outcome, so this is healed
    // and recorded, and it includes the watch's delivery.
    let recorded = recorded.await.expect("the Event watch");
    let mut latencies: Vec<f64> = recorded
        .iter()
        .map(|(event, seen)| {
            let batch = event.regarding.as_ref().and_then(|r| r.name.clone());
            let threshold = thresholds[&batch.expect("the Event names its batch")];
            // Negative: healed before its threshold, which must never happen.
            if *seen >= threshold {
                (*seen - threshold).as_secs_f64() * 1000.0
            } else {
                -(threshold - *seen).as_secs_f64() * 1000.0
            }
        })
        .collect();
    bench(
        &format!("steady_{n}_healed_before_threshold"),
        latencies.iter().filter(|ms| **ms < 0.0).count() as f64,
        "batches",
    );
    latencies.sort_by(f64::total_cmp);
    bench(
        &format!("steady_{n}_heal_latency_p50"),
        percentile(&latencies, 50.0),
        "ms",
    );
    bench(
        &format!("steady_{n}_heal_latency_p99"),
        percentile(&latencies, 99.0),
        "ms",
    );
    bench(
        &format!("steady_{n}_heal_latency_max"),
        latencies.last().copied().unwrap_or(f64::NAN),
        "ms",
    );
    bench(
        &format!("steady_{n}_peak_rss"),
        controller.peak_rss_mib(),
        "MiB",
    );
}

/// One round of turnover: `ids` mirrored while incomplete, then completed, until their
/// objects are removed and the mirror's sweep has run.
async fn turnover_round(
    ns: &support::TestNamespace,
    db: &FirestoreDb,
    collection: &str,
    ids: &[String],
) {
    let live = ids.iter().map(|id| {
        (
            id.clone(),
            batch_doc(id, EXPECTED * 70 / 100, Timestamp::now()),
        )
    });
    write_all(db, collection, live.collect()).await;
    let batches = ns.api::<PredictionBatch>();
    let names: std::collections::BTreeSet<String> =
        ids.iter().map(|id| object_name_for_document(id)).collect();
    let mirrored = |b: &PredictionBatch| has_state(b);
    let seen = watch_until(
        batches.clone(),
        ids.len(),
        Duration::from_secs(900),
        mirrored,
    )
    .await;
    assert!(
        seen.iter()
            .filter(|(b, _)| names.contains(&b.name_any()))
            .count()
            >= ids.len() / 2
    );
    let complete = ids.iter().map(|id| {
        let mut doc = batch_doc(id, EXPECTED, Timestamp::now());
        doc["is_complete"] = json!(true);
        (id.clone(), doc)
    });
    write_all(db, collection, complete.collect()).await;
    // Every object of the round removed after the 1 s retention.
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let left = batches
            .list_metadata(&Default::default())
            .await
            .expect("list batches")
            .items
            .iter()
            .filter(|b| names.contains(&b.name_any()))
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} objects of the round left"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    // The round's documents go too, so each round's collection is the same size: the
    // emulator resends the whole listened collection after every write, and a collection
    // twice as large would be measured instead of what the controller keeps.
    for chunk in ids.chunks(500) {
        let deleted = commit_each(db, chunk, |id, writes| {
            db.fluent()
                .delete()
                .from(collection)
                .document_id(id)
                .add_to_transaction(writes)
                .map(|_| ())
        })
        .await;
        assert!(deleted.iter().all(Result::is_ok), "{deleted:?}");
    }
    // The mirror's sweep runs every minute.
    tokio::time::sleep(Duration::from_secs(75)).await;
}

async fn turnover(n: usize) {
    let ns = namespace("bench-turnover").await;
    let policy: pipeline_healer::api::HealingPolicy = serde_json::from_value(json!({
        "apiVersion": "healing.pipeline.dev/v1alpha1", "kind": "HealingPolicy",
        "metadata": {"name": "default"}, "spec": {"retention": "1s"}
    }))
    .unwrap();
    ns.api::<pipeline_healer::api::HealingPolicy>()
        .create(&PostParams::default(), &policy)
        .await
        .expect("create the policy");
    let db = firestore_db().await;
    let collection = ns.own_name("turnover");
    let process = ControllerProcess::start(&ns.name, &collection, "bench-turnover");
    let controller = Usage(process.0.id());
    let round = |r: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("batch_2026-11-24_r{r}_{i:06}"))
            .collect()
    };
    turnover_round(&ns, &db, &collection, &round(1)).await;
    let first = controller.rss_mib();
    bench("turnover_rss_after_first_round_mib", first, "MiB");
    turnover_round(&ns, &db, &collection, &round(2)).await;
    let second = controller.rss_mib();
    bench("steady_rss_after_turnover_mib", second, "MiB");
    bench(
        "steady_rss_turnover_growth",
        (second / first - 1.0) * 100.0,
        "percent",
    );
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let burst_size = size("PH_BENCH_BURST", 1000);
    burst(burst_size).await;
    burst_status(burst_size).await;
    steady(size("PH_BENCH_BATCHES", 10_000)).await;
    turnover(size("PH_BENCH_TURNOVER", 10_000)).await;
}
