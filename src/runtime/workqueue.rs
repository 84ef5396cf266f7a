//! A keyed work queue: the latest item per key wins, a key is never worked on twice at once
//! (so an older version cannot overwrite a newer one), and a failed item is retried with
//! capped exponential backoff until it succeeds or a newer version replaces it. The mirror
//! uses it so that a document whose write failed is not forgotten until it next changes
//! (a stalled batch's document does not change).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

struct State<K, V> {
    /// The newest item per key not yet taken by a worker.
    latest: HashMap<K, V>,
    /// Keys a worker is on now.
    in_flight: HashSet<K>,
    /// Consecutive failures per key, for the backoff.
    failures: HashMap<K, u32>,
    /// The push that produced each key's current item: a retry only re-queues an item no
    /// later push has replaced. From one counter, so a number is never reused.
    generation: HashMap<K, u64>,
    pushes: u64,
}

/// The sending side; clone freely.
pub struct WorkQueue<K, V> {
    state: Arc<Mutex<State<K, V>>>,
    ready: mpsc::UnboundedSender<K>,
    /// Set by [`WorkQueue::stop`]: the workers end, and no retry is queued any more.
    stopped: tokio::sync::watch::Sender<bool>,
}

impl<K, V> Clone for WorkQueue<K, V> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            ready: self.ready.clone(),
            stopped: self.stopped.clone(),
        }
    }
}

impl<K, V> WorkQueue<K, V>
where
    K: Clone + Eq + Hash + Send + 'static,
    V: Send + 'static,
{
    /// Starts `workers` tasks that call `work` for each item; an Err schedules a retry.
    pub fn start<F, Fut, E>(workers: usize, work: F) -> Self
    where
        F: Fn(V) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send,
        E: std::fmt::Display,
        V: Clone,
    {
        let (ready, receiver) = mpsc::unbounded_channel::<K>();
        let queue = Self {
            state: Arc::new(Mutex::new(State {
                latest: HashMap::new(),
                in_flight: HashSet::new(),
                failures: HashMap::new(),
                generation: HashMap::new(),
                pushes: 0,
            })),
            ready,
            stopped: tokio::sync::watch::Sender::new(false),
        };
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let work = Arc::new(work);
        for _ in 0..workers.max(1) {
            let (queue, receiver, work) = (queue.clone(), receiver.clone(), work.clone());
            let mut stopped = queue.stopped.subscribe();
            tokio::spawn(async move {
                loop {
                    let next = async { receiver.lock().await.recv().await };
                    let key = tokio::select! {
                        key = next => key,
                        _ = stopped.wait_for(|stop| *stop) => None,
                    };
                    let Some(key) = key else {
                        return;
                    };
                    let Some(item) = queue.take(&key) else {
                        continue;
                    };
                    let result = work(item.clone()).await;
                    queue.finish(key, item, result.is_ok());
                }
            });
        }
        queue
    }

    /// Stops the workers (each after the item it is working on) and the retries: the queue's
    /// owner is done with it (a controller's term ended), and nothing queued is applied.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// Whether [`WorkQueue::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }

    /// Queues `item` for `key`, replacing any not yet taken.
    pub fn push(&self, key: K, item: V) {
        let mut state = self.lock();
        state.pushes += 1;
        let generation = state.pushes;
        state.generation.insert(key.clone(), generation);
        state.latest.insert(key.clone(), item);
        // A key in flight is sent again when its worker finishes.
        if !state.in_flight.contains(&key) {
            let _ = self.ready.send(key);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<K, V>> {
        // A worker that panicked mid-update leaves maps that are still consistent enough.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self, key: &K) -> Option<V> {
        let mut state = self.lock();
        if state.in_flight.contains(key) {
            return None; // its worker re-sends the key when done
        }
        let item = state.latest.remove(key)?;
        state.in_flight.insert(key.clone());
        Some(item)
    }

    fn finish(&self, key: K, item: V, ok: bool) {
        let mut state = self.lock();
        state.in_flight.remove(&key);
        if ok {
            state.failures.remove(&key);
        }
        if state.latest.contains_key(&key) {
            // A newer version arrived meanwhile: it replaces this one, retry or not.
            let _ = self.ready.send(key);
            return;
        }
        if ok {
            state.generation.remove(&key);
            return;
        }
        let generation = state.generation.get(&key).copied();
        let failures = state.failures.entry(key.clone()).or_insert(0);
        *failures += 1;
        let delay = FIRST_RETRY
            .saturating_mul(1 << (*failures - 1).min(10))
            .min(MAX_RETRY);
        drop(state);
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if queue.is_stopped() {
                return;
            }
            let mut state = queue.lock();
            // Only if nothing newer came in the meantime.
            let unchanged = state.generation.get(&key).copied() == generation;
            if unchanged && !state.latest.contains_key(&key) && !state.in_flight.contains(&key) {
                state.latest.insert(key.clone(), item);
                let _ = queue.ready.send(key);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn a_stopped_queue_applies_nothing_more_and_retries_nothing() {
        let runs = Arc::new(AtomicUsize::new(0));
        let counted = runs.clone();
        let queue = WorkQueue::start(2, move |_: u32| {
            let counted = counted.clone();
            async move {
                counted.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>("fails, so it is retried")
            }
        });
        queue.push("a", 1);
        until(|| runs.load(Ordering::SeqCst) >= 1).await;
        queue.stop();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let after_stop = runs.load(Ordering::SeqCst);
        queue.push("b", 2);
        // The retry of "a" would come after 500 ms.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(runs.load(Ordering::SeqCst), after_stop);
        assert!(queue.is_stopped());
    }

    async fn until(mut check: impl FnMut() -> bool) {
        for _ in 0..200 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn the_latest_version_of_each_key_is_processed_and_never_two_at_once() {
        let seen: Arc<Mutex<Vec<(u32, u32)>>> = Arc::default();
        let busy: Arc<Mutex<HashSet<u32>>> = Arc::default();
        let (s, b) = (seen.clone(), busy.clone());
        let queue = WorkQueue::start(4, move |(key, version): (u32, u32)| {
            let (s, b) = (s.clone(), b.clone());
            async move {
                assert!(
                    b.lock().unwrap().insert(key),
                    "key {key} worked on twice at once"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
                b.lock().unwrap().remove(&key);
                s.lock().unwrap().push((key, version));
                Ok::<(), String>(())
            }
        });
        for version in 0..5 {
            for key in 0..3 {
                queue.push(key, (key, version));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        until(|| {
            (0..3).all(|k| {
                seen.lock()
                    .unwrap()
                    .iter()
                    .any(|(key, v)| *key == k && *v == 4)
            })
        })
        .await;
        // Per key, versions were processed in order (never an older after a newer).
        let seen = seen.lock().unwrap().clone();
        for key in 0..3 {
            let versions: Vec<u32> = seen
                .iter()
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| *v)
                .collect();
            assert!(
                versions.windows(2).all(|w| w[0] < w[1]),
                "key {key}: {versions:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_item_is_retried_until_it_succeeds() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let a = attempts.clone();
        let queue = WorkQueue::start(1, move |_: u32| {
            let a = a.clone();
            async move {
                if a.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err("API server unavailable")
                } else {
                    Ok(())
                }
            }
        });
        queue.push("doc", 1);
        tokio::time::timeout(
            Duration::from_secs(5),
            until(|| attempts.load(Ordering::SeqCst) == 3),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert_eq!(
            attempts.load(Ordering::SeqCst),
            3,
            "retried after succeeding"
        );
    }

    #[tokio::test]
    async fn a_newer_version_replaces_a_pending_retry() {
        let seen: Arc<Mutex<Vec<u32>>> = Arc::default();
        let s = seen.clone();
        let queue = WorkQueue::start(1, move |v: u32| {
            let s = s.clone();
            async move {
                s.lock().unwrap().push(v);
                if v == 1 { Err("fails") } else { Ok(()) }
            }
        });
        queue.push("doc", 1);
        until(|| seen.lock().unwrap().len() == 1).await;
        queue.push("doc", 2);
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(
            *seen.lock().unwrap(),
            [1, 2],
            "the stale version was retried over the newer one"
        );
    }
}
