//! Memory of recently finished ids: envelope ids that succeeded, so a redelivered duplicate is
//! deleted without calling downstream again, and message ids the acker dead-lettered, so a
//! second delivery is not dead-lettered twice. Bounded in both size and age; each id is held
//! once, shared by the lookup and the eviction order (what an entry costs is measured by
//! `make bench` and stated in docs/performance.md).

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Completed ids in completion order. Entries are only ever appended, so the oldest is at the
/// front and eviction by count or age is a pop from the front.
#[derive(Debug)]
pub struct RecentlyCompleted {
    inner: Mutex<Inner>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug)]
struct Inner {
    at: HashMap<Arc<str>, Instant>,
    order: VecDeque<(Arc<str>, Instant)>,
}

impl RecentlyCompleted {
    /// Remembers at most `capacity` ids, each for `ttl`. Sized for that at once: a table that
    /// keeps forgetting and learning ids fills with tombstones and grows to twice its items
    /// before it can clean up in place, so grown on demand it would reach that size only
    /// after a few turnovers, long after start-up, which a memory graph shows as a late step.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentlyCompleted {
            inner: Mutex::new(Inner {
                at: HashMap::with_capacity(capacity.saturating_mul(2)),
                order: VecDeque::with_capacity(capacity.saturating_add(1)),
            }),
            capacity,
            ttl,
        }
    }

    /// Whether `id` completed within the TTL.
    pub fn contains(&self, id: &str) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.at.get(id).is_some_and(|t| t.elapsed() < self.ttl)
    }

    /// Records `id` as completed now.
    pub fn insert(&self, id: &str) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let id: Arc<str> = Arc::from(id);
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.at.insert(id.clone(), now);
        inner.order.push_back((id, now));
        while inner.order.front().is_some_and(|(_, t)| {
            inner.order.len() > self.capacity || now.duration_since(*t) >= self.ttl
        }) {
            // Only forget the id if this entry is its latest completion. One lookup: the
            // entry API hashes the id once where a get and a remove hash it twice.
            if let Some((old, t)) = inner.order.pop_front()
                && let Entry::Occupied(latest) = inner.at.entry(old)
                && *latest.get() == t
            {
                latest.remove();
            }
        }
    }

    /// Ids remembered now (expired ones may linger until the next insert).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .at
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_capacity_then_forgets_the_oldest() {
        let r = RecentlyCompleted::new(2, Duration::from_secs(60));
        r.insert("a");
        r.insert("b");
        assert!(r.contains("a") && r.contains("b"));
        r.insert("c");
        assert!(!r.contains("a"));
        assert!(r.contains("b") && r.contains("c"));
        assert_eq!(r.len(), 2);
    }

    #[test]
    fn the_memory_is_sized_for_its_turnover_at_once() {
        let r = RecentlyCompleted::new(1000, Duration::from_secs(60));
        let sized = |r: &RecentlyCompleted| {
            let inner = r.inner.lock().expect("lock");
            (inner.at.capacity(), inner.order.capacity())
        };
        let at_start = sized(&r);
        for i in 0..20_000 {
            r.insert(&format!("id-{i}"));
        }
        assert_eq!(r.len(), 1000);
        // The table's capacity counts its tombstones out, so it dips between clean-ups; a
        // reallocation would at least double it.
        let after = sized(&r);
        assert!(
            after.0 <= at_start.0 && after.1 == at_start.1,
            "no growth after turning over 20 times: {at_start:?} → {after:?}"
        );
    }

    #[test]
    fn forgets_after_the_ttl() {
        let r = RecentlyCompleted::new(10, Duration::from_millis(1));
        r.insert("a");
        std::thread::sleep(Duration::from_millis(5));
        assert!(!r.contains("a"));
        r.insert("b");
        assert_eq!(r.len(), 1, "expired entries are dropped on insert");
    }
}
