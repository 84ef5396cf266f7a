//! Fault drill: the API server stopped for longer than the lease during a burst, with two
//! replicas under leader election, and started again (etcd kept). A test binary of its own,
//! since stopping the API server stops it for every test of the binary. Both replicas must
//! still run at the end: the one that lost the lease goes back to standby in its process.

mod support;

use std::time::{Duration, Instant};

use jiff::Timestamp;
use support::drill::{Drill, Moments};

/// The replicas' lease: the bound on healing resuming after the API server returns.
const LEASE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn healing_resumes_within_a_lease_of_the_api_servers_return_and_loses_no_record() {
    let moments = Moments::seeded();
    // The stalls cross their thresholds over 40 s, so the outage falls inside the burst.
    let drill = Drill::prepare_spread("drill-apiserver", moments.0, Duration::from_secs(40)).await;
    let bigquery = support::emulators().bigquery.clone();
    let flags = [
        "--leader-elect",
        "--leader-election-namespace",
        drill.ns.name.as_str(),
        "--lease-duration",
        "5s",
    ];
    let mut a = drill.start_with("replica-a", &bigquery, &flags);
    let mut b = drill.start_with("replica-b", &bigquery, &flags);

    // Stopped as soon as the burst is under way, for three leases.
    support::eventually(120, "the first heals", || async {
        (drill.events().await.len() >= 10).then_some(())
    })
    .await;
    let before = drill.events().await.len();
    eprintln!(
        "{before} of {} stalls healed before the outage",
        drill.docs.len()
    );
    assert!(
        before < drill.docs.len(),
        "the burst ended before the outage; nothing to resume"
    );
    let cluster = support::cluster();
    cluster.stop_apiserver();
    std::thread::sleep(3 * LEASE);
    let started = Timestamp::now();
    cluster.start_apiserver();
    // Ready as the start script saw it; the replicas may have reached it a moment earlier.
    let ready = Timestamp::now();
    let back = Instant::now();

    // A heal recorded after the restart (creation times are whole seconds).
    let resumed = support::eventually(60, "a heal after the API server's return", || async {
        drill
            .events()
            .await
            .iter()
            .filter_map(|e| e.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .filter(|t| t.as_second() >= started.as_second())
            .min()
    })
    .await;
    let waited = resumed.as_second() - ready.as_second();
    eprintln!(
        "API server ready {:.1} s after its start; healing resumed {waited} s after it was ready (seen after {:?})",
        ready.duration_since(started).as_secs_f64(),
        back.elapsed()
    );
    assert!(
        waited <= LEASE.as_secs() as i64,
        "healing resumed {waited} s after the API server's return; the lease is {LEASE:?}"
    );
    let events = drill.settled(240).await;
    drill.assert_end_state(&events).await;
    // The replica that lost the lease stands by in its process, ready to lead again: with no
    // kubelet to restart it (or a crash-loop backoff), an exit would leave one replica.
    for (name, replica) in [("a", &mut a), ("b", &mut b)] {
        let exited = replica.0.try_wait().expect("poll the replica");
        assert_eq!(exited, None, "replica {name} exited");
    }
}
