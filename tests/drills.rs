//! Fault drills on the real API server and both emulators (see `support::drill`): a burst of
//! stalled batches healed through crashes and sink outages.

mod support;

use std::time::Duration;

use support::drill::{Drill, Moments};
use support::proxy::TcpProxy;

/// The controller killed with SIGKILL six times at random moments of its first seconds,
/// while it mirrors and heals the burst, and started again each time.
#[tokio::test]
async fn a_burst_healed_through_six_kills_loses_no_record() {
    let mut moments = Moments::seeded();
    let drill = Drill::prepare("drill-kill", moments.0).await;
    for kill in 1..=6 {
        let controller = drill.start(&format!("killed-{kill}"));
        let after = moments.between(Duration::from_millis(300), Duration::from_millis(4000));
        tokio::time::sleep(after).await;
        drop(controller); // SIGKILL
        eprintln!("kill {kill} after {after:?}");
    }
    let _last = drill.start("survivor");
    let events = drill.settled(240).await;
    drill.assert_end_state(&events).await;
}

/// BigQuery unreachable (a stopped proxy) from before the burst until well after every stall
/// is healed: the heals and the Firestore export go on, and BigQuery gets every record once
/// it is back.
#[tokio::test]
async fn a_bigquery_outage_over_the_whole_burst_delays_its_records_and_loses_none() {
    let moments = Moments::seeded();
    let drill = Drill::prepare("drill-bigquery", moments.0).await;
    let bigquery = TcpProxy::start(&support::emulators().bigquery).await;
    bigquery.stop();
    let _controller = drill.start_with("exporter", &bigquery.host(), &[]);
    drill.only_in("firestore", "bigquery", 120).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    bigquery.resume().await;
    let events = drill.settled(240).await;
    drill.assert_end_state(&events).await;
}

/// The Firestore sink unreachable (a stopped proxy in front of the emulator) over a whole
/// burst of `source: status` stalls, whose heals need only the API server: they go on, and
/// BigQuery has them; Firestore gets every record once it is back.
#[tokio::test]
async fn a_firestore_outage_over_the_whole_burst_delays_its_records_and_loses_none() {
    let moments = Moments::seeded();
    let drill = Drill::prepare_status("drill-firestore", moments.0).await;
    let firestore = TcpProxy::start(&support::emulators().firestore).await;
    let bigquery = support::emulators().bigquery.clone();
    let host = firestore.host();
    let _controller = support::ControllerProcess::start_with(
        &drill.ns.name,
        "exporter",
        &drill.args(&bigquery, &[]),
        &[("FIRESTORE_EMULATOR_HOST", host.as_str())],
    );
    // Connected while Firestore is up, then cut for the whole burst.
    tokio::time::sleep(Duration::from_secs(2)).await;
    firestore.stop();
    drill.stall_status_batches().await;
    drill.only_in("bigquery", "firestore", 120).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    firestore.resume().await;
    let events = drill.settled(240).await;
    drill.assert_end_state(&events).await;
}
