use super::*;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};

fn id(n: u32) -> MessageId {
    MessageId::Text(format!("id-{n}").into())
}

fn half(side: Side, n: u32, value: f64) -> Half {
    Half {
        side,
        id: id(n),
        value,
        published_us: None,
    }
}

/// A join with this grace and cap, remembering 1 000 IDs.
fn limited(grace_ms: u64, max_pending: usize) -> Join {
    Join::new(JoinLimits {
        grace_ms,
        max_pending,
        remembered: 1000,
    })
}

fn roomy() -> Join {
    Join::new(JoinLimits {
        grace_ms: u64::MAX,
        max_pending: usize::MAX,
        remembered: 1 << 20,
    })
}

#[test]
fn pairs_in_either_order() {
    let mut join = roomy();
    assert_eq!(
        join.offer(half(Side::Prediction, 1, 140.0), 0),
        Offer::Pending
    );
    let Offer::Matched(pair) = join.offer(half(Side::Truth, 1, 151.0), 1) else {
        panic!("expected a match");
    };
    assert_eq!(
        (pair.y_true, pair.y_pred, pair.absolute_error()),
        (151.0, 140.0, 11.0)
    );
    assert_eq!(join.pending_len(), 0);
}

#[test]
fn duplicates_are_absorbed_pending_or_written() {
    let mut join = roomy();
    assert_eq!(join.offer(half(Side::Truth, 1, 1.0), 0), Offer::Pending);
    assert_eq!(join.offer(half(Side::Truth, 1, 1.0), 0), Offer::Duplicate);
    assert!(matches!(
        join.offer(half(Side::Prediction, 1, 2.0), 0),
        Offer::Matched(_)
    ));
    assert_eq!(join.offer(half(Side::Truth, 1, 1.0), 0), Offer::Duplicate);
    assert_eq!(
        join.offer(half(Side::Prediction, 1, 2.0), 0),
        Offer::Duplicate
    );
}

#[test]
fn remembered_ids_are_duplicates_after_a_restart() {
    let mut join = roomy();
    join.remember_written(&id(7));
    assert_eq!(join.offer(half(Side::Truth, 7, 1.0), 0), Offer::Duplicate);
}

#[test]
fn published_time_comes_from_either_half() {
    let mut join = roomy();
    let mut truth = half(Side::Truth, 1, 1.0);
    truth.published_us = Some(99);
    join.offer(half(Side::Prediction, 1, 2.0), 0);
    let Offer::Matched(pair) = join.offer(truth, 0) else {
        panic!("expected a match")
    };
    assert_eq!(pair.published_us, Some(99));
}

#[test]
fn untimed_halves_expire_by_the_wall_clock_and_their_late_partners_too() {
    let mut join = limited(100, 10);
    join.offer(half(Side::Truth, 1, 1.0), 0);
    join.offer(half(Side::Truth, 2, 1.0), 50);
    assert!(join.evict(99).is_empty());
    let orphans = join.evict(100);
    assert_eq!(orphans.len(), 1);
    assert_eq!(
        (orphans[0].half.id.clone(), orphans[0].cause),
        (id(1), EvictionCause::Expired)
    );
    // Another copy of the evicted truth is a duplicate, not a late partner...
    assert_eq!(join.offer(half(Side::Truth, 1, 1.0), 110), Offer::Duplicate);
    // ...and the real partner still is one.
    let Offer::Late(late) = join.offer(half(Side::Prediction, 1, 3.0), 120) else {
        panic!("a late partner is an orphan");
    };
    assert_eq!(late.cause, EvictionCause::LatePartner);
    assert_eq!(
        join.offer(half(Side::Prediction, 1, 3.0), 121),
        Offer::Duplicate
    );
}

#[test]
fn a_full_side_pauses_instead_of_evicting() {
    let mut join = limited(u64::MAX, 2);
    for n in 0..3 {
        join.offer(half(Side::Truth, n, 1.0), u64::from(n));
    }
    assert!(!join.accepts(Side::Truth) && join.accepts(Side::Prediction));
    assert!(
        join.evict(10).is_empty(),
        "one full side is backpressure, not loss"
    );
    // Its partners arriving make room again.
    join.offer(half(Side::Prediction, 0, 2.0), 11);
    join.offer(half(Side::Prediction, 1, 2.0), 12);
    assert!(join.accepts(Side::Truth));
}

#[test]
fn only_two_full_sides_give_up_the_oldest() {
    let mut join = limited(u64::MAX, 2);
    for n in 0..3 {
        join.offer(half(Side::Truth, n, 1.0), u64::from(n));
        join.offer(half(Side::Prediction, 10 + n, 1.0), u64::from(n));
    }
    let evicted: Vec<_> = join
        .evict(10)
        .into_iter()
        .map(|o| (o.half.id, o.cause))
        .collect();
    assert_eq!(
        evicted,
        vec![
            (id(0), EvictionCause::Capacity),
            (id(1), EvictionCause::Capacity)
        ]
    );
    assert!(join.accepts(Side::Truth) && !join.accepts(Side::Prediction));
}

#[test]
fn a_paused_side_resumes_below_ninety_percent_only() {
    let mut join = limited(u64::MAX, 10);
    for n in 0..10 {
        join.offer(half(Side::Truth, n, 1.0), 0);
    }
    assert!(!join.accepts(Side::Truth));
    join.offer(half(Side::Prediction, 0, 1.0), 0);
    assert!(!join.accepts(Side::Truth), "9 of 10: still paused");
    join.offer(half(Side::Prediction, 1, 1.0), 0);
    assert!(join.accepts(Side::Truth), "8 of 10: below 90 %");
}

/// A half published at `ms` milliseconds since the epoch.
fn timed(side: Side, n: u32, ms: u64) -> Half {
    Half {
        published_us: Some(ms * 1000),
        ..half(side, n, 1.0)
    }
}

#[test]
fn a_silent_side_holds_its_partners_whatever_the_wall_clock() {
    let mut join = limited(1_000, usize::MAX);
    let hour = 3_600_000;
    join.offer(timed(Side::Prediction, 0, 0), 0);
    for n in 1..100 {
        join.offer(timed(Side::Truth, n, u64::from(n) * 10), u64::from(n) * 10);
    }
    // The model is down for an hour: nothing expires.
    assert!(join.evict(hour).is_empty());
    // It comes back and catches up: every truth finds its prediction.
    for n in 1..100 {
        let offer = join.offer(timed(Side::Prediction, n, u64::from(n) * 10), hour);
        assert!(matches!(offer, Offer::Matched(_)), "{n}: {offer:?}");
        assert!(join.evict(hour).is_empty());
    }
}

#[test]
fn a_half_is_given_up_once_the_other_side_moved_past_it_by_the_grace() {
    let mut join = limited(1_000, usize::MAX);
    let now = 5_000;
    // Truth 0 (published at 0 s) whose prediction was lost.
    join.offer(timed(Side::Truth, 0, 0), now);
    for n in 1..=10 {
        let t = u64::from(n) * 100;
        join.offer(timed(Side::Truth, n, t), now);
        join.offer(timed(Side::Prediction, n, t), now);
    }
    assert!(
        join.evict(now).is_empty(),
        "predictions reached 1.0 s, not past 0 + grace"
    );
    join.offer(timed(Side::Truth, 11, 1_001), now);
    join.offer(timed(Side::Prediction, 11, 1_001), now);
    let orphans = join.evict(now);
    assert_eq!(orphans.len(), 1);
    assert_eq!(
        (&orphans[0].half.id, orphans[0].cause),
        (&id(0), EvictionCause::Expired)
    );
}

#[test]
fn a_republished_item_waits_from_where_it_arrives_in_the_stream() {
    let mut join = limited(1_000, usize::MAX);
    let now = 10_000;
    for n in 1..=50 {
        join.offer(timed(Side::Truth, n, u64::from(n) * 100), now);
    }
    // Item 0 (published at 0 s) was sent again after a reconnect: its truth arrives after
    // newer ones, and so will its prediction.
    join.offer(timed(Side::Truth, 0, 0), now);
    for n in 1..=50 {
        join.offer(timed(Side::Prediction, n, u64::from(n) * 100), now);
        assert!(
            join.evict(now).is_empty(),
            "item 0 given up before its prediction came"
        );
    }
    assert!(matches!(
        join.offer(timed(Side::Prediction, 0, 0), now),
        Offer::Matched(_)
    ));
}

#[test]
fn a_time_from_a_broken_clock_does_not_stall_eviction() {
    let mut join = limited(1_000, usize::MAX);
    let now = 1_000_000;
    // Published "a day from now": waits by the wall clock instead.
    join.offer(timed(Side::Truth, 0, now + 86_400_000), now);
    assert!(join.evict(now + 999).is_empty());
    assert_eq!(join.evict(now + 1_000).len(), 1);
}

#[test]
fn fingerprints_forget_the_oldest() {
    let mut prints = Fingerprints::new(2);
    for n in 0..3 {
        prints.insert(&id(n));
    }
    assert!(!prints.contains(&id(0)));
    assert!(prints.contains(&id(1)) && prints.contains(&id(2)));
    assert_eq!(prints.len(), 2);
}

/// A stream of deliveries (item, side) and each item's (truth, prediction) values.
type Deliveries = (Vec<(u32, Side)>, HashMap<u32, (f64, f64)>);

fn deliveries() -> impl Strategy<Value = Deliveries> {
    // Items 0..40; each has a truth and a prediction; some sides are missing, some repeated.
    let values = proptest::collection::vec((-1e6f64..1e6, -1e6f64..1e6), 40);
    let plan = proptest::collection::vec((0u32..40, any::<bool>(), 1usize..3), 0..120);
    (values, plan).prop_map(|(values, plan)| {
        let stream = plan
            .into_iter()
            .flat_map(|(n, truth, copies)| {
                let side = if truth { Side::Truth } else { Side::Prediction };
                std::iter::repeat_n((n, side), copies)
            })
            .collect();
        (
            stream,
            values
                .into_iter()
                .enumerate()
                .map(|(i, v)| (i as u32, v))
                .collect(),
        )
    })
}

proptest! {
    #[test]
    fn every_id_seen_on_both_sides_is_emitted_exactly_once(
        (stream, values) in deliveries(),
        shuffle_seed in any::<u64>(),
    ) {
        let mut stream = stream;
        // Any interleaving: a deterministic shuffle driven by the generated seed.
        let mut state = shuffle_seed | 1;
        for i in (1..stream.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            stream.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut join = roomy();
        let mut emitted: HashMap<MessageId, Pair> = HashMap::new();
        for (n, side) in &stream {
            let (t, p) = values[n];
            let value = if *side == Side::Truth { t } else { p };
            if let Offer::Matched(pair) = join.offer(half(*side, *n, value), 0) {
                prop_assert!(emitted.insert(pair.id.clone(), pair).is_none(), "a second row");
            }
        }
        let seen = |side| stream.iter().filter(|(_, s)| *s == side).map(|(n, _)| *n).collect::<HashSet<_>>();
        let (truths, predictions) = (seen(Side::Truth), seen(Side::Prediction));
        let both: HashSet<_> = truths.intersection(&predictions).copied().collect();
        prop_assert_eq!(emitted.len(), both.len());
        for n in &both {
            let pair = &emitted[&id(*n)];
            let (t, p) = values[n];
            prop_assert_eq!((pair.y_true, pair.y_pred), (t, p));
            prop_assert_eq!(pair.absolute_error(), (t - p).abs());
        }
        let pending: HashSet<MessageId> = join.pending().into_iter().map(|(h, _)| h.id.clone()).collect();
        let one_side: HashSet<MessageId> = truths.symmetric_difference(&predictions).map(|n| id(*n)).collect();
        prop_assert_eq!(pending, one_side);
    }

    #[test]
    fn untimed_eviction_never_drops_a_pair_completed_within_the_grace(
        gaps in proptest::collection::vec((0u64..50, 0u64..200), 1..60),
        ttl in 1u64..150,
    ) {
        // Item i's truth arrives at time 10*i, its prediction `gap` later; evictions run often.
        let mut join = Join::new(JoinLimits { grace_ms: ttl, max_pending: usize::MAX, remembered: 1000 });
        let mut events: Vec<(u64, u32, Side)> = Vec::new();
        for (i, (_, gap)) in gaps.iter().enumerate() {
            let start = 10 * i as u64;
            events.push((start, i as u32, Side::Truth));
            events.push((start + gap, i as u32, Side::Prediction));
        }
        events.sort_by_key(|(t, _, _)| *t);
        let mut matched = HashSet::new();
        let mut orphaned = HashSet::new();
        for (now, n, side) in events {
            for orphan in join.evict(now) {
                orphaned.insert(orphan.half.id);
            }
            match join.offer(half(side, n, 1.0), now) {
                Offer::Matched(pair) => { matched.insert(pair.id); }
                Offer::Late(orphan) => { orphaned.insert(orphan.half.id); }
                Offer::Pending => {}
                Offer::Duplicate => prop_assert!(false, "no duplicates were sent"),
            }
        }
        for (i, (_, gap)) in gaps.iter().enumerate() {
            let key = id(i as u32);
            if *gap < ttl {
                prop_assert!(matched.contains(&key), "pair {} within the TTL was dropped", i);
            } else {
                prop_assert!(orphaned.contains(&key) && !matched.contains(&key), "late pair {} must be an orphan", i);
            }
        }
    }
}

proptest! {
    /// Truths in publish order; predictions in publish order but displaced by less than the
    /// grace (model replicas), arbitrarily late (outages), some lost. Whatever the wall clock
    /// does, every item with both halves is a row, and a half is given up only once the
    /// other side has moved past it by the grace.
    #[test]
    fn watermark_eviction_never_drops_a_pair_whose_partner_comes(
        lost in proptest::collection::vec(proptest::bool::weighted(0.1), 1..80),
        displacement in proptest::collection::vec(0u64..9, 80),
        prediction_lag in 0usize..80,
        wall_step in 0u64..10_000_000,
    ) {
        let grace = 100;
        // Item i is published at 10·i ms: a displacement of less than 10 items stays within the grace.
        let items = lost.len();
        let mut join = Join::new(JoinLimits { grace_ms: grace, max_pending: usize::MAX, remembered: 1000 });
        let mut predictions: Vec<(u64, u32)> = (0..items)
            .filter(|&i| !lost[i])
            .map(|i| (10 * i as u64 + 10 * displacement[i], i as u32))
            .collect();
        predictions.sort_unstable();
        let mut events: Vec<Half> = (0..items).map(|i| timed(Side::Truth, i as u32, 10 * i as u64)).collect();
        let lag = prediction_lag.min(events.len());
        let mut merged = events.split_off(lag);
        let mut early: Vec<Half> = events;
        // The first `lag` truths come before any prediction; then truths and predictions alternate.
        let mut predictions = predictions.into_iter().map(|(_, i)| timed(Side::Prediction, i, 10 * u64::from(i)));
        let mut rest = Vec::new();
        for truth in merged.drain(..) {
            rest.push(truth);
            rest.extend(predictions.next());
        }
        rest.extend(predictions);
        early.extend(rest);
        let mut matched = HashSet::new();
        // The wall clock starts after every publish time and runs at any speed.
        let mut wall = 1_000_000;
        for half in early {
            wall += wall_step;
            let (side, n) = (half.side, half.id.clone());
            match join.offer(half, wall) {
                Offer::Matched(pair) => { matched.insert(pair.id); }
                Offer::Late(orphan) => prop_assert!(false, "late partner {:?} of {:?}", side, orphan.half.id),
                Offer::Pending | Offer::Duplicate => {}
            }
            for orphan in join.evict(wall) {
                let i: usize = orphan.half.id.as_str().trim_start_matches("id-").parse().expect("n");
                prop_assert!(lost[i], "item {} had both halves but was given up ({:?})", i, n);
            }
        }
        let expected = lost.iter().filter(|l| !**l).count();
        prop_assert_eq!(matched.len(), expected);
    }
}

/// Truths whose predictions were deleted fill the truth side; predictions of later items
/// (whose truths wait unread behind the pause) fill the prediction side. The stale truths,
/// which the predictions have passed, are the ones to give up, never a prediction whose
/// truth is still coming.
#[test]
fn two_full_sides_give_up_the_halves_the_other_side_passed() {
    let mut join = limited(60_000, 10);
    let now = 1_000_000;
    // A whole batch is taken once a side accepts: the truth side overshoots its cap.
    for n in 0..12 {
        join.offer(timed(Side::Truth, n, 1_000 + u64::from(n)), now);
    }
    for n in 100..110 {
        join.offer(timed(Side::Prediction, n, 2_000 + u64::from(n)), now);
    }
    assert!(!join.accepts(Side::Truth) && !join.accepts(Side::Prediction));
    let given_up = join.evict(now);
    assert!(!given_up.is_empty());
    assert!(
        given_up
            .iter()
            .all(|o| o.half.side == Side::Truth && o.cause == EvictionCause::Capacity),
        "{given_up:?}"
    );
    assert!(join.accepts(Side::Truth));
    // The truths of the waiting predictions now come in, and every one is a row.
    for n in 100..110 {
        let offer = join.offer(timed(Side::Truth, n, 2_000 + u64::from(n)), now);
        assert!(matches!(offer, Offer::Matched(_)), "{n}: {offer:?}");
    }
}

/// A full side waits for the other; when the other falls silent for a grace (its producer
/// stopped), the halves it had already passed are given up, so the paused side is read
/// again and the other side's waiting halves find their partners.
#[test]
fn a_full_side_is_freed_once_the_other_is_silent_for_a_grace() {
    let mut join = limited(60_000, 10);
    let now = 1_000_000;
    for n in 0..10 {
        join.offer(timed(Side::Truth, n, 1_000 + u64::from(n)), now);
    }
    join.offer(timed(Side::Prediction, 50, 5_000), now);
    assert!(!join.accepts(Side::Truth));
    assert!(
        join.evict(now + 59_999).is_empty(),
        "silent for less than the grace"
    );
    let given_up = join.evict(now + 60_000);
    assert_eq!(given_up.len(), 2, "down to 90 % of the cap: {given_up:?}");
    assert!(join.accepts(Side::Truth));
    assert!(matches!(
        join.offer(timed(Side::Truth, 50, 5_000), now + 60_001),
        Offer::Matched(_)
    ));
}
