//! Bookkeeping writes: API writes that record what has happened rather than lead to a heal
//! (a batch's status summary, a HealingEvent's export state, the mirrored report of a
//! document that is already complete). While heals are in progress they take turns, a few at
//! a time, so that the heal path (intents, actions, outcomes, Kubernetes Events, and the
//! mirroring of the batches still to heal) does not queue behind them at the API server; they
//! catch up as the heals finish. With no heal in progress they go at once: a turn is a task
//! waiting in memory, and mirroring 10,000 quiet batches must not hold 10,000 of them.
//!
//! Why: a heal of a Firestore batch costs eight API writes, three of them bookkeeping. In the
//! burst benchmark (1,000 batches already stalled at start-up, on a 2-core machine where the
//! API server is the bottleneck) the bookkeeping of early heals took turns with the heal path
//! of later ones, and the last heal was recorded after about 14 s; with at most four
//! bookkeeping writes at a time during the heals, after about 9.5 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Semaphore, SemaphorePermit};

/// Bookkeeping writes at the API server at once while heals are in progress.
pub const IN_FLIGHT: usize = 4;

/// Hands out turns for bookkeeping writes; clones share the turns and the count of heals.
#[derive(Clone, Debug)]
pub struct Bookkeeping {
    turns: Arc<Semaphore>,
    heals: Arc<AtomicUsize>,
}

impl Default for Bookkeeping {
    fn default() -> Self {
        Self::new(IN_FLIGHT)
    }
}

impl Bookkeeping {
    pub fn new(in_flight: usize) -> Self {
        Self {
            turns: Arc::new(Semaphore::new(in_flight.max(1))),
            heals: Arc::default(),
        }
    }

    /// Counts a heal as in progress until the returned guard is dropped.
    pub fn heal_in_progress(&self) -> HealInProgress {
        self.heals.fetch_add(1, Ordering::SeqCst);
        HealInProgress(self.heals.clone())
    }

    /// Waits for a turn while heals are in progress (None: go now); hold it for the duration
    /// of one write.
    pub async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        if self.heals.load(Ordering::SeqCst) == 0 {
            return None;
        }
        // Never closed: Err cannot happen, and would mean going without a turn.
        self.turns.acquire().await.ok()
    }
}

/// A heal in progress, for as long as this lives.
#[derive(Debug)]
pub struct HealInProgress(Arc<AtomicUsize>);

impl Drop for HealInProgress {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn while_a_heal_is_in_progress_a_write_waits_for_one_of_the_turns() {
        let bookkeeping = Bookkeeping::new(2);
        let heal = bookkeeping.heal_in_progress();
        let first = bookkeeping.turn().await;
        let second = bookkeeping.turn().await;
        assert!(first.is_some() && second.is_some());

        let third = tokio::time::timeout(Duration::from_secs(60), bookkeeping.turn()).await;
        assert!(
            third.is_err(),
            "a third write got a turn while two were taken"
        );

        drop(first);
        let third = tokio::time::timeout(Duration::from_millis(1), bookkeeping.turn()).await;
        assert!(
            matches!(third, Ok(Some(_))),
            "no turn after one was given back"
        );
        drop(heal);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_heal_in_progress_every_write_goes_at_once() {
        let bookkeeping = Bookkeeping::new(1);
        let heal = bookkeeping.heal_in_progress();
        let taken = bookkeeping.turn().await;
        assert!(taken.is_some());
        drop(heal);
        // The only turn is still taken, yet with the heal over nothing waits.
        for _ in 0..3 {
            let write = tokio::time::timeout(Duration::from_millis(1), bookkeeping.turn()).await;
            assert!(
                matches!(write, Ok(None)),
                "a write waited with no heal in progress"
            );
        }
    }

    #[tokio::test]
    async fn clones_share_the_turns_and_the_heals() {
        let bookkeeping = Bookkeeping::new(1);
        let clone = bookkeeping.clone();
        let _heal = clone.heal_in_progress();
        let _taken = bookkeeping.turn().await;
        let other = tokio::time::timeout(Duration::from_millis(50), clone.turn()).await;
        assert!(other.is_err(), "a clone had turns or heals of its own");
    }
}
