//! Memory of recently finished ids: envelope ids that succeeded, so a redelivered duplicate is
//! deleted without calling downstream again, and message ids the acker dead-lettered, so a
//! second delivery is not dead-lettered twice. Bounded in both size and age. It keeps a
//! 128-bit keyed digest of each id, not the id: an entry costs the same whatever the id's
//! length, and no id is allocated (what an entry costs is measured by `make bench` and stated
//! in docs/performance.md).

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

/// Completed ids in completion order. Entries are only ever appended, so the oldest is at the
/// front and eviction by count or age is a pop from the front.
#[derive(Debug)]
pub struct RecentlyCompleted {
    inner: Mutex<Inner>,
    keys: [RandomState; 2],
    capacity: usize,
    ttl: Duration,
}

#[derive(Debug)]
struct Inner {
    /// When the memory was made: stamps are nanoseconds since then.
    epoch: Instant,
    /// Completions oldest first. Each has a sequence number, `front` for the first and one
    /// more for each after it.
    order: VecDeque<(Digest, Stamp)>,
    /// The sequence number of `order`'s front.
    front: Seq,
    /// Each remembered id's latest completion, as its sequence number, hashed by its digest:
    /// a slot is 4 bytes where the digest and stamp would be 24, and the table is the part
    /// whose every page is touched, as digests land anywhere in it.
    latest: HashTable<Seq>,
}

/// An id as two SipHash digests under independent random keys. Taking a fresh id for one
/// seen before needs a 128-bit collision: about 10⁻³³ a lookup at the largest capacity,
/// and the keys are this process's, so no producer can aim for one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Digest([u64; 2]);

impl Digest {
    /// A keyed hash already, so its first word is the table's hash as it is.
    fn hash(&self) -> u64 {
        self.0[0]
    }
}

/// A completion's time, in nanoseconds since the memory's epoch.
type Stamp = u64;

/// A completion's place in the order. Wrapping: fewer than 2³² completions are ever
/// remembered at once (the capacity is bounded far below), so differences stay exact.
type Seq = u32;

impl RecentlyCompleted {
    /// Remembers at most `capacity` ids, each for `ttl`. Sized for that at once: a table that
    /// keeps forgetting and learning ids fills with tombstones and grows to twice its items
    /// before it can clean up in place, so grown on demand it would reach that size only
    /// after a few turnovers, long after start-up, which a memory graph shows as a late step.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentlyCompleted {
            inner: Mutex::new(Inner {
                epoch: Instant::now(),
                order: VecDeque::with_capacity(capacity.saturating_add(1)),
                front: 0,
                latest: HashTable::with_capacity(capacity.saturating_mul(2)),
            }),
            keys: [RandomState::new(), RandomState::new()],
            capacity,
            ttl,
        }
    }

    fn digest(&self, id: &str) -> Digest {
        Digest(self.keys.each_ref().map(|k| k.hash_one(id)))
    }

    /// Whether `id` completed within the TTL.
    pub fn contains(&self, id: &str) -> bool {
        let digest = self.digest(id);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = inner.now();
        inner
            .latest
            .find(digest.hash(), |&seq| {
                completion(&inner.order, inner.front, seq).is_some_and(|(d, _)| d == digest)
            })
            .and_then(|&seq| completion(&inner.order, inner.front, seq))
            .is_some_and(|(_, t)| Duration::from_nanos(now.saturating_sub(t)) < self.ttl)
    }

    /// Records `id` as completed now.
    pub fn insert(&self, id: &str) {
        if self.capacity == 0 {
            return;
        }
        let digest = self.digest(id);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = guard.now();
        let Inner {
            order,
            front,
            latest,
            ..
        } = &mut *guard;
        let seq = front.wrapping_add(Seq::try_from(order.len()).unwrap_or(Seq::MAX));
        order.push_back((digest, now));
        let at = |seq| completion(order, *front, seq);
        match latest.entry(
            digest.hash(),
            |&s| at(s).is_some_and(|(d, _)| d == digest),
            |&s| at(s).map_or(0, |(d, _)| d.hash()),
        ) {
            Entry::Occupied(mut e) => *e.get_mut() = seq,
            Entry::Vacant(e) => {
                e.insert(seq);
            }
        }
        while order.front().is_some_and(|&(_, t)| {
            order.len() > self.capacity || Duration::from_nanos(now.saturating_sub(t)) >= self.ttl
        }) {
            // Only forget the id if this entry is its latest completion.
            if let Some((old, _)) = order.pop_front()
                && let Ok(e) = latest.find_entry(old.hash(), |&s| s == *front)
            {
                e.remove();
            }
            *front = front.wrapping_add(1);
        }
    }

    /// Ids remembered now (expired ones may linger until the next insert).
    pub fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latest
            .len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn now(&self) -> Stamp {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// The completion numbered `seq` in an order whose front is numbered `front`, if it is
/// still remembered.
fn completion(order: &VecDeque<(Digest, Stamp)>, front: Seq, seq: Seq) -> Option<(Digest, Stamp)> {
    order.get(seq.wrapping_sub(front) as usize).copied()
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
            (inner.latest.capacity(), inner.order.capacity())
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
    fn an_id_completed_again_is_kept_until_its_latest_completion_is_forgotten() {
        let r = RecentlyCompleted::new(2, Duration::from_secs(60));
        r.insert("a");
        r.insert("b");
        r.insert("a");
        // The first "a" left by count; the second is still within the last two.
        assert!(r.contains("a") && r.contains("b"));
        r.insert("c");
        assert!(!r.contains("b"));
        assert!(r.contains("a") && r.contains("c"));
    }

    #[test]
    fn ids_that_differ_anywhere_are_told_apart() {
        // What the memory keeps is a digest: a fresh id taken for a completed one would be
        // deleted unworked. Ids that share all but one byte, at the start, the middle or the
        // end, and at the longest length the parser accepts.
        let long = "x".repeat(crate::event::MAX_ID_LEN);
        let n = 20_000;
        let r = RecentlyCompleted::new(n * 3, Duration::from_secs(60));
        let variants = |i: usize| {
            let tag = format!("{i:05}");
            [
                format!("{tag}{}", &long[5..]),
                format!("{}{tag}{}", &long[..100], &long[105..]),
                format!("{}{tag}", &long[5..]),
            ]
        };
        for i in (0..n).step_by(2) {
            variants(i).iter().for_each(|id| r.insert(id));
        }
        for i in 0..n {
            for id in variants(i) {
                assert_eq!(r.contains(&id), i % 2 == 0, "id {i}: {}…", &id[..110]);
            }
        }
        assert!(!r.contains("") && !r.contains(&long));
    }

    #[test]
    fn sequence_numbers_wrap_without_losing_an_id() {
        let r = RecentlyCompleted::new(3, Duration::from_secs(60));
        r.inner.lock().expect("lock").front = Seq::MAX - 4;
        let ids: Vec<String> = (0..12).map(|i| format!("id-{i}")).collect();
        let mut completed = Vec::new();
        for i in 0..ids.len() {
            // A new id, then one completed before (kept or already forgotten).
            for id in [&ids[i], &ids[i / 2]] {
                r.insert(id);
                completed.push(id);
            }
            let last_three = &completed[completed.len().saturating_sub(3)..];
            for id in &ids {
                assert_eq!(r.contains(id), last_three.contains(&id), "{id} after {i}");
            }
        }
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
