//! `plot --shards N`: the rows every metric shard publishes, gathered into one local log.
//!
//! Shards may run on machines without a shared disk, so their rows come over the broker:
//! each shard publishes its log's rows to the fanout exchange `<prefix>rows` (see the
//! metric's `feed`), and `plot` consumes them from its durable queue `<prefix>rows.plot`
//! (declared by every service, so rows wait there until `plot` comes). The collector
//! drops copies, appends each new row to `<log-dir>/all_shards_log.csv`, and acks
//! a batch once it is flushed. That log then holds every shard's rows once, and the rest
//! of `plot` follows it as it follows `metric_log.csv` with one shard.
//!
//! Each shard also publishes its status (the join's health and error alarm) there, with
//! the AMQP type [`STATUS_TYPE`]: the collector keeps the latest of each in
//! `<log-dir>/shard-I/metric_status.json`, where a shard on this machine writes it too.
//!
//! Copies come from a shard publishing again after a crash (at most its confirm window,
//! see the feed, or its whole log if its offset file was lost) and from this queue
//! redelivering what a crashed `plot` had not acked (at most a prefetch). Each row carries
//! its byte offset in its shard's log, which grows with every row: the collector keeps
//! the highest offset it has of each shard (a column of the combined log, so rebuilt by
//! reading it on start) and drops every row at or below it. That is exact, whatever the
//! number of copies, in memory of one number per shard. It relies on a shard's rows
//! arriving in the order of its log, which one publisher on one channel to one queue
//! keeps, and on a shard's log only growing: a shard whose log is deleted must start
//! with a fresh combined log too (or a new `--queue-prefix`).

use crate::cli::PlotArgs;
use crate::services::metric::{STATUS_TYPE, ShardStatus, shard_dir};
use crate::services::{PoisonCounter, Topology, dead_letter};
use crate::supervisor::supervise;
use crate::telemetry::{Telemetry, write_json_atomically};
use anyhow::{Context, Result};
use nnmon_broker::Broker;
use nnmon_csvlog::{CsvAppender, Record, read_rows_from};
use nnmon_proto::RowMessage;
use nnmon_stats::METRIC_STATUS_FILE;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The rows of every shard, in `plot`'s `--log-dir`.
pub const COMBINED_LOG: &str = "all_shards_log.csv";
/// `metric_log.csv`'s columns, the shard the row came from and where it starts in that
/// shard's log.
pub const COMBINED_HEADER: &str = "id,y_true,y_pred,absolute_error,latency_us,shard,offset";

/// The combined log and, per shard, the highest offset it holds.
pub struct Collector {
    log_dir: PathBuf,
    shards: u16,
    log: CsvAppender,
    high_water: HashMap<u16, u64>,
    record: Record,
    /// Rows appended and copies dropped since the start.
    appended: u64,
    copies: u64,
}

impl Collector {
    /// Opens (or creates) the combined log in `log_dir` for the rows of `shards` shards,
    /// cutting off a torn last line, and reads it for each shard's highest offset.
    pub fn open(log_dir: &Path, shards: u16) -> Result<Self> {
        let path = log_dir.join(COMBINED_LOG);
        let (log, _) = CsvAppender::open(&path, COMBINED_HEADER)?;
        let mut high_water = HashMap::new();
        let mut from = 0;
        loop {
            let end = read_rows_from(&path, from, READ_BATCH, |row| {
                let shard = row.get(5).and_then(|text| text.parse().ok());
                let offset = row.get(6).and_then(|text| text.parse().ok());
                if let (Some(shard), Some(offset)) = (shard, offset) {
                    raise(&mut high_water, shard, offset);
                }
            })?;
            if end == from {
                break;
            }
            from = end;
        }
        Ok(Self {
            log_dir: log_dir.to_owned(),
            shards,
            log,
            high_water,
            record: Record::default(),
            appended: 0,
            copies: 0,
        })
    }

    /// Appends `row` unless it is at or below its shard's highest offset collected
    /// (buffered until [`flush`](Self::flush)).
    pub fn take(&mut self, row: &RowMessage) -> Result<()> {
        if !raise(&mut self.high_water, row.shard, row.offset) {
            self.copies += 1;
            return Ok(());
        }
        self.record
            .clear()
            .push(&row.id)
            .push_display(row.y_true)
            .push_display(row.y_pred)
            .push_display(row.absolute_error())
            .push_optional(row.latency_us)
            .push_display(row.shard)
            .push_display(row.offset);
        self.log.append(&self.record)?;
        self.appended += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        Ok(self.log.flush()?)
    }

    /// Keeps a shard's latest status where [`Monitor`](super::Monitor) reads it.
    pub fn status(&self, status: &ShardStatus) -> Result<()> {
        if status.shard >= self.shards {
            warn!(
                shard = status.shard,
                shards = self.shards,
                "ignoring the status of a shard beyond --shards"
            );
            return Ok(());
        }
        let folder = shard_dir(&self.log_dir, status.shard);
        std::fs::create_dir_all(&folder)
            .with_context(|| format!("creating {}", folder.display()))?;
        write_json_atomically(&folder.join(METRIC_STATUS_FILE), &status.status)
    }
}

/// Rows of the combined log read at a time on start.
const READ_BATCH: usize = 65_536;

/// Raises `shard`'s highest offset to `offset`; false when `offset` is not above it (a
/// copy).
fn raise(high_water: &mut HashMap<u16, u64>, shard: u16, offset: u64) -> bool {
    match high_water.get(&shard) {
        Some(&highest) if offset <= highest => false,
        _ => {
            high_water.insert(shard, offset);
            true
        }
    }
}

/// Collects until `cancel` fires, reconnecting whenever the broker goes away.
pub(crate) async fn run(
    args: &PlotArgs,
    topology: &Topology,
    mut collector: Collector,
    telemetry: &Telemetry,
    cancel: &CancellationToken,
) -> Result<()> {
    let Some(shards) = &topology.shards else {
        return Ok(());
    };
    let prefetch = args.broker.prefetch;
    let mut poison = PoisonCounter::new(telemetry.metrics.clone());
    supervise(
        "nnmon-plot",
        &args.broker.amqp_url,
        cancel,
        telemetry,
        async |broker: &Broker| {
            topology.declare(broker, args.broker.queue_type).await?;
            let mut dead_letters = broker.publisher::<()>(usize::from(prefetch)).await?;
            let mut inbox = broker.inbox(&shards.rows_plot, prefetch).await?;
            telemetry.health.set(true);
            info!(queue = %shards.rows_plot, shards = shards.count(), "collecting the rows of every shard");
            loop {
                let batch = tokio::select! {
                    () = cancel.cancelled() => break,
                    batch = inbox.next_batch() => batch?,
                };
                for delivery in &batch {
                    let kind = delivery.properties.kind.as_deref();
                    if kind == Some(STATUS_TYPE) {
                        // A status is replaced by the next one: one that cannot be read is
                        // only noted.
                        match serde_json::from_slice::<ShardStatus>(&delivery.data) {
                            Ok(status) => collector.status(&status)?,
                            Err(error) => warn!(%error, "ignoring an unreadable shard status"),
                        }
                        continue;
                    }
                    match RowMessage::decode(&delivery.data) {
                        Ok(row) => collector.take(&row)?,
                        Err(error) => {
                            poison.record(inbox.queue(), &error);
                            dead_letter(&mut dead_letters, &topology.queues, delivery, &error, ())
                                .await?;
                        }
                    }
                }
                collector.flush()?;
                dead_letters.drain().await?;
                inbox.ack(&batch).await?;
            }
            inbox.close().await?;
            dead_letters.close().await?;
            Ok(())
        },
    )
    .await
    .context("collecting the shards' rows")?;
    info!(
        rows = collector.appended,
        copies_dropped = collector.copies,
        "stopped collecting"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(shard: u16, offset: u64, id: &str) -> RowMessage {
        RowMessage {
            shard,
            offset,
            id: id.into(),
            y_true: 151.0,
            y_pred: 140.5,
            latency_us: Some(7),
        }
    }

    #[test]
    fn copies_are_dropped_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut collector = Collector::open(dir.path(), 2).expect("open");
        for (shard, offset, id) in [(0, 40, "a"), (1, 40, "b"), (0, 40, "a"), (0, 10, "z")] {
            collector.take(&row(shard, offset, id)).expect("take");
        }
        collector.flush().expect("flush");
        assert_eq!((collector.appended, collector.copies), (2, 2));
        drop(collector);
        let mut collector = Collector::open(dir.path(), 2).expect("reopen");
        collector.take(&row(1, 40, "b")).expect("take");
        collector.take(&row(1, 80, "c")).expect("take");
        collector.take(&row(0, 40, "a")).expect("take");
        collector.flush().expect("flush");
        assert_eq!((collector.appended, collector.copies), (1, 2));
        let text = std::fs::read_to_string(dir.path().join(COMBINED_LOG)).expect("log");
        assert_eq!(
            text,
            format!(
                "{COMBINED_HEADER}\na,151,140.5,10.5,7,0,40\nb,151,140.5,10.5,7,1,40\nc,151,140.5,10.5,7,1,80\n"
            )
        );
    }
}
