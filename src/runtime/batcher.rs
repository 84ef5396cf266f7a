//! Gathers items submitted by many concurrent reconciles into batches for one request each:
//! a batch is sent when it is full or when `linger` has passed since its first item (and a
//! slot is free: what arrives meanwhile joins it), and every submitter gets its own item's
//! result back. The exports use it, and so do heals of Firestore batches.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc, oneshot};
use tracing::warn;

/// The result of exporting one item: `Err` carries the message recorded in the event status.
pub type ItemResult = Result<(), crate::decide::export::ExportFailure>;

type Submission<T, R> = (T, oneshot::Sender<R>);

/// Batches items of type `T`; each submitter gets back its own item's `R`.
pub struct Batcher<T, R = ItemResult> {
    tx: mpsc::Sender<Submission<T, R>>,
}

impl<T: Send + 'static, R: Send + 'static> Batcher<T, R> {
    /// Starts the collecting task. `send` gets a batch and returns one result per item, in
    /// order; up to `in_flight` batches are sent at once, so the next one fills meanwhile.
    pub fn start<F, Fut>(max_items: usize, linger: Duration, in_flight: usize, send: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<R>> + Send + 'static,
    {
        let max_items = max_items.max(1);
        let (tx, mut rx) = mpsc::channel::<Submission<T, R>>(max_items * 4);
        let send = Arc::new(send);
        let permits = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                let deadline = tokio::time::Instant::now() + linger;
                while batch.len() < max_items {
                    match tokio::time::timeout_at(deadline, rx.recv()).await {
                        Ok(Some(item)) => batch.push(item),
                        // Linger over, or every submitter gone: send what there is.
                        Ok(None) | Err(_) => break,
                    }
                }
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                // What arrived while every slot was busy goes along, rather than waiting for
                // the batch after (with one slot, a slow send would otherwise leave the next
                // batch holding only what came within `linger`).
                while batch.len() < max_items {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let send = send.clone();
                tokio::spawn(async move {
                    let (items, replies): (Vec<T>, Vec<_>) = batch.into_iter().unzip();
                    let count = items.len();
                    let results = send(items).await;
                    if results.len() != count {
                        // No answer (the submitter's error) rather than someone else's.
                        warn!(
                            expected = count,
                            got = results.len(),
                            "a batch was answered for the wrong number of items"
                        );
                        return;
                    }
                    for (reply, result) in replies.into_iter().zip(results) {
                        // The submitter may have gone (shutdown); its item is retried later.
                        let _ = reply.send(result);
                    }
                    drop(permit);
                });
            }
        });
        Self { tx }
    }

    /// Submits one item and waits for its result; None when the batcher has stopped or its
    /// batch got no answer for it.
    pub async fn submit(&self, item: T) -> Option<R> {
        let (reply, result) = oneshot::channel();
        self.tx.send((item, reply)).await.ok()?;
        result.await.ok()
    }
}

impl<T: Send + 'static> Batcher<T, ItemResult> {
    /// Submits an item to export; no answer is an error, retried later like any other.
    pub async fn export(&self, item: T) -> ItemResult {
        self.submit(item)
            .await
            .unwrap_or_else(|| Err("the exporter gave no answer for this event".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn items_are_batched_up_to_the_limit_and_each_gets_its_own_result() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::start(
            10,
            Duration::from_millis(50),
            2,
            move |items: Vec<u32>| {
                seen.lock().unwrap().push(items.len());
                async move {
                    items
                        .iter()
                        .map(|i| {
                            if i % 7 == 0 {
                                Err(format!("bad {i}").into())
                            } else {
                                Ok(())
                            }
                        })
                        .collect()
                }
            },
        ));
        let results = futures::future::join_all((1..=25u32).map(|i| {
            let b = batcher.clone();
            async move { (i, b.export(i).await) }
        }))
        .await;
        for (i, r) in results {
            if i % 7 == 0 {
                assert_eq!(r, Err(format!("bad {i}").into()));
            } else {
                assert_eq!(r, Ok(()), "item {i}");
            }
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 25);
        assert!(sizes.iter().all(|s| *s <= 10), "{sizes:?}");
        assert!(sizes.len() <= 5, "not batched: {sizes:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn items_arriving_while_the_only_slot_is_busy_go_in_the_next_batch_together() {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let batcher = Arc::new(Batcher::start(
            10,
            Duration::from_millis(20),
            1,
            move |items: Vec<u32>| {
                seen.lock().unwrap().push(items.len());
                async move {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    vec![Ok(()); items.len()]
                }
            },
        ));
        // Item 0 is sent alone; 1-4 arrive 50 ms apart while it is in flight, more than a
        // linger apart from each other.
        let submits = (0..5u32).map(|i| {
            let batcher = batcher.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50 * u64::from(i))).await;
                batcher.export(i).await
            }
        });
        let results = futures::future::join_all(submits).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(*sizes.lock().unwrap(), vec![1, 4]);
    }

    #[tokio::test]
    async fn a_lone_item_is_sent_after_the_linger() {
        let batcher = Batcher::start(
            500,
            Duration::from_millis(20),
            1,
            |items: Vec<u8>| async move { vec![Ok(()); items.len()] },
        );
        let started = std::time::Instant::now();
        assert_eq!(batcher.export(1).await, Ok(()));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn a_sink_that_miscounts_fails_every_item_instead_of_misattributing() {
        // Both arrive well within the linger, so they form one batch of two.
        let batcher = Batcher::start(5, Duration::from_millis(300), 1, |_: Vec<u8>| async move {
            vec![Ok(())]
        });
        let (a, b) = tokio::join!(batcher.export(1), batcher.export(2));
        assert!(a.is_err() && b.is_err(), "{a:?} {b:?}");
    }
}
