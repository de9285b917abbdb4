use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher, Hash};

/// A bounded set of IDs (or other keys), forgetting the oldest first.
///
/// Keys are stored as 128-bit fingerprints (about 40 bytes each with the set's and the
/// queue's overhead, instead of a heap string), so millions fit in tens of megabytes; two independent 64-bit hashes make a false "seen" — which would
/// drop a real row — as unlikely as a UUID collision.
#[derive(Debug)]
pub struct Fingerprints {
    capacity: usize,
    set: HashSet<u128>,
    order: VecDeque<u128>,
}

fn fingerprint<K: Hash + ?Sized>(key: &K) -> u128 {
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let low = hasher.hash_one((0u8, key));
    let high = hasher.hash_one((1u8, key));
    (u128::from(high) << 64) | u128::from(low)
}

impl Fingerprints {
    /// A set remembering at most `capacity` IDs (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Remembers `key`, forgetting the oldest one when full.
    pub fn insert<K: Hash + ?Sized>(&mut self, key: &K) {
        let print = fingerprint(key);
        if !self.set.insert(print) {
            return;
        }
        self.order.push_back(print);
        if self.order.len() > self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.set.remove(&oldest);
        }
    }

    pub fn contains<K: Hash + ?Sized>(&self, key: &K) -> bool {
        self.set.contains(&fingerprint(key))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}
