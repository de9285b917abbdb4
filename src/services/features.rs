//! `nnmon features`: the source. Picks diabetes rows, gives each item a UUIDv7, and
//! publishes its features to `features` and its true value to `y_true`.
//!
//! An item counts as sent once the broker has confirmed both messages. Items whose
//! confirms were lost with a connection are published again, with the same ID, on the
//! next one (`metric` drops the duplicates this may create).
//!
//! Items are sent closed loop (`--delay` after each one is handed over) or open loop
//! (`--rate`, or a scenario's load: item i is due at a fixed time, and carries that time
//! as its publish time, so a pipeline that slows down is measured from when the item
//! should have gone, not from when the source got round to it).

use crate::cli::FeaturesArgs;
use crate::services::{Topology, now_us};
use crate::supervisor::supervise;
use crate::telemetry::{StatusClock, Telemetry};
use anyhow::{Context, Result};
use nnmon_broker::{Broker, Publisher, message_properties};
use nnmon_model::{Sample, diabetes};
use nnmon_observe::Counter;
use nnmon_proto::{FeaturesMessage, MessageId, ValueMessage};
use nnmon_scenario::{DataStats, Injector, Plan, Scenario};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

/// One item: a data set row (drift injections applied) under a fresh ID.
#[derive(Clone, Copy, Debug)]
struct Item {
    id: Uuid,
    /// Its place in the stream (0-based), as the schedule and the injections count; sent
    /// as the features message's `item` (`model --swap-at-item` swaps models at an exact
    /// item with it, and alarms name the item that raised them).
    index: u64,
    sample: Sample,
    published_us: u64,
}

/// When items are due.
enum Schedule {
    /// Closed loop: each item this long after the previous one was handed over.
    Delay(Duration),
    /// Open loop: item i due at `t0 + plan.due(i)`, t0 being `start_at` (epoch µs) if
    /// given, else when features first reaches the broker.
    Plan {
        plan: Plan,
        start_at: Option<u64>,
        clock: Option<PlanClock>,
    },
}

/// An open-loop schedule's clock, set once: t0 in epoch µs, and one reading of both
/// clocks to turn an epoch time into a monotonic instant. Every due time is computed in
/// epoch µs first, so the time an item is sent at and the time it carries always agree,
/// however far t0 lies in the past (overdue items go at once, stamped with their due time).
#[derive(Clone, Copy, Debug)]
struct PlanClock {
    t0_us: u64,
    now: Instant,
    now_us: u64,
}

impl PlanClock {
    /// When an item `offset` after t0 is due, and that time in epoch µs. The sums saturate
    /// (a plan never ends before u64::MAX µs, and `start_at` is at most an hour ahead).
    fn due(&self, offset: Duration) -> (Instant, u64) {
        let offset_us = u64::try_from(offset.as_micros()).unwrap_or(u64::MAX);
        let due_us = self.t0_us.saturating_add(offset_us);
        let wait = Duration::from_micros(due_us.saturating_sub(self.now_us));
        // Only unreachable instants (hundreds of thousands of years away) fail to add:
        // those items are never due, so a year away is as good.
        let instant = self
            .now
            .checked_add(wait)
            .unwrap_or_else(|| self.now + NEVER);
        (instant, due_us)
    }
}

/// Stands for "never" where an instant is needed.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

impl Schedule {
    /// Starts the plan's clock, once. A `start_at` already past is logged: the items due
    /// since then go at once and their latency includes the lateness.
    fn start(&mut self) {
        if let Schedule::Plan {
            clock, start_at, ..
        } = self
            && clock.is_none()
        {
            let (now, now_us) = (Instant::now(), now_us());
            let t0_us = start_at.unwrap_or(now_us);
            if t0_us < now_us {
                warn!(
                    t0_us,
                    late_ms = (now_us - t0_us) / 1000,
                    "{SCHEDULE_LATE} {t0_us}, {} ms late",
                    (now_us - t0_us) / 1000
                );
            }
            *clock = Some(PlanClock { t0_us, now, now_us });
        }
    }

    /// When item `index` is due and the publish time it carries; `None` in closed loop.
    fn due(&self, index: u64) -> Option<(Instant, u64)> {
        match self {
            Schedule::Delay(_) => None,
            Schedule::Plan { plan, clock, .. } => {
                let clock = clock.expect("started on connecting");
                Some(clock.due(plan.due(index)))
            }
        }
    }
}

/// The start of the line features logs when its schedule starts after t0 (`nnmon scenario
/// run` looks for it in features' output).
pub const SCHEDULE_LATE: &str = "schedule starts at";

/// Which of an item's two messages a confirm is for.
#[derive(Clone, Copy, Debug)]
struct Sent {
    item: Item,
    /// `y_true` is published second on the same channel, so its confirm (confirms come in
    /// order) means the whole item is safe.
    completes_item: bool,
}

/// Progress kept across reconnections.
struct Progress {
    /// Items to send in all (`u64::MAX` for forever).
    target: u64,
    /// Items handed to the broker (some maybe unconfirmed).
    started: u64,
    /// Items confirmed.
    confirmed: u64,
    /// Items sent on a connection that died before confirming them.
    resend: Vec<Item>,
    rng: ChaCha8Rng,
    schedule: Schedule,
    /// A scenario's drift injections (none without `--scenario`).
    injector: Option<Injector>,
    /// Where the IDs of confirmed items go, if asked (`--confirmed-ids`).
    confirmed_ids: Option<BufWriter<File>>,
    /// Confirmed messages to `features` and to `y_true`, for Prometheus.
    published: [Counter; 2],
}

impl Progress {
    /// The next item, made when it is due: its row drawn, its injections applied.
    fn next_item(&mut self) -> Item {
        let index = self.started;
        let row = &diabetes()[self.rng.random_range(0..diabetes().len())];
        let sample = match &self.injector {
            Some(injector) => injector.apply(index, row),
            None => *row,
        };
        let published_us = self.schedule.due(index).map_or_else(now_us, |(_, us)| us);
        Item {
            id: Uuid::now_v7(),
            index,
            sample,
            published_us,
        }
    }

    fn confirm(&mut self, sent: Sent) -> Result<()> {
        self.published[usize::from(sent.completes_item)].inc();
        if !sent.completes_item {
            return Ok(());
        }
        self.confirmed += 1;
        if let Some(out) = &mut self.confirmed_ids {
            writeln!(out, "{}", sent.item.id.hyphenated()).context("writing a confirmed ID")?;
        }
        Ok(())
    }

    fn flush_ids(&mut self) -> Result<()> {
        if let Some(out) = &mut self.confirmed_ids {
            out.flush().context("writing the confirmed IDs")?;
        }
        Ok(())
    }
}

/// A scenario file's load, seed and injections.
fn load_scenario(path: &Path) -> Result<Scenario> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    Scenario::parse(&text, &stem).with_context(|| format!("scenario {}", path.display()))
}

pub async fn run(args: FeaturesArgs, cancel: CancellationToken) -> Result<()> {
    let topology = Topology::new(&args.broker.queue_prefix, args.shards.shards);
    let queues = &topology.queues;
    let count = (args.count > 0).then_some(args.count);
    let (schedule, seed, injector) = match (&args.scenario, args.rate) {
        (Some(path), _) => {
            let scenario = load_scenario(path)?;
            let injector = Injector::new(&scenario.drifts, DataStats::of(diabetes()));
            let schedule = Schedule::Plan {
                plan: scenario.plan,
                start_at: args.start_at,
                clock: None,
            };
            (schedule, Some(scenario.seed), Some(injector))
        }
        (None, Some(rate)) => {
            let plan = Plan::constant(rate, count);
            let schedule = Schedule::Plan {
                plan,
                start_at: args.start_at,
                clock: None,
            };
            (schedule, args.seed, None)
        }
        (None, None) => (Schedule::Delay(args.delay), args.seed, None),
    };
    let target = match &schedule {
        Schedule::Plan { plan, .. } => plan.items(),
        Schedule::Delay(_) => count.unwrap_or(u64::MAX),
    };
    let rng = match seed {
        Some(seed) => ChaCha8Rng::seed_from_u64(seed),
        None => rand::make_rng(),
    };
    let confirmed_ids = match &args.confirmed_ids {
        Some(path) => {
            let file = OpenOptions::new().create(true).append(true).open(path);
            Some(BufWriter::new(
                file.with_context(|| format!("opening {}", path.display()))?,
            ))
        }
        None => None,
    };
    let telemetry =
        Telemetry::start(nnmon_observe::Service::Features, &args.observe, &cancel).await?;
    let mut progress = Progress {
        target,
        started: 0,
        confirmed: 0,
        resend: Vec::new(),
        rng,
        schedule,
        injector,
        confirmed_ids,
        published: [
            telemetry.metrics.published(&queues.features),
            telemetry.metrics.published(&queues.y_true),
        ],
    };
    let mut status = StatusClock::new(args.observe.status_interval);
    let window = usize::from(args.broker.prefetch);
    match (&args.scenario, args.rate) {
        (Some(scenario), _) => {
            info!(scenario = %scenario.display(), items = target, "streaming a scenario's load")
        }
        (None, Some(rate)) => info!(
            rate,
            count = args.count,
            seed = args.seed,
            "streaming the diabetes data set on a fixed schedule"
        ),
        (None, None) => {
            info!(delay = ?args.delay, count = args.count, seed = args.seed, "streaming the diabetes data set")
        }
    }
    supervise(
        "nnmon-features",
        &args.broker.amqp_url,
        &cancel,
        &telemetry,
        async |broker: &Broker| {
            topology.declare(broker, args.broker.queue_type).await?;
            let mut publisher = broker.publisher::<Sent>(window).await?;
            telemetry.health.set(true);
            let streamed = stream(
                &mut publisher,
                &topology,
                &args,
                &mut progress,
                &mut status,
                &cancel,
            )
            .await;
            if let Err(error) = streamed {
                let mut lost: Vec<Item> = publisher
                    .into_unconfirmed()
                    .into_iter()
                    .map(|sent| sent.item)
                    .collect();
                // An item can be unconfirmed twice over (both messages) and may already be
                // waiting in `resend` (its first message published, the second failed).
                lost.dedup_by_key(|item| item.id);
                lost.retain(|item| !progress.resend.iter().any(|waiting| waiting.id == item.id));
                progress.resend.extend(lost);
                return Err(error);
            }
            publisher.close().await?;
            Ok(())
        },
    )
    .await?;
    report(&mut status, &progress, 0, true);
    Ok(())
}

/// Logs a progress line when one is due (or `last`).
fn report(status: &mut StatusClock, progress: &Progress, in_flight: usize, last: bool) {
    if let Some(rate) = status.due(progress.confirmed, last) {
        let done = if last { "features stopped: " } else { "" };
        info!(
            "{done}{} items confirmed ({rate:.0}/s), {in_flight} messages awaiting the broker's confirm",
            progress.confirmed
        );
    }
}

async fn publish_item(
    publisher: &mut Publisher<Sent>,
    topology: &Topology,
    item: Item,
) -> Result<()> {
    let sample = &item.sample;
    let id = MessageId::from(item.id);
    let features = FeaturesMessage {
        id: id.clone(),
        features: sample.features,
        published_us: Some(item.published_us),
        item: Some(item.index),
    }
    .encode()?;
    let truth = ValueMessage {
        id: id.clone(),
        value: sample.target,
        published_us: Some(item.published_us),
    }
    .encode()?;
    let properties = message_properties(id.as_str());
    publisher
        .publish(
            &topology.queues.features,
            &features,
            properties.clone(),
            Sent {
                item,
                completes_item: false,
            },
        )
        .await?;
    let completes = Sent {
        item,
        completes_item: true,
    };
    topology
        .publish_half(
            publisher,
            &topology.queues.y_true,
            &truth,
            properties,
            completes,
        )
        .await?;
    Ok(())
}

async fn stream(
    publisher: &mut Publisher<Sent>,
    topology: &Topology,
    args: &FeaturesArgs,
    progress: &mut Progress,
    status: &mut StatusClock,
    cancel: &CancellationToken,
) -> Result<()> {
    // Items stay in `resend` until handed over, so a failure here loses none of them.
    while let Some(&item) = progress.resend.last() {
        publish_item(publisher, topology, item).await?;
        progress.resend.pop();
    }
    progress.schedule.start();
    // Closed loop only: when the next item may go.
    let mut next_due = Instant::now();
    let mut ticks = tokio::time::interval(args.observe.status_interval);
    loop {
        for sent in publisher.ready()? {
            progress.confirm(sent)?;
        }
        progress.flush_ids()?;
        report(status, progress, publisher.in_flight(), false);
        if progress.confirmed >= progress.target
            || (cancel.is_cancelled() && publisher.in_flight() == 0)
        {
            return Ok(());
        }
        let may_start =
            progress.started < progress.target && !cancel.is_cancelled() && !publisher.is_full();
        let due = progress
            .schedule
            .due(progress.started)
            .map_or(next_due, |(instant, _)| instant);
        if may_start && Instant::now() >= due {
            let item = progress.next_item();
            // Counted and queued for (re)sending first: if publishing fails half-way, the
            // item is sent again on the next connection, never replaced by a new one.
            progress.started += 1;
            progress.resend.push(item);
            publish_item(publisher, topology, item).await?;
            progress.resend.pop();
            if let Schedule::Delay(delay) = progress.schedule {
                next_due = Instant::now() + delay;
            }
            continue;
        }
        tokio::select! {
            sent = publisher.confirmed(), if publisher.in_flight() > 0 => progress.confirm(sent?)?,
            () = tokio::time::sleep_until(due), if may_start => {}
            _ = ticks.tick() => {}
            () = cancel.cancelled(), if !cancel.is_cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_t0_far_in_the_past_sends_overdue_items_at_once_stamped_with_their_due_time() {
        let now = Instant::now();
        let clock = PlanClock {
            t0_us: 0,
            now,
            now_us: 1_800_000_000_000_000,
        };
        assert_eq!(clock.due(Duration::from_secs(2)), (now, 2_000_000));
    }

    #[test]
    fn a_t0_ahead_waits_for_it_and_stamps_it() {
        let now = Instant::now();
        let clock = PlanClock {
            t0_us: 1_000_500_000,
            now,
            now_us: 1_000_000_000,
        };
        let (instant, stamp) = clock.due(Duration::from_millis(250));
        assert_eq!(instant - now, Duration::from_millis(750));
        assert_eq!(stamp, 1_000_750_000);
    }

    #[test]
    fn the_far_future_saturates_instead_of_overflowing() {
        let now = Instant::now();
        let clock = PlanClock {
            t0_us: u64::MAX - 1,
            now,
            now_us: 0,
        };
        let (instant, stamp) = clock.due(Duration::MAX);
        assert_eq!(stamp, u64::MAX);
        assert!(instant > now);
    }
}
