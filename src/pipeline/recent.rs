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
    /// The longest a run lasts: the TTL over [`RUNS`], in nanoseconds.
    granule: Stamp,
}

#[derive(Debug)]
struct Inner {
    /// When the memory was made: stamps are nanoseconds since then.
    epoch: Instant,
    /// Completions oldest first. Each has a sequence number, `front` for the first and one
    /// more for each after it.
    order: VecDeque<Digest>,
    /// The sequence number of `order`'s front.
    front: Seq,
    /// The completions' times, a run at a time: a stamp per completion would make an entry
    /// half as large again.
    runs: VecDeque<Run>,
    /// Each remembered id's latest completion, as its sequence number, hashed by its digest:
    /// a slot is 4 bytes where the digest would be 16, and the table is the part whose every
    /// page is touched, as digests land anywhere in it.
    latest: HashTable<Seq>,
}

/// Completions made within [`RUNS`]th of the TTL of each other: from sequence number `first`
/// up to the next run's, made from `began` to `ended`. A completion counts as made when its
/// run ended, so an id is remembered for its TTL and at most a [`RUNS`]th more.
#[derive(Debug, Clone, Copy)]
struct Run {
    first: Seq,
    began: Stamp,
    ended: Stamp,
}

/// Runs a TTL is divided into (about as many are kept at once).
const RUNS: u32 = 64;

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
    /// Remembers at most `capacity` ids, each for `ttl` (and at most a 64th more). Sized for
    /// that by its first insert: a table that keeps forgetting and learning ids fills with
    /// tombstones and grows to twice its items before it can clean up in place, so grown on
    /// demand it would reach that size only after a few turnovers, long after start-up,
    /// which a memory graph shows as a late step. A memory never written to (the acker's,
    /// while nothing is dead-lettered) holds nothing.
    pub fn new(capacity: usize, ttl: Duration) -> Self {
        RecentlyCompleted {
            inner: Mutex::new(Inner {
                epoch: Instant::now(),
                order: VecDeque::new(),
                front: 0,
                runs: VecDeque::new(),
                latest: HashTable::new(),
            }),
            keys: [RandomState::new(), RandomState::new()],
            capacity,
            ttl,
            granule: u64::try_from((ttl / RUNS).as_nanos()).unwrap_or(u64::MAX),
        }
    }

    fn digest(&self, id: &str) -> Digest {
        Digest(self.keys.each_ref().map(|k| k.hash_one(id)))
    }

    /// Whether `id` completed within the TTL.
    pub fn contains(&self, id: &str) -> bool {
        self.contains_at(id, None)
    }

    /// [`RecentlyCompleted::contains`] at `now` (tests set the clock), else at the time.
    fn contains_at(&self, id: &str, now: Option<Stamp>) -> bool {
        let digest = self.digest(id);
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = now.unwrap_or_else(|| inner.now());
        inner
            .latest
            .find(digest.hash(), |&seq| inner.digest_at(seq) == Some(digest))
            .and_then(|&seq| inner.made(seq))
            .is_some_and(|made| self.young(now, made))
    }

    /// Records `id` as completed now.
    pub fn insert(&self, id: &str) {
        self.insert_at(id, None);
    }

    /// [`RecentlyCompleted::insert`] at `now` (tests set the clock), else at the time.
    fn insert_at(&self, id: &str, now: Option<Stamp>) {
        if self.capacity == 0 {
            return;
        }
        let digest = self.digest(id);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let now = now.unwrap_or_else(|| guard.now());
        let inner = &mut *guard;
        if inner.order.capacity() == 0 {
            inner.order.reserve_exact(self.capacity.saturating_add(1));
            // Up to RUNS + 2 live, and the new run is pushed before the expired ones go.
            inner.runs.reserve_exact(RUNS as usize + 3);
            // Empty still, so the hasher has nothing to rehash.
            inner.latest.reserve(self.capacity.saturating_mul(2), |_| 0);
        }
        let seq = inner
            .front
            .wrapping_add(Seq::try_from(inner.order.len()).unwrap_or(Seq::MAX));
        inner.order.push_back(digest);
        match inner.runs.back_mut() {
            Some(run) if now.saturating_sub(run.began) < self.granule => run.ended = now,
            _ => inner.runs.push_back(Run {
                first: seq,
                began: now,
                ended: now,
            }),
        }
        let Inner {
            order,
            front,
            latest,
            ..
        } = &mut *inner;
        let at = |seq| digest_at(order, *front, seq);
        match latest.entry(
            digest.hash(),
            |&s| at(s) == Some(digest),
            |&s| at(s).map_or(0, |d| d.hash()),
        ) {
            Entry::Occupied(mut e) => *e.get_mut() = seq,
            Entry::Vacant(e) => {
                e.insert(seq);
            }
        }
        while inner.order.len() > self.capacity {
            inner.forget_front();
        }
        // The current run ended now, so this stops at it.
        while inner
            .runs
            .front()
            .is_some_and(|run| !self.young(now, run.ended))
        {
            let runs = inner.runs.len();
            while inner.runs.len() == runs {
                inner.forget_front();
            }
        }
    }

    /// Whether a completion made at `made` is still remembered at `now`.
    fn young(&self, now: Stamp, made: Stamp) -> bool {
        Duration::from_nanos(now.saturating_sub(made)) < self.ttl
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

    fn digest_at(&self, seq: Seq) -> Option<Digest> {
        digest_at(&self.order, self.front, seq)
    }

    /// When the completion numbered `seq` counts as made: when its run ended.
    fn made(&self, seq: Seq) -> Option<Stamp> {
        let offset = |s: Seq| s.wrapping_sub(self.front) as i32;
        let after = self
            .runs
            .partition_point(|r| offset(r.first) <= offset(seq));
        Some(self.runs.get(after.checked_sub(1)?)?.ended)
    }

    /// Drops the oldest completion, and its id unless the id completed again since; and its
    /// run once the run is all gone (so the runs are empty when the order is).
    fn forget_front(&mut self) {
        let Some(old) = self.order.pop_front() else {
            self.runs.clear();
            return;
        };
        if let Ok(e) = self.latest.find_entry(old.hash(), |&s| s == self.front) {
            e.remove();
        }
        self.front = self.front.wrapping_add(1);
        if self.runs.get(1).is_some_and(|r| r.first == self.front) || self.order.is_empty() {
            self.runs.pop_front();
        }
    }
}

/// The digest of the completion numbered `seq` in an order whose front is numbered `front`,
/// if it is still remembered.
fn digest_at(order: &VecDeque<Digest>, front: Seq, seq: Seq) -> Option<Digest> {
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
    fn the_memory_is_sized_for_its_turnover_by_its_first_insert() {
        let r = RecentlyCompleted::new(1000, Duration::from_secs(60));
        let sized = |r: &RecentlyCompleted| {
            let inner = r.inner.lock().expect("lock");
            (inner.latest.capacity(), inner.order.capacity())
        };
        assert_eq!(sized(&r), (0, 0), "nothing held before an insert");
        r.insert("id-0");
        let at_start = sized(&r);
        assert!(at_start.0 >= 2000 && at_start.1 > 1000, "{at_start:?}");
        for i in 1..20_000 {
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

    /// Seconds as a stamp.
    fn at(secs: f64) -> Option<Stamp> {
        Some((secs * 1e9) as Stamp)
    }

    #[test]
    fn remembers_for_the_ttl_and_at_most_a_64th_more() {
        // TTL 64 s: a run is at most 1 s long, and counts as made when it ended.
        let r = RecentlyCompleted::new(100, Duration::from_secs(64));
        r.insert_at("a", at(0.0));
        r.insert_at("b", at(0.5));
        r.insert_at("c", at(1.0));
        assert!(r.contains_at("a", at(64.4)) && r.contains_at("b", at(64.4)));
        assert!(!r.contains_at("a", at(64.5)) && !r.contains_at("b", at(64.5)));
        assert!(r.contains_at("c", at(64.9)) && !r.contains_at("c", at(65.0)));
        r.insert_at("d", at(64.6));
        assert_eq!(
            r.len(),
            2,
            "a and b are dropped by the insert after they expired"
        );
        assert!(r.contains_at("c", at(64.6)) && r.contains_at("d", at(64.6)));
    }

    #[test]
    fn a_quiet_spell_does_not_stretch_what_came_before_it() {
        let r = RecentlyCompleted::new(100, Duration::from_secs(64));
        r.insert_at("a", at(0.0));
        r.insert_at("b", at(1_000.0));
        assert!(!r.contains_at("a", at(64.0)) && !r.contains_at("a", at(1_000.0)));
        assert!(r.contains_at("b", at(1_000.0)));
        assert_eq!(r.len(), 1);
        // An id completed again lives by its latest completion only.
        r.insert_at("b", at(1_050.0));
        r.insert_at("c", at(1_070.0));
        assert!(r.contains_at("b", at(1_113.9)) && !r.contains_at("b", at(1_114.0)));
        assert_eq!(r.len(), 2);
    }

    proptest::proptest! {
        /// Against a model that keeps every completion's exact time: an id completed within
        /// the last `capacity` completions and less than the TTL ago is remembered; one pushed
        /// out by count, or completed a TTL and a 64th ago or more, is not. In between, either.
        /// Each step completes an id after a pause (short ones make runs of several
        /// completions), then asks about every id at a moment up to 7 s later.
        #[test]
        fn remembers_what_a_model_with_exact_times_says_it_must(
            capacity in 1usize..24,
            steps in proptest::collection::vec(
                (0u8..16, proptest::prop_oneof![0u64..60, 0u64..2_000], 0u64..7_000),
                1..200,
            ),
        ) {
            // TTL 6.4 s: runs of up to 100 ms.
            let ttl = 6_400_000_000;
            let slack = ttl / Stamp::from(RUNS);
            let r = RecentlyCompleted::new(capacity, Duration::from_nanos(ttl));
            let mut log: Vec<(u8, Stamp)> = Vec::new();
            let mut now: Stamp = 0;
            for (id, pause_ms, later_ms) in steps {
                now += pause_ms * 1_000_000;
                r.insert_at(&format!("id-{id}"), Some(now));
                log.push((id, now));
                let kept = &log[log.len().saturating_sub(capacity)..];
                for at in [now, now + later_ms * 1_000_000] {
                    for probe in 0u8..16 {
                        let latest = kept.iter().rev().find(|(i, _)| *i == probe).map(|&(_, t)| t);
                        let remembered = r.contains_at(&format!("id-{probe}"), Some(at));
                        match latest {
                            Some(t) if at - t < ttl => proptest::prop_assert!(
                                remembered, "id-{probe} completed at {t} forgotten at {at}"
                            ),
                            Some(t) if at - t < ttl + slack => {}
                            _ => proptest::prop_assert!(
                                !remembered, "id-{probe} remembered at {at}: {latest:?}"
                            ),
                        }
                    }
                }
                proptest::prop_assert!(r.len() <= capacity);
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
