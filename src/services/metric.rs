//! `nnmon metric`: the sink. Joins `y_true` with `y_pred` by ID and appends
//! `id,y_true,y_pred,absolute_error,latency_us` to `<log-dir>/metric_log.csv`.
//!
//! Every delivery is acked once its effect is on disk: a matched pair as a row, a half
//! still waiting for its partner as a line in the pending journal, an orphan in
//! `orphans.csv`, a poison message as a confirmed dead-letter copy. So nothing waits
//! unacked for its partner (prefetch can never fill up with halves), and a restarted
//! metric rebuilds exactly the state it had from its files (see [`ledger`]).
//!
//! Each input queue has an inbox of its own. When too many halves of one side wait
//! (`--join-max-pending`), that side is not read until the other catches up: its messages
//! wait in the broker, which is the buffer, instead of in memory (see `nnmon_join`).

mod feed;
mod ledger;
mod lock;
mod monitor;

use crate::cli::MetricArgs;
use crate::services::{PoisonCounter, Topology, dead_letter, now_ms};
use crate::supervisor::supervise;
use crate::telemetry::{StatusClock, Telemetry};
use anyhow::{Context, Result, bail};
use feed::{FeedSession, RowFeed};
use lock::DirLock;
use monitor::Monitor;
use nnmon_broker::{Broker, Delivery, Inbox, Publisher};
use nnmon_join::{Half, JoinLimits, Side};
use nnmon_observe::Counter;
use nnmon_proto::ValueMessage;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// How often waiting halves without a publish time are checked against the wall clock
/// when no traffic comes (and progress is reported when due).
const EVICTION_TICK: Duration = Duration::from_secs(1);

pub use feed::{OFFSET_FILE, STATUS_TYPE, ShardStatus};
pub use ledger::{Ledger, METRIC_HEADER, METRIC_LOG, ORPHANS_LOG, PENDING_JOURNAL, row_record};
pub use lock::LOCK_FILE;

/// Where metric shard `shard` keeps its files with `--shards` above 1: a folder of its own
/// under `--log-dir` (`shard-0`, `shard-1`…), so that its log, journal, orphans, lock and
/// status are its alone, and shards on one machine may share a `--log-dir`.
pub fn shard_dir(log_dir: &Path, shard: u16) -> PathBuf {
    log_dir.join(format!("shard-{shard}"))
}

pub async fn run(args: MetricArgs, cancel: CancellationToken) -> Result<()> {
    let limits = JoinLimits {
        grace_ms: args.join_ttl.as_millis().try_into().unwrap_or(u64::MAX),
        max_pending: args.join_max_pending,
        remembered: args.dedup_window,
    };
    // A crash between a flush and its ack redelivers up to a prefetch of each queue: the
    // dedup window must remember at least that many IDs to drop them.
    let least_window = 2 * usize::from(args.broker.prefetch);
    if args.dedup_window < least_window {
        bail!(
            "--dedup-window {} is too small for --prefetch {}: redeliveries after a crash could \
             be logged twice; use at least {least_window}",
            args.dedup_window,
            args.broker.prefetch
        );
    }
    let shard = args.shard.shard;
    let topology = Topology::new(&args.broker.queue_prefix, args.shard.shards);
    let files = match &topology.shards {
        Some(_) => shard_dir(&args.logs.log_dir, shard),
        None => args.logs.log_dir.clone(),
    };
    let log_dir = files.clone();
    let lock = DirLock::acquire(&log_dir)?;
    // Reading the logs blocks, so it runs off the event loop (signals are watched on a
    // thread of their own). It reads only their ends: it is awaited even after a signal,
    // so that the lock is held until nothing touches the files any more.
    let opening = tokio::task::spawn_blocking(move || Ledger::open(&log_dir, limits, now_ms()));
    let mut ledger = opening.await.context("rebuilding the metric state")??;
    if cancel.is_cancelled() {
        info!("stopped before consuming anything");
        return Ok(());
    }
    let telemetry =
        Telemetry::start(nnmon_observe::Service::Metric, &args.observe, &cancel).await?;
    let queues = &topology.queues;
    let (y_true, y_pred) = topology.metric_inputs(shard);
    let prefetch = args.broker.prefetch;
    let mut poison = PoisonCounter::new(telemetry.metrics.clone());
    let mut backpressure = Backpressure::new([y_true.clone(), y_pred.clone()]);
    let mut monitor = Monitor::new(
        telemetry.clone(),
        args.window as usize,
        StatusClock::new(args.observe.status_interval),
        &files,
    )?;
    let consumed = [
        telemetry.metrics.consumed(&y_true),
        telemetry.metrics.consumed(&y_pred),
    ];
    // Sharded, the rows also go to the view of all shards (see `feed`).
    let mut feed = match &topology.shards {
        Some(names) => Some(RowFeed::open(&files, METRIC_LOG, shard, &names.rows)?),
        None => None,
    };
    // Whether the final status was reported (and published) before the session ended.
    let mut final_reported = false;
    if topology.shards.is_some() {
        info!(shard, shards = args.shard.shards, %y_true, %y_pred, files = %files.display(), "metric shard");
    }
    supervise(
        "nnmon-metric",
        &args.broker.amqp_url,
        &cancel,
        &telemetry,
        async |broker: &Broker| {
            topology.declare(broker, args.broker.queue_type).await?;
            let mut session = Session {
                dead_letters: broker.publisher::<()>(usize::from(prefetch)).await?,
                queues,
                ledger: &mut ledger,
                poison: &mut poison,
                monitor: &mut monitor,
                consumed: &consumed,
                dead_letters_published: telemetry.metrics.published(&queues.dead_letter),
            };
            let mut truths = broker.inbox(&y_true, prefetch).await?;
            let mut predictions = broker.inbox(&y_pred, prefetch).await?;
            let mut rows_out = match feed.as_mut() {
                Some(feed) => Some(FeedSession::start(feed, broker, usize::from(prefetch)).await?),
                None => None,
            };
            telemetry.health.set(true);
            let mut tick = tokio::time::interval(
                EVICTION_TICK.min(args.join_ttl.max(Duration::from_millis(50))),
            );
            while !cancel.is_cancelled() {
                let take_truths = session.ledger.accepts(Side::Truth);
                let take_predictions = session.ledger.accepts(Side::Prediction);
                backpressure.note(take_truths, take_predictions, session.ledger);
                tokio::select! {
                    () = cancel.cancelled() => {}
                    _ = tick.tick() => {
                        session.ledger.evict(now_ms())?;
                        session.ledger.flush()?;
                        session.monitor.observe(session.ledger.take_events());
                        let status = session.monitor.report(session.ledger, session.poison, false)?;
                        if let (Some(rows_out), Some(status)) = (rows_out.as_mut(), status) {
                            rows_out.publish_status(status).await?;
                        }
                    }
                    batch = truths.next_batch(), if take_truths => {
                        session.settle(Side::Truth, &truths, batch?).await?;
                    }
                    batch = predictions.next_batch(), if take_predictions => {
                        session.settle(Side::Prediction, &predictions, batch?).await?;
                    }
                    confirmed = rows_confirmed(&mut rows_out), if rows_out.as_ref().is_some_and(FeedSession::is_waiting) => confirmed?,
                }
                if let Some(rows_out) = rows_out.as_mut() {
                    rows_out.publish_new().await?;
                }
            }
            truths.close().await?;
            predictions.close().await?;
            if let Some(rows_out) = rows_out {
                // The view of all shards gets the final status too: it is reported here,
                // while connected, rather than after the session.
                session.ledger.flush()?;
                session.monitor.observe(session.ledger.take_events());
                if let Some(status) = session.monitor.report(session.ledger, session.poison, true)? {
                    final_reported = true;
                    rows_out.finish(status).await?;
                }
            }
            session.dead_letters.close().await?;
            Ok(())
        },
    )
    .await?;
    if !final_reported {
        ledger.flush()?;
        monitor.observe(ledger.take_events());
        monitor.report(&ledger, &poison, true)?;
    }
    drop(lock);
    Ok(())
}

/// The next confirm of the rows' feed, if there is one.
async fn rows_confirmed(rows_out: &mut Option<FeedSession<'_>>) -> Result<()> {
    match rows_out {
        Some(rows_out) => rows_out.confirmed().await,
        None => std::future::pending().await,
    }
}

/// What one broker session of the metric works with.
struct Session<'a> {
    dead_letters: Publisher<()>,
    queues: &'a nnmon_proto::QueueNames,
    ledger: &'a mut Ledger,
    poison: &'a mut PoisonCounter,
    monitor: &'a mut Monitor,
    /// Messages settled from `y_true` and from `y_pred`.
    consumed: &'a [Counter; 2],
    dead_letters_published: Counter,
}

impl Session<'_> {
    /// Takes one batch of `side`'s deliveries into the ledger, makes the result durable,
    /// then acks the batch.
    async fn settle(&mut self, side: Side, inbox: &Inbox, batch: Vec<Delivery>) -> Result<()> {
        let now = now_ms();
        for delivery in &batch {
            match ValueMessage::decode(&delivery.data) {
                Ok(message) => self.ledger.accept(
                    Half {
                        side,
                        id: message.id,
                        value: message.value,
                        published_us: message.published_us,
                    },
                    now,
                )?,
                Err(error) => {
                    self.poison.record(inbox.queue(), &error);
                    dead_letter(&mut self.dead_letters, self.queues, delivery, &error, ()).await?;
                }
            }
        }
        self.ledger.evict(now)?;
        self.ledger.flush()?;
        let dead_lettered = self.dead_letters.drain().await?.len() as u64;
        inbox.ack(&batch).await?;
        self.dead_letters_published.inc_by(dead_lettered);
        self.consumed[usize::from(side == Side::Prediction)].inc_by(batch.len() as u64);
        self.monitor.observe(self.ledger.take_events());
        Ok(())
    }
}

/// Says when a side of the join starts or stops waiting for the other to catch up. During
/// a catch-up a side near the cap pauses and resumes many times: one notice per side and
/// [`NOTICE_EVERY`] is enough.
struct Backpressure {
    names: [String; 2],
    paused: [bool; 2],
    /// When each side's last pause was announced, and pauses since then.
    announced: [Option<std::time::Instant>; 2],
    unannounced: [u64; 2],
}

const NOTICE_EVERY: Duration = Duration::from_secs(30);

impl Backpressure {
    /// For the queues of true values and of predictions.
    fn new(names: [String; 2]) -> Self {
        Self {
            names,
            paused: [false; 2],
            announced: [None; 2],
            unannounced: [0; 2],
        }
    }

    fn note(&mut self, take_truths: bool, take_predictions: bool, ledger: &Ledger) {
        let counts = ledger.counts();
        let sides = [
            (
                !take_truths,
                counts.waiting_truths,
                "true values",
                "predictions",
            ),
            (
                !take_predictions,
                counts.waiting_predictions,
                "predictions",
                "true values",
            ),
        ];
        for (index, (paused, waiting, these, those)) in sides.into_iter().enumerate() {
            if paused == self.paused[index] {
                continue;
            }
            self.paused[index] = paused;
            let queue = &self.names[index];
            let recently = self.announced[index].is_some_and(|at| at.elapsed() < NOTICE_EVERY);
            if !paused {
                if !recently {
                    info!("{these} and {those} caught up: reading {queue} again");
                }
            } else if recently {
                self.unannounced[index] += 1;
            } else {
                let again = match std::mem::take(&mut self.unannounced[index]) {
                    0 => String::new(),
                    n => format!(" (and {n} more times since the last notice)"),
                };
                warn!(
                    "{waiting} {these} wait for their {those} (--join-max-pending): pausing \
                     {queue} until the other side catches up; its messages wait in the \
                     broker{again}"
                );
                self.announced[index] = Some(std::time::Instant::now());
            }
        }
    }
}
