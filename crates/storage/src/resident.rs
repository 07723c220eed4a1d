//! [`Resident`]: small blobs read whole (manifests, referrers indexes) kept in memory within a
//! byte budget, so that a manifest served again costs no file open, read and close. A stored
//! blob never changes (its name is its digest), so a resident copy is valid for as long as the
//! blob is stored; [`crate::state::State::forget`] drops it with the blob.
//!
//! Eviction is first in, first out: the blobs are small and cheap to read again, and FIFO needs
//! no bookkeeping on a hit, which is the path this exists to make cheap.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use bytes::Bytes;

/// Memory a resident blob is charged beyond its bytes (its slots in the map and the queue, the
/// `Bytes` header and the allocation's own overhead), so that many tiny blobs cannot exceed
/// the budget by their bookkeeping.
const OVERHEAD: usize = 96;

pub(crate) struct Resident<K> {
    /// The bytes and the insertion number (which tells a queue slot of a blob forgotten and
    /// stored again from the current one).
    blobs: HashMap<K, (Bytes, u64)>,
    order: VecDeque<(K, u64)>,
    /// Charged memory of `blobs` (bytes + [`OVERHEAD`] each).
    charged: usize,
    budget: usize,
    /// Blobs larger than this are not kept.
    largest: usize,
    inserted: u64,
}

impl<K: Hash + Eq + Clone> Resident<K> {
    pub(crate) fn new(budget: usize, largest: usize) -> Resident<K> {
        Resident {
            blobs: HashMap::new(),
            order: VecDeque::new(),
            charged: 0,
            budget,
            largest: largest.min(budget.saturating_sub(OVERHEAD)),
            inserted: 0,
        }
    }

    pub(crate) fn get(&self, key: &K) -> Option<Bytes> {
        self.blobs.get(key).map(|(bytes, _)| bytes.clone())
    }

    /// Keeps `bytes` as the blob `key`, evicting the oldest blobs to stay within the budget;
    /// a blob larger than the limit is not kept.
    pub(crate) fn insert(&mut self, key: K, bytes: Bytes) {
        if bytes.len() > self.largest || self.blobs.contains_key(&key) {
            return;
        }
        let cost = bytes.len() + OVERHEAD;
        while self.charged + cost > self.budget {
            let Some((oldest, number)) = self.order.pop_front() else {
                break;
            };
            if self.blobs.get(&oldest).is_some_and(|(_, n)| *n == number) {
                self.remove(&oldest);
            }
        }
        self.inserted += 1;
        self.order.push_back((key.clone(), self.inserted));
        self.blobs.insert(key, (bytes, self.inserted));
        self.charged += cost;
        // Slots of removed blobs stay in the queue until they reach its front; keep the queue
        // within a small multiple of the map however blobs come and go.
        if self.order.len() > 2 * self.blobs.len() + 64 {
            let blobs = &self.blobs;
            self.order
                .retain(|(k, n)| blobs.get(k).is_some_and(|(_, m)| m == n));
        }
    }

    pub(crate) fn remove(&mut self, key: &K) {
        if let Some((bytes, _)) = self.blobs.remove(key) {
            self.charged -= bytes.len() + OVERHEAD;
        }
    }

    #[cfg(test)]
    fn charged(&self) -> usize {
        self.charged
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_within_the_budget_and_evicts_the_oldest_first() {
        let budget = 10 * (100 + OVERHEAD);
        let mut resident = Resident::<u32>::new(budget, 1000);
        for n in 0..25 {
            resident.insert(n, Bytes::from(vec![n as u8; 100]));
            assert!(resident.charged() <= budget);
        }
        for n in 0..15 {
            assert_eq!(resident.get(&n), None, "{n} was among the oldest");
        }
        for n in 15..25 {
            assert_eq!(resident.get(&n), Some(Bytes::from(vec![n as u8; 100])));
        }
    }

    #[test]
    fn does_not_keep_blobs_over_the_limit() {
        let mut resident = Resident::<u32>::new(1 << 20, 1000);
        resident.insert(1, Bytes::from(vec![0; 1001]));
        assert_eq!(resident.get(&1), None);
        assert_eq!(resident.charged(), 0);
        // Nor a limit above the budget.
        let mut tiny = Resident::<u32>::new(200, 1 << 20);
        tiny.insert(2, Bytes::from(vec![0; 150]));
        assert_eq!(tiny.get(&2), None);
    }

    #[test]
    fn a_blob_removed_and_kept_again_is_not_evicted_by_its_old_slot() {
        let budget = 3 * (10 + OVERHEAD);
        let mut resident = Resident::<u32>::new(budget, 100);
        resident.insert(0, Bytes::from_static(b"0123456789"));
        resident.remove(&0);
        assert_eq!(resident.get(&0), None);
        assert_eq!(resident.charged(), 0);
        resident.insert(1, Bytes::from_static(b"1111111111"));
        resident.insert(0, Bytes::from_static(b"0123456789"));
        resident.insert(2, Bytes::from_static(b"2222222222"));
        // Full: the next one evicts key 1 (the oldest live slot), not key 0 by its stale slot.
        resident.insert(3, Bytes::from_static(b"3333333333"));
        assert_eq!(resident.get(&1), None);
        for n in [0, 2, 3] {
            assert!(resident.get(&n).is_some(), "{n} stays");
        }
    }

    #[test]
    fn the_queue_stays_bounded_while_blobs_come_and_go() {
        let mut resident = Resident::<u32>::new(1 << 20, 100);
        for _ in 0..10_000 {
            resident.insert(7, Bytes::from_static(b"x"));
            resident.remove(&7);
        }
        assert!(
            resident.order.len() <= 65,
            "queue: {}",
            resident.order.len()
        );
    }
}
