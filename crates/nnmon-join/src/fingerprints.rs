use nnmon_proto::MessageId;
use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};

/// A bounded set of IDs, forgetting the oldest first.
///
/// IDs are stored as 128-bit fingerprints (16 bytes instead of a heap string), so millions
/// fit in tens of megabytes; two independent 64-bit hashes make a false "seen" — which would
/// drop a real row — as unlikely as a UUID collision.
#[derive(Debug)]
pub struct Fingerprints {
    capacity: usize,
    set: HashSet<u128>,
    order: VecDeque<u128>,
}

fn fingerprint(id: &MessageId) -> u128 {
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    let low = hasher.hash_one((0u8, id));
    let high = hasher.hash_one((1u8, id));
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

    /// Remembers `id`, forgetting the oldest ID when full.
    pub fn insert(&mut self, id: &MessageId) {
        let print = fingerprint(id);
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

    pub fn contains(&self, id: &MessageId) -> bool {
        self.set.contains(&fingerprint(id))
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}
