//! Per-key async locks: two events for the same reservation never run at once in this
//! process. Entries exist only while someone holds or waits for them, so memory stays bounded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// A map of key → async mutex, cleaned up as guards drop.
#[derive(Debug, Default, Clone)]
pub(crate) struct KeyedLocks {
    map: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

/// Held while working on one key; dropping it lets the next waiter in (in arrival order).
#[derive(Debug)]
pub(crate) struct KeyGuard {
    guard: Option<OwnedMutexGuard<()>>,
    key: String,
    map: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

impl KeyedLocks {
    /// Waits for `key` (behind earlier waiters) and holds it until the guard drops.
    pub(crate) async fn lock(&self, key: &str) -> KeyGuard {
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(key.to_string()).or_default().clone()
        };
        let guard = mutex.lock_owned().await;
        KeyGuard {
            guard: Some(guard),
            key: key.to_string(),
            map: self.map.clone(),
        }
    }

    /// Keys currently held or waited for.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is held or waited for (memory is back to nothing).
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for KeyGuard {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Release first, then drop the entry if nobody else holds a reference to its mutex
        // (the map's own reference is the one left).
        self.guard.take();
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_key_and_entries_are_removed() {
        let locks = KeyedLocks::default();
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
}
