//! The metric's durable state: the join plus the three files that make it survive a crash.
//!
//! - `metric_log.csv`: one row per matched pair. Its IDs, read back on start, are the
//!   join's memory of what was written, so a redelivered half is never logged twice.
//! - `orphans.csv`: halves whose partner did not come in time (or came too late).
//! - `join_pending.csv`: a journal of halves waiting for their partner. It lets `metric`
//!   ack them at once and still have them after a restart; it is compacted to the halves
//!   still waiting whenever it grows well past them.
//!
//! [`Ledger::accept`] and [`Ledger::evict`] only buffer; [`Ledger::flush`] makes all of
//! it durable, and the caller acks only after that.

use anyhow::{Context, Result};
use nnmon_csvlog::{CsvAppender, fields};
use nnmon_join::{EvictionCause, Half, Join, JoinLimits, Offer, Orphan, Side};
use nnmon_proto::MessageId;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use tracing::{info, warn};

pub const METRIC_LOG: &str = "metric_log.csv";
pub const METRIC_HEADER: &str = "id,y_true,y_pred,absolute_error,latency_us";
pub const ORPHANS_LOG: &str = "orphans.csv";
const ORPHANS_HEADER: &str = "id,side,value,arrived_ms,evicted_ms,cause";
pub const PENDING_JOURNAL: &str = "join_pending.csv";
const PENDING_HEADER: &str = "id,side,value,published_us,arrived_ms";
/// The journal is compacted once it holds this many lines and four times the waiting halves.
const COMPACT_AFTER_LINES: usize = 100_000;

/// What the ledger has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows: u64,
    pub duplicates: u64,
    pub orphans: u64,
    pub pending: usize,
}

pub struct Ledger {
    join: Join,
    rows: CsvAppender,
    orphans: CsvAppender,
    journal: CsvAppender,
    journal_lines: usize,
    counts: Counts,
    line: String,
}

fn parse_side(text: &str) -> Option<Side> {
    [Side::Truth, Side::Prediction]
        .into_iter()
        .find(|side| side.as_str() == text)
}

/// A journal line back into a waiting half and its arrival time.
fn parse_pending(line: &str) -> Option<(Half, u64)> {
    let fields = fields::split(line);
    let [id, side, value, published_us, arrived_ms] = fields.as_slice() else {
        return None;
    };
    let half = Half {
        side: parse_side(side)?,
        id: MessageId::Text(id.as_ref().into()),
        value: value.parse().ok().filter(|v: &f64| v.is_finite())?,
        published_us: published_us.parse().ok(),
    };
    Some((half, arrived_ms.parse().ok()?))
}

/// An optional number as a CSV field: the number, or nothing.
struct OrEmpty(Option<u64>);

impl std::fmt::Display for OrEmpty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{n}"),
            None => Ok(()),
        }
    }
}

/// A journal line for a waiting half (the inverse of [`parse_pending`]).
fn write_pending(line: &mut String, half: &Half, arrived_ms: u64) {
    let _ = write!(
        line,
        "{},{},{},{},{}",
        fields::escape(half.id.as_str()),
        half.side.as_str(),
        half.value,
        OrEmpty(half.published_us),
        arrived_ms
    );
}

fn first_field(line: &str) -> MessageId {
    let id = fields::nth(line, 0).unwrap_or_default();
    MessageId::Text(id.as_ref().into())
}

impl Ledger {
    /// Opens the files in `log_dir` and rebuilds the join from them.
    pub fn open(log_dir: &Path, limits: JoinLimits, now_ms: u64) -> Result<Self> {
        // The journal first: its halves wait unless the full logs below say they were
        // settled (an exact check, unlike the join's bounded memory of IDs).
        let mut waiting: HashMap<MessageId, (Half, u64)> = HashMap::new();
        let mut journal_lines = 0;
        let (journal, _) =
            CsvAppender::open(&log_dir.join(PENDING_JOURNAL), PENDING_HEADER, |line| {
                journal_lines += 1;
                match parse_pending(line) {
                    Some((half, arrived_ms)) => {
                        waiting.insert(half.id.clone(), (half, arrived_ms));
                    }
                    None => warn!(line, "skipping an unreadable pending-journal line"),
                }
            })?;
        let mut join = Join::new(limits);
        let (rows, report) = CsvAppender::open(&log_dir.join(METRIC_LOG), METRIC_HEADER, |line| {
            let id = first_field(line);
            waiting.remove(&id);
            join.remember_written(&id);
        })?;
        if report.repaired_bytes > 0 {
            warn!(file = %rows.path().display(), bytes = report.repaired_bytes, "cut off a torn last line left by a crash");
        }
        let (orphans, _) = CsvAppender::open(&log_dir.join(ORPHANS_LOG), ORPHANS_HEADER, |line| {
            let fields = fields::split(line);
            let id = MessageId::Text(
                fields
                    .first()
                    .map(|f| f.as_ref())
                    .unwrap_or_default()
                    .into(),
            );
            waiting.remove(&id);
            // A late partner settles its ID for good; an evicted half still awaits one.
            match (fields.get(1).and_then(|s| parse_side(s)), fields.last()) {
                (_, Some(cause)) if cause == EvictionCause::LatePartner.as_str() => {
                    join.remember_written(&id)
                }
                (Some(side), _) => join.remember_evicted(&id, side),
                (None, _) => warn!(line, "skipping an unreadable orphans line"),
            }
        })?;
        let mut ledger = Self {
            join,
            rows,
            orphans,
            journal,
            journal_lines,
            counts: Counts {
                rows: report.rows as u64,
                ..Counts::default()
            },
            line: String::new(),
        };
        let mut restored: Vec<(Half, u64)> = waiting.into_values().collect();
        restored.sort_by_key(|(_, arrived_ms)| *arrived_ms);
        for (half, arrived_ms) in restored {
            ledger.offer(half, arrived_ms, false)?;
        }
        ledger.evict(now_ms)?;
        ledger.compact().context("compacting the pending journal")?;
        ledger.flush()?;
        info!(
            rows = report.rows,
            waiting = ledger.join.pending_len(),
            journal_lines,
            "metric state rebuilt from the logs"
        );
        Ok(ledger)
    }

    /// Takes one half that arrived at `now_ms`.
    pub fn accept(&mut self, half: Half, now_ms: u64) -> Result<()> {
        self.offer(half, now_ms, true)
    }

    fn offer(&mut self, half: Half, now_ms: u64, journal: bool) -> Result<()> {
        let line = &mut self.line;
        line.clear();
        match self.join.offer(half.clone(), now_ms) {
            Offer::Matched(pair) => {
                let now_us = crate::services::now_us();
                let latency = pair
                    .published_us
                    .map(|published| now_us.saturating_sub(published));
                let _ = write!(
                    line,
                    "{},{},{},{},{}",
                    fields::escape(pair.id.as_str()),
                    pair.y_true,
                    pair.y_pred,
                    pair.absolute_error(),
                    OrEmpty(latency)
                );
                self.rows.append_line(line)?;
                self.counts.rows += 1;
            }
            Offer::Pending if journal => {
                write_pending(line, &half, now_ms);
                self.journal.append_line(line)?;
                self.journal_lines += 1;
            }
            Offer::Pending => {}
            Offer::Duplicate => self.counts.duplicates += 1,
            Offer::Late(orphan) => self.write_orphan(&orphan, now_ms)?,
        }
        Ok(())
    }

    fn write_orphan(&mut self, orphan: &Orphan, now_ms: u64) -> Result<()> {
        self.line.clear();
        let half = &orphan.half;
        let _ = write!(
            self.line,
            "{},{},{},{},{},{}",
            fields::escape(half.id.as_str()),
            half.side.as_str(),
            half.value,
            orphan.arrived_ms,
            now_ms,
            orphan.cause.as_str()
        );
        self.orphans.append_line(&self.line)?;
        self.counts.orphans += 1;
        Ok(())
    }

    /// Moves halves that waited too long (or exceed the cap) to `orphans.csv`.
    pub fn evict(&mut self, now_ms: u64) -> Result<()> {
        for orphan in self.join.evict(now_ms) {
            self.write_orphan(&orphan, now_ms)?;
        }
        Ok(())
    }

    /// Makes everything accepted so far durable (against a crash of the process), and
    /// compacts the journal when it has grown well past the halves still waiting.
    pub fn flush(&mut self) -> Result<()> {
        self.rows.flush()?;
        self.orphans.flush()?;
        self.journal.flush()?;
        if self.journal_lines >= COMPACT_AFTER_LINES
            && self.journal_lines >= 4 * self.join.pending_len()
        {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal with just the halves still waiting. Their matches and
    /// evictions must already be flushed, which [`flush`](Self::flush) ensures.
    fn compact(&mut self) -> Result<()> {
        self.rows.flush()?;
        self.orphans.flush()?;
        let lines: Vec<String> = self
            .join
            .pending()
            .map(|(half, arrived_ms)| {
                let mut line = String::new();
                write_pending(&mut line, half, arrived_ms);
                line
            })
            .collect();
        self.journal.rewrite(lines.iter().map(String::as_str))?;
        self.journal_lines = lines.len();
        Ok(())
    }

    pub fn counts(&self) -> Counts {
        Counts {
            pending: self.join.pending_len(),
            ..self.counts
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(side: Side, id: &str, value: f64) -> Half {
        Half {
            side,
            id: MessageId::Text(id.into()),
            value,
            published_us: Some(1),
        }
    }

    fn limits(ttl_ms: u64) -> JoinLimits {
        JoinLimits {
            ttl_ms,
            ..JoinLimits::default()
        }
    }

    fn rows(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(METRIC_LOG)).expect("log exists");
        text.lines().skip(1).map(str::to_owned).collect()
    }

    #[test]
    fn a_pair_split_by_a_restart_is_still_joined_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::open(dir.path(), limits(60_000), 0).expect("open");
        ledger
            .accept(half(Side::Truth, "a", 151.0), 0)
            .expect("accept");
        ledger.flush().expect("flush");
        drop(ledger);
        let mut ledger = Ledger::open(dir.path(), limits(60_000), 10).expect("reopen");
        assert_eq!(ledger.counts().pending, 1);
        ledger
            .accept(half(Side::Prediction, "a", 140.5), 20)
            .expect("accept");
        // A redelivery of either half after the row is written changes nothing.
        ledger
            .accept(half(Side::Truth, "a", 151.0), 21)
            .expect("accept");
        ledger.flush().expect("flush");
        drop(ledger);
        let mut ledger = Ledger::open(dir.path(), limits(60_000), 30).expect("reopen");
        ledger
            .accept(half(Side::Prediction, "a", 140.5), 31)
            .expect("accept");
        ledger.flush().expect("flush");
        let rows = rows(dir.path());
        assert_eq!(rows.len(), 1);
        assert!(rows[0].starts_with("a,151,140.5,10.5,"), "{}", rows[0]);
        assert_eq!(ledger.counts().pending, 0);
    }

    #[test]
    fn a_restart_restores_only_the_halves_still_waiting_whatever_the_dedup_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tiny = JoinLimits {
            ttl_ms: 60_000,
            max_pending: 1_000,
            remembered: 1,
        };
        let mut ledger = Ledger::open(dir.path(), tiny, 0).expect("open");
        for n in 0..5 {
            ledger
                .accept(half(Side::Truth, &n.to_string(), 1.0), 0)
                .expect("accept");
        }
        for n in 0..4 {
            ledger
                .accept(half(Side::Prediction, &n.to_string(), 2.0), 0)
                .expect("accept");
        }
        ledger.flush().expect("flush");
        drop(ledger);
        let ledger = Ledger::open(dir.path(), tiny, 1).expect("reopen");
        assert_eq!(ledger.counts().pending, 1, "only item 4 still waits");
        assert_eq!(rows(dir.path()).len(), 4);
    }

    #[test]
    fn floats_round_trip_through_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::open(dir.path(), limits(60_000), 0).expect("open");
        let (t, p) = (0.1 + 0.2, 1.0 / 3.0);
        ledger.accept(half(Side::Truth, "x", t), 0).expect("accept");
        ledger
            .accept(half(Side::Prediction, "x", p), 0)
            .expect("accept");
        ledger.flush().expect("flush");
        let row = &rows(dir.path())[0];
        let fields: Vec<f64> = row
            .split(',')
            .skip(1)
            .take(3)
            .map(|f| f.parse().expect("float"))
            .collect();
        assert_eq!(fields, vec![t, p, (t - p).abs()]);
    }

    #[test]
    fn expired_halves_and_late_partners_go_to_orphans() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::open(dir.path(), limits(100), 0).expect("open");
        ledger
            .accept(half(Side::Truth, "lonely", 1.0), 0)
            .expect("accept");
        ledger.evict(150).expect("evict");
        ledger
            .accept(half(Side::Prediction, "lonely", 2.0), 160)
            .expect("accept");
        ledger.flush().expect("flush");
        let orphans = std::fs::read_to_string(dir.path().join(ORPHANS_LOG)).expect("orphans");
        let lines: Vec<&str> = orphans.lines().collect();
        assert_eq!(lines[0], ORPHANS_HEADER);
        assert_eq!(lines[1], "lonely,y_true,1,0,150,expired");
        assert_eq!(lines[2], "lonely,y_pred,2,160,160,late_partner");
        assert!(rows(dir.path()).is_empty());
        // After a restart the ID is still settled: more copies are duplicates.
        drop(ledger);
        let mut ledger = Ledger::open(dir.path(), limits(100), 200).expect("reopen");
        ledger
            .accept(half(Side::Truth, "lonely", 1.0), 200)
            .expect("accept");
        ledger
            .accept(half(Side::Prediction, "lonely", 2.0), 200)
            .expect("accept");
        assert_eq!(
            ledger.counts(),
            Counts {
                duplicates: 2,
                ..Counts::default()
            }
        );
    }

    #[test]
    fn the_journal_is_compacted_on_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::open(dir.path(), limits(60_000), 0).expect("open");
        for n in 0..10 {
            ledger
                .accept(half(Side::Truth, &n.to_string(), 1.0), 0)
                .expect("accept");
        }
        for n in 0..9 {
            ledger
                .accept(half(Side::Prediction, &n.to_string(), 1.0), 0)
                .expect("accept");
        }
        ledger.flush().expect("flush");
        drop(ledger);
        Ledger::open(dir.path(), limits(60_000), 1).expect("reopen");
        let journal = std::fs::read_to_string(dir.path().join(PENDING_JOURNAL)).expect("journal");
        assert_eq!(
            journal.lines().count(),
            2,
            "header + the one half still waiting:\n{journal}"
        );
    }

    #[test]
    fn a_log_with_another_header_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(METRIC_LOG),
            "id,y_true,y_pred,absolute_error\n",
        )
        .expect("write");
        let error = Ledger::open(dir.path(), limits(1), 0)
            .err()
            .expect("refused");
        assert!(format!("{error:#}").contains(METRIC_HEADER));
    }
}
