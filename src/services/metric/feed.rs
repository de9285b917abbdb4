//! A shard's rows, for the view of all shards: read back from the shard's own
//! `metric_log.csv` and published to the fanout exchange `<prefix>rows`, with how far the
//! broker has confirmed them kept in `rows_published.offset` (a byte offset of the log).
//!
//! Why from the durable log behind an offset, rather than publishing each row before its
//! inputs are acked:
//! - The log stays the one record. A row is published only once it is on disk, so the
//!   view can never show a row that the shard's log does not hold.
//! - The metric's exactly-once argument is untouched: its inputs are acked after the
//!   flush, as with one shard, and never wait for (or depend on) the rows exchange.
//! - Nothing is lost by a crash. Publishing beside the ack would lose a row for good if
//!   the process died between the flush and the publish: its redelivered inputs are then
//!   duplicates and dropped. Here the next start publishes again from the saved offset.
//!
//! So rows reach the exchange at least once (the rows after the last saved offset, at
//! most a confirm window, may go out twice, and all of them if the offset file is lost),
//! and each carries its byte offset in the log, by which `plot` drops copies exactly.
//!
//! The saved offset only moves forward, and never past a row the broker has not
//! confirmed: a run of rows that cannot be published waits for the runs before it.

use anyhow::{Context, Result};
use nnmon_broker::{Broker, Publisher, message_properties};
use nnmon_csvlog::read_rows_from;
use nnmon_proto::RowMessage;
use nnmon_stats::MetricStatus;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tracing::{debug, warn};

/// Beside the log: the offset up to which its rows are confirmed by the broker.
pub const OFFSET_FILE: &str = "rows_published.offset";

/// The AMQP `type` of a shard's status message (rows have none).
pub const STATUS_TYPE: &str = "nnmon.metric_status";

/// A shard's [`MetricStatus`], published to the rows exchange at every status interval
/// beside its rows, so that `plot` can show the join's health of every shard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardStatus {
    pub shard: u16,
    pub status: MetricStatus,
}

pub struct RowFeed {
    shard: u16,
    exchange: String,
    log: PathBuf,
    offset_file: PathBuf,
    /// Where the rows the broker has not confirmed start (0: the log's start, header
    /// included).
    confirmed: u64,
    /// Where the rows not yet published on this connection start.
    next: u64,
    /// The end of the last run of only unreadable rows, once passed over: saved when
    /// everything published before it is confirmed (0: none).
    passed_over: u64,
}

impl RowFeed {
    /// Follows `log` (in `log_dir`) for shard `shard`, from the saved offset.
    pub fn open(log_dir: &Path, log: &str, shard: u16, exchange: &str) -> Result<Self> {
        let log = log_dir.join(log);
        let offset_file = log_dir.join(OFFSET_FILE);
        let saved = match std::fs::read_to_string(&offset_file) {
            Ok(text) => text.trim().parse::<u64>().ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(0),
            Err(e) => return Err(e).with_context(|| format!("reading {}", offset_file.display())),
        };
        let len = std::fs::metadata(&log).map_or(0, |m| m.len());
        let confirmed = match saved {
            Some(offset) if offset <= len => offset,
            // A log replaced by a shorter one, or a file nnmon did not write: publishing
            // everything again is safe (plot drops copies), skipping rows would not be.
            _ => {
                warn!(file = %offset_file.display(), "the published-rows offset does not fit the log; publishing its rows again from the start");
                0
            }
        };
        Ok(Self {
            shard,
            exchange: exchange.to_owned(),
            log,
            offset_file,
            confirmed,
            next: confirmed,
            passed_over: 0,
        })
    }

    /// Starts again from the last confirmed row, on a new connection: what was in flight
    /// on the old one may or may not have arrived.
    pub fn restart(&mut self) {
        self.next = self.confirmed;
        self.passed_over = 0;
    }

    /// Publishes the rows flushed since the last call, as many as the confirm window has
    /// room for. The last row of each run carries the offset after it as its token.
    pub async fn publish_new(&mut self, publisher: &mut Publisher<Option<u64>>) -> Result<()> {
        let room = publisher.room();
        if room == 0 {
            return Ok(());
        }
        let mut rows = Vec::new();
        let mut unreadable = 0;
        let from = self.next;
        let end = read_rows_from(&self.log, from, room, |row| {
            let offset = from + row.position().map_or(0, |position| position.byte());
            match parse_row(self.shard, offset, row) {
                Some(row) => rows.push(row),
                None => unreadable += 1,
            }
        })?;
        if unreadable > 0 {
            warn!(unreadable, log = %self.log.display(), "rows of the log that cannot be published were skipped");
        }
        let count = rows.len();
        for (index, row) in rows.into_iter().enumerate() {
            let token = (index + 1 == count).then_some(end);
            let properties = message_properties(&row.id);
            publisher
                .publish_to(&self.exchange, "", &row.encode(), properties, token)
                .await?;
        }
        if count == 0 && end > self.next {
            // Only unreadable rows: no confirm will come for them, so they are done once
            // everything before them is confirmed.
            self.passed_over = end;
            self.save_passed_over(publisher.in_flight())?;
        }
        self.next = end;
        Ok(())
    }

    /// Takes the tokens of confirmed rows and saves how far the rows are confirmed;
    /// `in_flight`: what the publisher still awaits confirms for.
    pub fn confirm(
        &mut self,
        tokens: impl IntoIterator<Item = Option<u64>>,
        in_flight: usize,
    ) -> Result<()> {
        if let Some(end) = tokens.into_iter().flatten().last() {
            self.save(end)?;
        }
        self.save_passed_over(in_flight)
    }

    /// Saves the end of passed-over rows once nothing before them awaits a confirm.
    fn save_passed_over(&mut self, in_flight: usize) -> Result<()> {
        if in_flight == 0 {
            self.save(self.passed_over)?;
        }
        Ok(())
    }

    /// Saves `offset` if it is past the saved one: the offset never moves back.
    fn save(&mut self, offset: u64) -> Result<()> {
        if offset <= self.confirmed {
            return Ok(());
        }
        self.confirmed = offset;
        crate::telemetry::write_atomically(&self.offset_file, offset.to_string().as_bytes())
    }
}

/// A feed on one broker connection.
pub struct FeedSession<'a> {
    feed: &'a mut RowFeed,
    publisher: Publisher<Option<u64>>,
}

impl<'a> FeedSession<'a> {
    /// Opens a publisher of `window` rows in flight and publishes what is waiting.
    pub async fn start(feed: &'a mut RowFeed, broker: &Broker, window: usize) -> Result<Self> {
        feed.restart();
        let mut session = Self {
            feed,
            publisher: broker.publisher(window).await?,
        };
        session.publish_new().await?;
        Ok(session)
    }

    /// Whether rows await the broker's confirm.
    pub fn is_waiting(&self) -> bool {
        self.publisher.in_flight() > 0
    }

    /// Publishes the rows flushed since the last call, as the window allows.
    pub async fn publish_new(&mut self) -> Result<()> {
        self.feed.publish_new(&mut self.publisher).await
    }

    /// Waits for the next confirm, notes it and everything confirmed with it, and fills
    /// the room it made.
    pub async fn confirmed(&mut self) -> Result<()> {
        let first = self.publisher.confirmed().await?;
        let rest = self.publisher.ready()?;
        let in_flight = self.publisher.in_flight();
        self.feed
            .confirm(std::iter::once(first).chain(rest), in_flight)?;
        self.publish_new().await
    }

    /// Publishes the shard's status (at most once per status interval; no row waits on
    /// it, and the next one replaces it, so with the confirm window full it is left out).
    pub async fn publish_status(&mut self, status: MetricStatus) -> Result<()> {
        if self.publisher.is_full() {
            debug!("the rows' confirm window is full: this status is left out");
            return Ok(());
        }
        let shard = self.feed.shard;
        let body = serde_json::to_vec(&ShardStatus { shard, status })?;
        let properties = message_properties(&format!("status-{shard}")).with_type(STATUS_TYPE);
        let exchange = &self.feed.exchange;
        self.publisher
            .publish_to(exchange, "", &body, properties, None)
            .await?;
        Ok(())
    }

    /// Publishes every row of the log, then the shard's final status, and waits until
    /// all are confirmed (shutdown).
    pub async fn finish(mut self, status: MetricStatus) -> Result<()> {
        loop {
            self.publish_new().await?;
            if !self.is_waiting() {
                break;
            }
            let tokens = self.publisher.drain().await?;
            self.feed.confirm(tokens, 0)?;
        }
        self.publish_status(status).await?;
        self.publisher.drain().await?;
        self.publisher.close().await?;
        Ok(())
    }
}

/// A log row (`id,y_true,y_pred,absolute_error,latency_us`) starting at byte `offset` of
/// the log, as its message.
fn parse_row(shard: u16, offset: u64, row: &nnmon_csvlog::StringRecord) -> Option<RowMessage> {
    let number = |index: usize| {
        row.get(index)?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    };
    Some(RowMessage {
        shard,
        offset,
        id: row.get(0).filter(|id| !id.is_empty())?.to_owned(),
        y_true: number(1)?,
        y_pred: number(2)?,
        latency_us: row.get(4).and_then(|text| text.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_row_becomes_its_message() {
        let row = nnmon_csvlog::StringRecord::from(vec!["a,1", "151", "140.5", "10.5", ""]);
        let message = parse_row(3, 40, &row).expect("a row");
        assert_eq!(
            message,
            RowMessage {
                shard: 3,
                offset: 40,
                id: "a,1".into(),
                y_true: 151.0,
                y_pred: 140.5,
                latency_us: None,
            }
        );
        let bad = nnmon_csvlog::StringRecord::from(vec!["b", "x", "1", "1", "7"]);
        assert_eq!(parse_row(0, 80, &bad), None);
    }
}
