//! Leader election with two controller processes on a real API server: exactly one acts,
//! and when it is killed the other takes over within the lease duration.

mod support;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use pipeline_healer::api::PredictionBatch;
use pipeline_healer::api::batch::BatchState;
use support::status_batch::batch;
use support::{ControllerProcess, TestNamespace, eventually, k8s_events, namespace};

const LEASE_SECONDS: u64 = 4;

fn replica(ns: &TestNamespace, name: &str) -> ControllerProcess {
    let lease = format!("{LEASE_SECONDS}s");
    ControllerProcess::start_with(
        &ns.name,
        name,
        &[
            "--leader-elect",
            "--leader-election-namespace",
            &ns.name,
            "--lease-duration",
            &lease,
        ],
        &[],
    )
}

async fn holder(ns: &TestNamespace) -> Option<String> {
    let lease = ns.api::<Lease>().get("pipeline-healer").await.ok()?;
    lease.spec?.holder_identity.filter(|h| !h.is_empty())
}

async fn auto_completed(ns: &TestNamespace, name: &str) -> bool {
    let pb = ns.api::<PredictionBatch>().get(name).await.ok();
    pb.and_then(|b| b.status).and_then(|s| s.state) == Some(BatchState::AutoCompleted)
}

/// Which replicas published an AutoCompleted Event.
async fn healers(ns: &TestNamespace) -> Vec<String> {
    k8s_events(ns, "AutoCompleted")
        .await
        .into_iter()
        .filter_map(|e| e.reporting_instance)
        .collect()
}

#[tokio::test]
async fn one_replica_acts_and_the_other_takes_over_when_it_dies() {
    let ns = namespace("leader").await;
    let mut a = Some(replica(&ns, "replica-a"));
    let mut b = Some(replica(&ns, "replica-b"));
    let leader = eventually(30, "a replica leads", || holder(&ns)).await;

    let stalled_since = Timestamp::now() - jiff::SignedDuration::from_mins(20);
    batch(&ns, "b1", stalled_since).await;
    eventually(30, "b1 healed", || async {
        auto_completed(&ns, "b1").await.then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        healers(&ns).await,
        std::slice::from_ref(&leader),
        "only the leader acts"
    );

    // Kill the leader (no clean release): the other waits the lease out, then leads.
    let killed_at = Instant::now();
    match leader.as_str() {
        "replica-a" => drop(a.take()),
        _ => drop(b.take()),
    }
    batch(&ns, "b2", stalled_since).await;
    eventually(60, "b2 healed by the other replica", || async {
        auto_completed(&ns, "b2").await.then_some(())
    })
    .await;
    let failover = killed_at.elapsed();
    println!(
        "failover: b2 healed {:.1} s after the leader was killed (lease {LEASE_SECONDS} s)",
        failover.as_secs_f64()
    );
    let successor = holder(&ns).await.expect("a new holder");
    assert_ne!(successor, leader);
    let mut expected = vec![leader, successor];
    expected.sort();
    // The Event is published after the heal's status write, which the wait above saw (CI
    // once listed the Events in between).
    eventually(10, "an AutoCompleted Event from each replica", || async {
        let mut acted = healers(&ns).await;
        acted.sort();
        (acted == expected).then_some(())
    })
    .await;
    // The lease duration plus the successor's cache sync and heal, with room for a loaded
    // machine; a failover that waited for something else would take far longer.
    assert!(
        failover < Duration::from_secs(LEASE_SECONDS * 4),
        "{failover:?}"
    );
    drop((a, b));
}
