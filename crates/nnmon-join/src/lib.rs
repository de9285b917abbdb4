//! The ID join at the heart of `metric`: pairs each true value with its prediction.
//!
//! # Layout
//! - [`Join`]: the state machine. [`Join::offer`] takes one half (a [`Side`], an ID and a
//!   value) and answers with an [`Offer`]: a [`Pair`] ready to be logged, a half left
//!   pending, a duplicate to drop, or the late partner of an evicted half.
//! - [`Join::evict`] ends the wait of halves whose partner never came: those older than the
//!   TTL and, past the pending cap, the oldest ones. They come out as [`Orphan`]s.
//! - [`Fingerprints`]: the bounded memory of IDs already written or evicted, so that a
//!   redelivered message never produces a second row.
//!
//! The module does no I/O and reads no clock: the caller passes the time in milliseconds,
//! which keeps it deterministic under test and lets a restarted service restore pending
//! halves with their original arrival times.

mod fingerprints;

pub use fingerprints::Fingerprints;

use nnmon_proto::MessageId;
use std::collections::{BTreeMap, HashMap};

/// Which queue a half came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// `y_true`, from `features`.
    Truth,
    /// `y_pred`, from `model`.
    Prediction,
}

impl Side {
    /// The side a half's partner comes from.
    pub fn other(self) -> Side {
        match self {
            Side::Truth => Side::Prediction,
            Side::Prediction => Side::Truth,
        }
    }

    /// The queue's name without prefix, as written in `orphans.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Truth => "y_true",
            Side::Prediction => "y_pred",
        }
    }
}

/// One half of an item as it arrives from the broker.
#[derive(Clone, Debug, PartialEq)]
pub struct Half {
    pub side: Side,
    pub id: MessageId,
    pub value: f64,
    /// When `features` published the item, if the producer said so.
    pub published_us: Option<u64>,
}

/// Both halves of an item: one metric row.
#[derive(Clone, Debug, PartialEq)]
pub struct Pair {
    pub id: MessageId,
    pub y_true: f64,
    pub y_pred: f64,
    pub published_us: Option<u64>,
}

impl Pair {
    /// The metric nnmon logs: `|y_true - y_pred|`.
    pub fn absolute_error(&self) -> f64 {
        (self.y_true - self.y_pred).abs()
    }
}

/// A half whose partner did not arrive in time.
#[derive(Clone, Debug, PartialEq)]
pub struct Orphan {
    pub half: Half,
    /// When the half arrived, in the caller's milliseconds.
    pub arrived_ms: u64,
    pub cause: EvictionCause,
}

/// Why a half stopped waiting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EvictionCause {
    /// It waited longer than the TTL.
    Expired,
    /// Too many halves were pending; the oldest went first.
    Capacity,
    /// Its partner came after it had been evicted.
    LatePartner,
}

impl EvictionCause {
    pub fn as_str(self) -> &'static str {
        match self {
            EvictionCause::Expired => "expired",
            EvictionCause::Capacity => "capacity",
            EvictionCause::LatePartner => "late_partner",
        }
    }
}

/// What became of an offered half.
#[derive(Clone, Debug, PartialEq)]
pub enum Offer {
    /// Its partner was waiting: log this row.
    Matched(Pair),
    /// It now waits for its partner.
    Pending,
    /// Its ID was already logged (as a row or as a late partner), or the same side is
    /// already waiting: drop it.
    Duplicate,
    /// Its partner was evicted before it came: log it as an orphan, not as a row.
    Late(Orphan),
}

/// Limits on the join's memory.
#[derive(Clone, Copy, Debug)]
pub struct JoinLimits {
    /// How long a half waits for its partner, in milliseconds.
    pub ttl_ms: u64,
    /// How many halves may wait at once.
    pub max_pending: usize,
    /// How many written (and, separately, evicted) IDs are remembered to absorb duplicates.
    pub remembered: usize,
}

impl Default for JoinLimits {
    fn default() -> Self {
        Self {
            ttl_ms: 5 * 60 * 1000,
            max_pending: 100_000,
            remembered: 250_000,
        }
    }
}

#[derive(Debug)]
struct Waiting {
    half: Half,
    arrived_ms: u64,
    /// Key of this half in the arrival order index.
    seq: u64,
}

/// Pairs halves by ID, whatever order they arrive in. See the crate docs.
#[derive(Debug)]
pub struct Join {
    limits: JoinLimits,
    pending: HashMap<MessageId, Waiting>,
    /// Pending IDs in arrival order, for eviction oldest-first without scanning.
    arrival_order: BTreeMap<u64, MessageId>,
    next_seq: u64,
    written: Fingerprints,
    evicted: Fingerprints,
}

impl Join {
    pub fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            arrival_order: BTreeMap::new(),
            next_seq: 0,
            written: Fingerprints::new(limits.remembered),
            evicted: Fingerprints::new(limits.remembered),
        }
    }

    /// Records an ID as already logged (rebuilding state from the CSV on start).
    pub fn remember_written(&mut self, id: &MessageId) {
        self.written.insert(id);
    }

    /// Records that the `side` half of `id` was evicted (rebuilding state from
    /// `orphans.csv` on start).
    pub fn remember_evicted(&mut self, id: &MessageId, side: Side) {
        self.evicted.insert(&(id.as_str(), side));
    }

    /// Offers one half that arrived at `now_ms`.
    pub fn offer(&mut self, half: Half, now_ms: u64) -> Offer {
        if self.written.contains(&half.id) {
            return Offer::Duplicate;
        }
        if self.evicted.contains(&(half.id.as_str(), half.side)) {
            // Another copy of a half already logged as an orphan.
            return Offer::Duplicate;
        }
        if self
            .evicted
            .contains(&(half.id.as_str(), half.side.other()))
        {
            // Both sides are now accounted for: further copies are plain duplicates.
            self.written.insert(&half.id);
            return Offer::Late(Orphan {
                half,
                arrived_ms: now_ms,
                cause: EvictionCause::LatePartner,
            });
        }
        match self.pending.get(&half.id) {
            Some(waiting) if waiting.half.side == half.side => Offer::Duplicate,
            Some(_) => {
                let Some(waiting) = self.pending.remove(&half.id) else {
                    return Offer::Pending;
                };
                self.arrival_order.remove(&waiting.seq);
                self.written.insert(&half.id);
                let (truth, prediction) = match half.side {
                    Side::Truth => (half, waiting.half),
                    Side::Prediction => (waiting.half, half),
                };
                Offer::Matched(Pair {
                    published_us: truth.published_us.or(prediction.published_us),
                    id: truth.id,
                    y_true: truth.value,
                    y_pred: prediction.value,
                })
            }
            None => {
                let seq = self.next_seq;
                self.next_seq += 1;
                self.arrival_order.insert(seq, half.id.clone());
                self.pending.insert(
                    half.id.clone(),
                    Waiting {
                        half,
                        arrived_ms: now_ms,
                        seq,
                    },
                );
                Offer::Pending
            }
        }
    }

    /// Evicts halves older than the TTL at `now_ms`, then the oldest ones beyond the cap.
    pub fn evict(&mut self, now_ms: u64) -> Vec<Orphan> {
        let mut orphans = Vec::new();
        while let Some((&seq, id)) = self.arrival_order.first_key_value() {
            let Some(waiting) = self.pending.get(id) else {
                self.arrival_order.remove(&seq);
                continue;
            };
            let expired = now_ms.saturating_sub(waiting.arrived_ms) >= self.limits.ttl_ms;
            let over_cap = self.pending.len() > self.limits.max_pending;
            if !expired && !over_cap {
                break;
            }
            let cause = if expired {
                EvictionCause::Expired
            } else {
                EvictionCause::Capacity
            };
            let id = id.clone();
            self.arrival_order.remove(&seq);
            if let Some(waiting) = self.pending.remove(&id) {
                self.evicted.insert(&(id.as_str(), waiting.half.side));
                orphans.push(Orphan {
                    half: waiting.half,
                    arrived_ms: waiting.arrived_ms,
                    cause,
                });
            }
        }
        orphans
    }

    /// Number of halves waiting for their partner.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The halves waiting for their partner, with their arrival times, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = (&Half, u64)> {
        self.arrival_order
            .values()
            .filter_map(|id| self.pending.get(id))
            .map(|w| (&w.half, w.arrived_ms))
    }
}

#[cfg(test)]
mod tests;
