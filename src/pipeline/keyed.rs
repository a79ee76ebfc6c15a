//! Per-key async locks: two events for the same reservation never run at once in this
//! process. A key is an entry while someone holds or waits for it, so memory stays bounded.
//!
//! Every event takes two keys (its message's and its reservation's) from whichever runtime
//! thread runs it, so an uncontended lock is kept to one short critical section on one of many
//! shards, allocating nothing: the entry is a keyed 64-bit hash of the key, not a copy of it
//! (two keys sharing a hash, about 2⁻⁶⁴ a pair, only wait for each other), and a key nobody
//! waits for has no line of waiters. (What one map behind one lock cost, with a key copied
//! and an async mutex allocated per lock: docs/performance.md.)

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use tokio::sync::oneshot;

/// Shards of the map: with two runtime threads taking keys at random, two at once on one
/// shard is rare.
const SHARDS: usize = 32;

/// A map of key → holder and waiters, cleaned up as guards drop.
#[derive(Debug)]
pub(crate) struct KeyedLocks {
    keys: RandomState,
    shards: Box<[Shard]>,
}

/// A shard on a cache line of its own, so that two threads on neighbouring shards do not pass
/// a line between them.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Shard(Mutex<HashTable<Held>>);

/// A key held, and who waits for it, first come first.
#[derive(Debug)]
struct Held {
    hash: u64,
    waiters: VecDeque<oneshot::Sender<()>>,
}

/// Held while working on one key; dropping it hands the key to the next waiter (in arrival
/// order).
#[derive(Debug)]
pub(crate) struct KeyGuard<'a> {
    locks: &'a KeyedLocks,
    hash: u64,
}

/// A waiter's place in a key's line. Dropped after the key was handed to it (its task
/// cancelled in between), it hands the key on.
struct Turn<'a> {
    locks: &'a KeyedLocks,
    hash: u64,
    handed: Option<oneshot::Receiver<()>>,
}

impl Default for KeyedLocks {
    fn default() -> Self {
        KeyedLocks {
            keys: RandomState::new(),
            shards: (0..SHARDS).map(|_| Shard::default()).collect(),
        }
    }
}

impl KeyedLocks {
    /// Waits for `key` (behind earlier waiters) and holds it until the guard drops.
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard<'_> {
        let hash = self.keys.hash_one(key);
        let waiting = match self.shard(hash).entry(hash, |h| h.hash == hash, |h| h.hash) {
            Entry::Vacant(free) => {
                free.insert(Held {
                    hash,
                    waiters: VecDeque::new(),
                });
                None
            }
            Entry::Occupied(mut held) => {
                let (tx, rx) = oneshot::channel();
                held.get_mut().waiters.push_back(tx);
                Some(rx)
            }
        };
        if let Some(rx) = waiting {
            let mut turn = Turn {
                locks: self,
                hash,
                handed: Some(rx),
            };
            if let Some(rx) = turn.handed.as_mut() {
                // An error would mean the sender went without sending, which `release` never
                // does while this receiver lives.
                let _ = rx.await;
            }
            // Ours now: the guard hands it on.
            turn.handed = None;
        }
        KeyGuard { locks: self, hash }
    }

    /// The shard of a key's hash, locked. Its middle bits: the table places by the low ones
    /// and tells entries apart by the top ones.
    fn shard(&self, hash: u64) -> MutexGuard<'_, HashTable<Held>> {
        self.shards[(hash >> 32) as usize % SHARDS]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands the key of `hash` to its next waiter still waiting, or frees it.
    fn release(&self, hash: u64) {
        let mut shard = self.shard(hash);
        let Ok(mut held) = shard.find_entry(hash, |h| h.hash == hash) else {
            return;
        };
        while let Some(next) = held.get_mut().waiters.pop_front() {
            // Fails only when that waiter is gone (its task cancelled): then the one after.
            if next.send(()).is_ok() {
                return;
            }
        }
        held.remove();
    }

    /// Keys currently held or waited for.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }

    /// Whether no key is held or waited for (memory is back to nothing).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.locks.release(self.hash);
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(mut rx) = self.handed.take() {
            // No hand-over after this; one made before it is taken and passed on.
            rx.close();
            if rx.try_recv().is_ok() {
                self.locks.release(self.hash);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_entries_are_removed() {
        let locks = Arc::new(KeyedLocks::default());
        let g = locks.lock("r1").await;
        let other = locks.lock("r2").await;
        let locks2 = locks.clone();
        let waiter = tokio::spawn(async move {
            let _g = locks2.lock("r1").await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "second lock on r1 must wait");
        drop(g);
        waiter.await.expect("waiter");
        drop(other);
        assert!(locks.is_empty());
    }

    /// Waiters get the key in the order they asked for it.
    #[tokio::test]
    async fn waiters_are_let_in_in_arrival_order() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.lock("r1").await;
        let (order_tx, mut order) = tokio::sync::mpsc::unbounded_channel();
        let mut waiters = Vec::new();
        for i in 0..5 {
            let (locks, order_tx) = (locks.clone(), order_tx.clone());
            waiters.push(tokio::spawn(async move {
                let _g = locks.lock("r1").await;
                order_tx.send(i).expect("order");
                tokio::task::yield_now().await;
            }));
            // Each waiter queued before the next is spawned.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        for w in waiters {
            w.await.expect("waiter");
        }
        drop(order_tx);
        let mut got = Vec::new();
        while let Some(i) = order.recv().await {
            got.push(i);
        }
        assert_eq!(got, [0, 1, 2, 3, 4]);
        assert!(locks.is_empty());
    }

    /// A waiter cancelled while it waits, or after the key was handed to it but before its
    /// task ran again, neither keeps the key nor loses it: the next waiter gets it.
    #[tokio::test]
    async fn a_cancelled_waiter_passes_the_key_on() {
        let locks = Arc::new(KeyedLocks::default());
        let holder = locks.lock("r1").await;

        // Cancelled while waiting.
        let gone = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _g = locks.lock("r1").await;
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        gone.abort();
        let _ = gone.await;

        // Handed the key, then dropped before it is polled again.
        let mut handed = Box::pin(locks.lock("r1"));
        assert!(futures::poll!(handed.as_mut()).is_pending());
        let last = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _g = locks.lock("r1").await;
            }
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        drop(holder);
        drop(handed);

        tokio::time::timeout(Duration::from_secs(5), last)
            .await
            .expect("the last waiter gets the key")
            .expect("waiter");
        assert!(locks.is_empty());
    }

    /// Many tasks on many keys at once on two threads: one holder per key at any time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_two_holders_of_one_key() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let locks = Arc::new(KeyedLocks::default());
        let holders: Arc<Vec<AtomicUsize>> =
            Arc::new((0..8).map(|_| AtomicUsize::new(0)).collect());
        let mut tasks = Vec::new();
        for t in 0..64 {
            let (locks, holders) = (locks.clone(), holders.clone());
            tasks.push(tokio::spawn(async move {
                for i in 0..200 {
                    let k = (t + i) % 8;
                    let _g = locks.lock(&format!("r{k}")).await;
                    assert_eq!(
                        holders[k].fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders of r{k}"
                    );
                    tokio::task::yield_now().await;
                    holders[k].fetch_sub(1, Ordering::SeqCst);
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        assert!(locks.is_empty());
    }
}
