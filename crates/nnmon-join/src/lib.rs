//! The ID join at the heart of `metric`: pairs each true value with its prediction.
//!
//! # Layout
//! - [`Join`]: the state machine. [`Join::offer`] takes one half (a [`Side`], an ID and a
//!   value) and answers with an [`Offer`]: a [`Pair`] ready to be logged, a half left
//!   pending, a duplicate to drop, or the late partner of an evicted half.
//! - [`Join::evict`] ends the wait of halves whose partner will not come, and
//!   [`Join::accepts`] says when a side must pause because too many of its halves wait.
//! - [`Fingerprints`]: the bounded memory of IDs already written or evicted, so that a
//!   redelivered message never produces a second row.
//!
//! # When a half gives up waiting
//! Halves are judged by the *partner side's progress*, not by the wall clock, the way
//! interval joins in stream processors use watermarks. Each side's watermark is the newest
//! publish time seen on it (from the message's `published_us`, else from a UUIDv7 ID). A
//! half waits until the other side's watermark has passed its own stream time by the
//! grace: a truth whose prediction was lost is given up once later predictions have moved
//! on, while a model that is down for an hour (a silent side) holds every truth until it
//! catches up. A half's stream time is its publish time, or the newest time already seen
//! on its own side if that is later (an item republished after a reconnect arrives behind
//! newer ones, and its partner arrives equally late).
//!
//! Halves whose ID and body carry no time (another producer's IDs) wait by the wall clock,
//! for the grace. Memory is bounded by backpressure rather than by eviction: once a side
//! has `max_pending` halves waiting, [`Join::accepts`] tells the caller to stop taking that
//! side (its messages stay in the broker) until the other side has brought it below 90 %
//! of that. A paused side can wait forever only when its halves' partners were lost and
//! the other side cannot move either: it is paused too, or silent for a grace of wall
//! clock. Then the paused side's halves that the other side has already passed are given
//! up (`capacity`), and only if that frees nothing, while both sides are paused, the
//! oldest ones.
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

    /// Position in per-side arrays.
    fn index(self) -> usize {
        match self {
            Side::Truth => 0,
            Side::Prediction => 1,
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

impl Half {
    /// When the item was published, in milliseconds: from the body, else from the ID.
    pub fn published_ms(&self) -> Option<u64> {
        self.published_us
            .map(|us| us / 1000)
            .or_else(|| self.id.timestamp_ms())
    }
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
    /// The other side moved on past it by more than the grace (or, for a half that
    /// carries no time, it waited longer than the grace).
    Expired,
    /// Both sides had `max_pending` halves waiting; the oldest went first.
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

/// Limits on the join's patience and memory.
#[derive(Clone, Copy, Debug)]
pub struct JoinLimits {
    /// How far, in milliseconds of publish time, the other side must move past a waiting
    /// half before it is given up; for a half that carries no time, how long it waits by
    /// the wall clock.
    pub grace_ms: u64,
    /// How many halves of one side may wait at once before that side pauses.
    pub max_pending: usize,
    /// How many written (and, separately, evicted) IDs are remembered to absorb duplicates.
    pub remembered: usize,
}

impl Default for JoinLimits {
    fn default() -> Self {
        Self {
            grace_ms: 5 * 60 * 1000,
            max_pending: 100_000,
            remembered: 250_000,
        }
    }
}

/// Where a waiting half is indexed for eviction.
#[derive(Clone, Copy, Debug)]
enum Clock {
    /// Its stream time (ms): it waits for the other side's watermark.
    Stream(u64),
    /// It carries no time: it waits by the wall clock.
    Wall,
}

#[derive(Debug)]
struct Waiting {
    half: Half,
    arrived_ms: u64,
    clock: Clock,
    /// Arrival order, which also makes index keys unique.
    seq: u64,
}

/// The halves of one side waiting for their partner.
#[derive(Debug, Default)]
struct SideQueue {
    /// Timed halves by (stream time, arrival), oldest first.
    by_stream_time: BTreeMap<(u64, u64), MessageId>,
    /// Untimed halves by arrival.
    by_arrival: BTreeMap<u64, MessageId>,
    /// The newest publish time seen on this side (ms).
    watermark: Option<u64>,
    /// When (wall clock, ms) the watermark last moved forward.
    advanced_ms: u64,
    /// Not taking more halves (see [`Join::accepts`]).
    paused: bool,
}

impl SideQueue {
    fn len(&self) -> usize {
        self.by_stream_time.len() + self.by_arrival.len()
    }

    fn remove(&mut self, waiting: &Waiting) {
        match waiting.clock {
            Clock::Stream(time) => self.by_stream_time.remove(&(time, waiting.seq)),
            Clock::Wall => self.by_arrival.remove(&waiting.seq),
        };
    }

    /// The oldest half of this side, timed ones first.
    fn oldest(&self) -> Option<&MessageId> {
        self.by_stream_time
            .values()
            .next()
            .or_else(|| self.by_arrival.values().next())
    }
}

/// Pairs halves by ID, whatever order they arrive in. See the crate docs.
#[derive(Debug)]
pub struct Join {
    limits: JoinLimits,
    pending: HashMap<MessageId, Waiting>,
    sides: [SideQueue; 2],
    next_seq: u64,
    written: Fingerprints,
    evicted: Fingerprints,
}

impl Join {
    pub fn new(limits: JoinLimits) -> Self {
        Self {
            limits,
            pending: HashMap::new(),
            sides: Default::default(),
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

    /// Offers one half that arrived at `now_ms` (wall clock).
    pub fn offer(&mut self, half: Half, now_ms: u64) -> Offer {
        let clock = self.advance_watermark(&half, now_ms);
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
                let Some(waiting) = self.take(&half.id) else {
                    return Offer::Pending;
                };
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
                let queue = &mut self.sides[half.side.index()];
                match clock {
                    Clock::Stream(time) => {
                        queue.by_stream_time.insert((time, seq), half.id.clone())
                    }
                    Clock::Wall => queue.by_arrival.insert(seq, half.id.clone()),
                };
                let side = half.side;
                self.pending.insert(
                    half.id.clone(),
                    Waiting {
                        half,
                        arrived_ms: now_ms,
                        clock,
                        seq,
                    },
                );
                self.refresh_pause(side);
                Offer::Pending
            }
        }
    }

    /// Moves the half's side watermark forward and says how the half would wait. A time
    /// more than the grace ahead of the wall clock is a producer's broken clock: trusting
    /// it would stall the other side's evictions, so such a half waits by the wall clock.
    fn advance_watermark(&mut self, half: &Half, now_ms: u64) -> Clock {
        let Some(published) = half
            .published_ms()
            .filter(|&t| t <= now_ms.saturating_add(self.limits.grace_ms))
        else {
            return Clock::Wall;
        };
        let queue = &mut self.sides[half.side.index()];
        if queue.watermark.is_none_or(|w| published > w) {
            queue.advanced_ms = now_ms;
        }
        let stream_time = published.max(queue.watermark.unwrap_or(0));
        queue.watermark = Some(stream_time);
        Clock::Stream(stream_time)
    }

    /// Removes a waiting half from every index.
    fn take(&mut self, id: &MessageId) -> Option<Waiting> {
        let waiting = self.pending.remove(id)?;
        let side = waiting.half.side;
        self.sides[side.index()].remove(&waiting);
        self.refresh_pause(side);
        Some(waiting)
    }

    /// Pauses `side` at `max_pending` waiting halves and resumes it below 90 % of that, so
    /// that a side near the cap does not flap between the two with every message.
    fn refresh_pause(&mut self, side: Side) {
        let max = self.limits.max_pending;
        let queue = &mut self.sides[side.index()];
        let len = queue.len();
        if queue.paused {
            queue.paused = len >= max - max / 10;
        } else {
            queue.paused = len >= max;
        }
    }

    /// Whether the caller may take more halves of `side`: false once `max_pending` of them
    /// wait, until their partners have brought them below 90 % of it.
    pub fn accepts(&self, side: Side) -> bool {
        !self.sides[side.index()].paused
    }

    /// Says that the caller was away (a restart) until `now_ms`: the time in which the
    /// other side had no chance to make progress does not count as its silence.
    pub fn resume_at(&mut self, now_ms: u64) {
        for queue in &mut self.sides {
            queue.advanced_ms = queue.advanced_ms.max(now_ms);
        }
    }

    /// Gives up the halves whose partner will not come (see the crate docs): those the
    /// other side's watermark has passed by more than the grace, untimed ones older than
    /// the grace at `now_ms`; and, when a full side would otherwise wait forever, the
    /// halves the other side has already passed (their partners were skipped) and, as a
    /// last resort while both sides are full, the oldest.
    pub fn evict(&mut self, now_ms: u64) -> Vec<Orphan> {
        let grace = self.limits.grace_ms;
        let mut doomed = Vec::new();
        for side in [Side::Truth, Side::Prediction] {
            let queue = &self.sides[side.index()];
            if let Some(other_watermark) = self.sides[side.other().index()].watermark {
                doomed.extend(
                    queue
                        .by_stream_time
                        .iter()
                        .take_while(|((time, _), _)| time.saturating_add(grace) < other_watermark)
                        .map(|(_, id)| (id.clone(), EvictionCause::Expired)),
                );
            }
            doomed.extend(
                queue
                    .by_arrival
                    .values()
                    .map_while(|id| self.pending.get(id))
                    .take_while(|waiting| now_ms.saturating_sub(waiting.arrived_ms) >= grace)
                    .map(|waiting| (waiting.half.id.clone(), EvictionCause::Expired)),
            );
        }
        let mut orphans: Vec<Orphan> = doomed
            .into_iter()
            .filter_map(|(id, cause)| self.give_up(&id, cause))
            .collect();
        // A paused side waits for the other to bring its partners. That wait is endless
        // when the other side is paused too, or silent for a grace of wall-clock time (its
        // producer stopped): then give up the paused side's halves that the other side
        // has already passed, furthest behind first; their partners were lost (or are
        // reordered, which a silent or blocked side cannot be doing).
        for side in [Side::Truth, Side::Prediction] {
            let other = &self.sides[side.other().index()];
            let blocked = other.paused || now_ms.saturating_sub(other.advanced_ms) >= grace;
            let Some(passed_before) = other.watermark.filter(|_| blocked) else {
                continue;
            };
            while !self.accepts(side) {
                let queue = &self.sides[side.index()];
                let Some(id) = queue
                    .by_stream_time
                    .iter()
                    .next()
                    .filter(|((time, _), _)| *time < passed_before)
                    .map(|(_, id)| id.clone())
                else {
                    break;
                };
                orphans.extend(self.give_up(&id, EvictionCause::Capacity));
            }
        }
        // Both sides still paused would wait for each other forever: free the side that
        // needs the fewest evictions to move again.
        while !self.accepts(Side::Truth) && !self.accepts(Side::Prediction) {
            let emptier = if self.sides[0].len() <= self.sides[1].len() {
                Side::Truth
            } else {
                Side::Prediction
            };
            let Some(id) = self.sides[emptier.index()].oldest().cloned() else {
                break;
            };
            orphans.extend(self.give_up(&id, EvictionCause::Capacity));
        }
        orphans
    }

    fn give_up(&mut self, id: &MessageId, cause: EvictionCause) -> Option<Orphan> {
        let waiting = self.take(id)?;
        self.evicted.insert(&(id.as_str(), waiting.half.side));
        Some(Orphan {
            half: waiting.half,
            arrived_ms: waiting.arrived_ms,
            cause,
        })
    }

    /// Number of halves waiting for their partner.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Number of halves of `side` waiting for their partner.
    pub fn pending_on(&self, side: Side) -> usize {
        self.sides[side.index()].len()
    }

    /// The halves waiting for their partner, with their arrival times, oldest first.
    pub fn pending(&self) -> Vec<(&Half, u64)> {
        let mut waiting: Vec<&Waiting> = self.pending.values().collect();
        waiting.sort_unstable_by_key(|w| w.seq);
        waiting.iter().map(|w| (&w.half, w.arrived_ms)).collect()
    }
}

#[cfg(test)]
mod tests;
