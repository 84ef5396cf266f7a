//! Bookkeeping writes: API writes that record what has happened rather than lead to a heal
//! (a batch's status summary, a HealingEvent's export state, the mirrored report of a
//! document that is already complete). They take turns, a few at a time, so that under load
//! the heal path (mirroring new batches, intents, actions, outcomes, Kubernetes Events) does
//! not queue behind them at the API server; they catch up once it is quiet.
//!
//! Why: a heal of a Firestore batch costs eight API writes, three of them bookkeeping. In the
//! burst benchmark (1,000 batches already stalled at start-up, on a 2-core machine where the
//! API server is the bottleneck) the bookkeeping of early heals took turns with the heal path
//! of later ones, and the last heal was recorded after about 14 s; with at most four
//! bookkeeping writes at a time, after about 10 s. When the API server is quiet, four at a time
//! still make hundreds of writes a second.

use std::sync::Arc;

use tokio::sync::{Semaphore, SemaphorePermit};

/// Bookkeeping writes at the API server at once.
pub const IN_FLIGHT: usize = 4;

/// Hands out turns for bookkeeping writes; clones share the turns.
#[derive(Clone, Debug)]
pub struct Bookkeeping(Arc<Semaphore>);

impl Default for Bookkeeping {
    fn default() -> Self {
        Self::new(IN_FLIGHT)
    }
}

impl Bookkeeping {
    pub fn new(in_flight: usize) -> Self {
        Self(Arc::new(Semaphore::new(in_flight.max(1))))
    }

    /// Waits for a turn; hold it for the duration of one write. (None only if the semaphore
    /// were closed, which it never is: the write then goes ahead without a turn.)
    pub async fn turn(&self) -> Option<SemaphorePermit<'_>> {
        self.0.acquire().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_write_waits_while_every_turn_is_taken_and_goes_when_one_is_given_back() {
        let bookkeeping = Bookkeeping::new(2);
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
    }

    #[tokio::test]
    async fn clones_share_the_turns() {
        let bookkeeping = Bookkeeping::new(1);
        let clone = bookkeeping.clone();
        let _taken = bookkeeping.turn().await;
        let other = tokio::time::timeout(Duration::from_millis(50), clone.turn()).await;
        assert!(other.is_err(), "a clone had turns of its own");
    }
}
