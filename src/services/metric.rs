//! `nnmon metric`: the sink. Joins `y_true` with `y_pred` by ID and appends
//! `id,y_true,y_pred,absolute_error,latency_us` to `<log-dir>/metric_log.csv`.
//!
//! Every delivery is acked once its effect is on disk: a matched pair as a row, a half
//! still waiting for its partner as a line in the pending journal, an orphan in
//! `orphans.csv`, a poison message as a confirmed dead-letter copy. So nothing waits
//! unacked for its partner (prefetch can never fill up with halves), and a restarted
//! metric rebuilds exactly the state it had from its files (see [`ledger`]).

mod ledger;

use crate::cli::MetricArgs;
use crate::services::{PoisonCounter, dead_letter, declare_topology, now_ms};
use crate::supervisor::supervise;
use anyhow::Result;
use ledger::Ledger;
use nnmon_broker::{Broker, Incoming};
use nnmon_join::{Half, JoinLimits, Side};
use nnmon_proto::{QueueNames, ValueMessage};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::info;

/// How often waiting halves are checked against the TTL when no traffic comes.
const EVICTION_TICK: Duration = Duration::from_secs(1);
/// How often progress is logged.
const REPORT_EVERY_TICKS: u32 = 30;

pub use ledger::{METRIC_HEADER, METRIC_LOG, ORPHANS_LOG, PENDING_JOURNAL};

pub async fn run(args: MetricArgs, cancel: CancellationToken) -> Result<()> {
    let limits = JoinLimits {
        ttl_ms: args.join_ttl.as_millis().try_into().unwrap_or(u64::MAX),
        max_pending: args.join_max_pending,
        remembered: args.dedup_window,
    };
    let mut ledger = Ledger::open(&args.logs.log_dir, limits, now_ms())?;
    let queues = QueueNames::with_prefix(&args.broker.queue_prefix);
    let prefetch = args.broker.prefetch;
    let mut poison = PoisonCounter::default();
    supervise("nnmon-metric", &args.broker.amqp_url, &cancel, async |broker: &Broker| {
        declare_topology(broker, &queues).await?;
        let mut dead_letters = broker.publisher::<()>(usize::from(prefetch)).await?;
        let mut inbox = broker.inbox(&[&queues.y_true, &queues.y_pred], prefetch).await?;
        let mut tick = tokio::time::interval(EVICTION_TICK.min(args.join_ttl.max(Duration::from_millis(50))));
        let mut ticks = 0u32;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    inbox.close().await?;
                    dead_letters.close().await?;
                    return Ok(());
                }
                _ = tick.tick() => {
                    ledger.evict(now_ms())?;
                    ledger.flush()?;
                    ticks += 1;
                    if ticks % REPORT_EVERY_TICKS == 0 {
                        info!(counts = ?ledger.counts(), poison = poison.total(), "metric progress");
                    }
                }
                batch = inbox.next_batch() => {
                    let batch = batch?;
                    let now = now_ms();
                    for Incoming { queue, delivery } in &batch {
                        // The consumer, not the routing key, says which queue it came from.
                        let (side, queue_name) = match queue {
                            0 => (Side::Truth, &queues.y_true),
                            _ => (Side::Prediction, &queues.y_pred),
                        };
                        match ValueMessage::decode(&delivery.data) {
                            Ok(message) => ledger.accept(Half {
                                side,
                                id: message.id,
                                value: message.value,
                                published_us: message.published_us,
                            }, now)?,
                            Err(error) => {
                                poison.record(queue_name, &error);
                                dead_letter(&mut dead_letters, &queues, delivery, &error, ()).await?;
                            }
                        }
                    }
                    ledger.evict(now)?;
                    ledger.flush()?;
                    dead_letters.drain().await?;
                    inbox.ack(&batch).await?;
                }
            }
        }
    })
    .await?;
    ledger.flush()?;
    info!(counts = ?ledger.counts(), poison = poison.total(), "metric stopped");
    Ok(())
}
