//! Shutdown is bounded: a controller sent SIGTERM while a reconcile waits on an API server
//! that accepts connections and never answers (a hung server, SIGSTOPped) exits within
//! `--shutdown-timeout`. A test binary of its own, since the API server is frozen for every
//! test of the binary.

mod support;

use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use support::ControllerProcess;

#[tokio::test]
async fn sigterm_ends_the_process_within_the_shutdown_timeout_whatever_it_waits_on() {
    let ns = support::namespace("shutdown").await;
    support::emulators(); // started before the clock below runs
    // Stalls six seconds from now (the default stallAfter is 15 minutes).
    let last = Timestamp::now() - SignedDuration::from_mins(15) + SignedDuration::from_secs(6);
    let stalls_at = Instant::now() + Duration::from_secs(6);
    support::status_batch::batch(&ns, "b1", last).await;
    let mut controller = ControllerProcess::start_with(
        &ns.name,
        "stopping",
        &[
            "--shutdown-timeout",
            "2s",
            "--batch-collection",
            "shutdown_batches",
        ],
        &[],
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cluster = support::cluster();
    cluster.pause_apiserver();
    // Resumed however the test ends: a frozen API server would hang what runs after.
    struct Resume(&'static support::Cluster);
    impl Drop for Resume {
        fn drop(&mut self) {
            self.0.resume_apiserver();
        }
    }
    let _resume = Resume(cluster);
    // The threshold passes: the heal's first write goes out and gets no answer.
    tokio::time::sleep_until((stalls_at + Duration::from_secs(2)).into()).await;
    let pid = controller.0.id().to_string();
    let sent = Instant::now();
    let term = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(term.success());
    let exit = loop {
        if let Some(status) = controller.0.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            panic!(
                "still running {:?} after SIGTERM (--shutdown-timeout 2s)",
                sent.elapsed()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = sent.elapsed();
    eprintln!("exited {exit} {took:?} after SIGTERM");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        exit.code(),
        Some(3),
        "the exit code of a shutdown cut short"
    );
}
