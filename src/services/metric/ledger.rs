//! The metric's durable state: the join plus the three files that make it survive a crash.
//!
//! - `metric_log.csv`: one row per matched pair.
//! - `orphans.csv`: halves whose partner did not come (or came after they were given up).
//! - `join_pending.csv`: a journal of halves waiting for their partner. It lets `metric`
//!   ack them at once and still have them after a restart. Each line also notes how long
//!   the two logs were when the half arrived: whatever settled it later was written past
//!   that point, so a restart checks the journal exactly by reading the logs from there,
//!   never from their start. The journal is emptied whenever nothing waits and compacted
//!   to the halves still waiting whenever it grows well past them.
//!
//! On open, the logs are read from the end: the rows since the oldest journal line, and
//! the last `remembered` rows (the join's memory of written IDs), whichever is more. Start
//! time therefore depends on the journal and the dedup window, not on the log's length.
//!
//! [`Ledger::accept`] and [`Ledger::evict`] only buffer; [`Ledger::flush`] makes all of
//! it durable, and the caller acks only after that. A matched row's latency is stamped at
//! the flush that writes it, the closest point to "durable" a row can carry in itself.

use anyhow::{Context, Result};
use nnmon_csvlog::{CsvAppender, CsvError, Record, StringRecord, read_rows};
use nnmon_join::{EvictionCause, Half, Join, JoinLimits, Offer, Orphan, Pair, Side};
use nnmon_proto::MessageId;
use std::collections::HashMap;
use std::path::Path;
use tracing::{info, warn};

pub const METRIC_LOG: &str = "metric_log.csv";
pub const METRIC_HEADER: &str = "id,y_true,y_pred,absolute_error,latency_us";
pub const ORPHANS_LOG: &str = "orphans.csv";
const ORPHANS_HEADER: &str = "id,side,value,arrived_ms,evicted_ms,cause";
pub const PENDING_JOURNAL: &str = "join_pending.csv";
const PENDING_HEADER: &str = "id,side,value,published_us,arrived_ms,rows_from,orphans_from";
/// The journal's header before it noted the logs' lengths (read, then rewritten).
const LEGACY_PENDING_HEADER: &str = "id,side,value,published_us,arrived_ms";
/// The journal is compacted once it holds this many lines and four times the waiting halves.
const COMPACT_AFTER_LINES: usize = 10_000;

/// A row written by a flush: what monitoring needs of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WrittenRow {
    pub y_true: f64,
    pub y_pred: f64,
    pub latency_us: Option<u64>,
}

/// What the ledger did since the caller last asked ([`Ledger::take_events`]).
#[derive(Debug, Default)]
pub struct Events {
    pub rows: Vec<WrittenRow>,
    pub orphans: Vec<(Side, EvictionCause)>,
    pub duplicates: u64,
}

/// What the ledger has done since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub rows: u64,
    pub duplicates: u64,
    pub orphans: u64,
    pub waiting_truths: usize,
    pub waiting_predictions: usize,
}

pub struct Ledger {
    join: Join,
    rows: CsvAppender,
    orphans: CsvAppender,
    journal: CsvAppender,
    journal_lines: usize,
    /// The lengths of `metric_log.csv` and `orphans.csv` at the end of the last flush:
    /// line starts, and lower bounds of where anything settled later is written. (Between
    /// flushes, the writers' buffers may have been handed out mid-record.)
    flushed_lens: (u64, u64),
    /// Pairs matched since the last flush, written (with their latency) by the flush.
    matched: Vec<Pair>,
    counts: Counts,
    events: Events,
    record: Record,
}

fn parse_side(text: &str) -> Option<Side> {
    [Side::Truth, Side::Prediction]
        .into_iter()
        .find(|side| side.as_str() == text)
}

/// A half waiting in the journal, and where its settlement would be in the logs.
struct Journaled {
    half: Half,
    arrived_ms: u64,
    rows_from: u64,
    orphans_from: u64,
}

/// A journal line back into a waiting half; a legacy line has no offsets (read the logs
/// from their start).
fn parse_pending(row: &StringRecord) -> Option<Journaled> {
    let field = |i: usize| row.get(i);
    let offset = |i: usize| match field(i) {
        Some(text) => text.parse().ok(),
        None => Some(0),
    };
    let half = Half {
        side: parse_side(field(1)?)?,
        id: MessageId::Text(field(0)?.into()),
        value: field(2)?.parse().ok().filter(|v: &f64| v.is_finite())?,
        published_us: field(3)?.parse().ok(),
    };
    Some(Journaled {
        half,
        arrived_ms: field(4)?.parse().ok()?,
        rows_from: offset(5)?,
        orphans_from: offset(6)?,
    })
}

/// The journal record of a half that arrived at `arrived_ms`, whose settlement will be in
/// the logs past `rows_from` and `orphans_from`.
fn pending_record(record: &mut Record, half: &Half, arrived_ms: u64, offsets: (u64, u64)) {
    record
        .clear()
        .push(half.id.as_str())
        .push(half.side.as_str())
        .push_display(half.value)
        .push_optional(half.published_us)
        .push_display(arrived_ms)
        .push_display(offsets.0)
        .push_display(offsets.1);
}

/// The `metric_log.csv` record of a matched pair.
pub fn row_record(record: &mut Record, pair: &Pair, latency_us: Option<u64>) {
    record
        .clear()
        .push(pair.id.as_str())
        .push_display(pair.y_true)
        .push_display(pair.y_pred)
        .push_display(pair.absolute_error())
        .push_optional(latency_us);
}

/// Reads the journal (a legacy one is rewritten in today's format first).
fn read_journal(path: &Path) -> Result<(CsvAppender, Vec<Journaled>)> {
    let legacy = match CsvAppender::check(path, PENDING_HEADER) {
        Err(CsvError::HeaderMismatch { found, .. }) if found == LEGACY_PENDING_HEADER => true,
        other => {
            other?;
            false
        }
    };
    let mut waiting = Vec::new();
    let mut unreadable = 0;
    read_rows(path, 0, 0, |row| match parse_pending(row) {
        Some(half) => waiting.push(half),
        None => unreadable += 1,
    })?;
    if unreadable > 0 {
        warn!(
            file = %path.display(),
            lines = unreadable,
            "skipped unreadable pending-journal lines"
        );
    }
    let journal = if legacy {
        let mut records = Vec::with_capacity(waiting.len());
        for waiting in &waiting {
            let mut record = Record::default();
            pending_record(&mut record, &waiting.half, waiting.arrived_ms, (0, 0));
            records.push(record);
        }
        CsvAppender::create(path, PENDING_HEADER, &records)?
    } else {
        CsvAppender::open(path, PENDING_HEADER)?.0
    };
    Ok((journal, waiting))
}

impl Ledger {
    /// Opens the files in `log_dir` and rebuilds the join from them. Refuses, creating
    /// nothing, when any of them has another header.
    pub fn open(log_dir: &Path, limits: JoinLimits, now_ms: u64) -> Result<Self> {
        let paths = [METRIC_LOG, ORPHANS_LOG].map(|name| log_dir.join(name));
        CsvAppender::check(&paths[0], METRIC_HEADER)?;
        CsvAppender::check(&paths[1], ORPHANS_HEADER)?;
        let (journal, journaled) = read_journal(&log_dir.join(PENDING_JOURNAL))?;
        let (rows, report) = CsvAppender::open(&paths[0], METRIC_HEADER)?;
        if report.repaired_bytes > 0 {
            warn!(file = %rows.path().display(), bytes = report.repaired_bytes, "cut off a torn last line left by a crash");
        }
        let (orphans, _) = CsvAppender::open(&paths[1], ORPHANS_HEADER)?;

        // The journal's halves wait unless the logs say they were settled: an exact check
        // of everything written since the oldest of them arrived.
        let rows_from = journaled.iter().map(|j| j.rows_from).min();
        let orphans_from = journaled.iter().map(|j| j.orphans_from).min();
        let journal_lines = journaled.len();
        let mut waiting: HashMap<MessageId, Journaled> = journaled
            .into_iter()
            .map(|j| (j.half.id.clone(), j))
            .collect();
        let mut join = Join::new(limits);
        let first_id = |row: &StringRecord| MessageId::Text(row.get(0).unwrap_or_default().into());
        let read = read_rows(
            &paths[0],
            rows_from.unwrap_or(u64::MAX),
            limits.remembered,
            |row| {
                let id = first_id(row);
                waiting.remove(&id);
                join.remember_written(&id);
            },
        )?;
        read_rows(
            &paths[1],
            orphans_from.unwrap_or(u64::MAX),
            limits.remembered,
            |row| {
                let id = first_id(row);
                waiting.remove(&id);
                // A late partner settles its ID for good; an evicted half still awaits one.
                match (row.get(1).and_then(parse_side), row.get(5)) {
                    (_, Some(cause)) if cause == EvictionCause::LatePartner.as_str() => {
                        join.remember_written(&id)
                    }
                    (Some(side), _) => join.remember_evicted(&id, side),
                    (None, _) => warn!(row = ?row, "skipping an unreadable orphans line"),
                }
            },
        )?;
        let flushed_lens = (rows.durable_len(), orphans.durable_len());
        let mut ledger = Self {
            join,
            rows,
            orphans,
            journal,
            journal_lines,
            flushed_lens,
            matched: Vec::new(),
            counts: Counts::default(),
            events: Events::default(),
            record: Record::default(),
        };
        let mut restored: Vec<Journaled> = waiting.into_values().collect();
        restored.sort_by_key(|j| j.arrived_ms);
        for Journaled {
            half, arrived_ms, ..
        } in restored
        {
            // A half without a publish time waits by the wall clock; the time the metric
            // was down (its partner unread in the broker) must not count against it.
            let arrived_ms = if half.published_ms().is_some() {
                arrived_ms
            } else {
                now_ms
            };
            ledger.offer(half, arrived_ms, false)?;
        }
        ledger.join.resume_at(now_ms);
        ledger.evict(now_ms)?;
        ledger.flush()?;
        ledger.compact().context("compacting the pending journal")?;
        info!(
            rows_read = read.rows,
            waiting = ledger.join.pending_len(),
            journal_lines,
            "metric state rebuilt from the end of the logs"
        );
        Ok(ledger)
    }

    /// Takes one half that arrived at `now_ms`.
    pub fn accept(&mut self, half: Half, now_ms: u64) -> Result<()> {
        self.offer(half, now_ms, true)
    }

    fn offer(&mut self, half: Half, now_ms: u64, journal: bool) -> Result<()> {
        if journal {
            // Formatted before the join takes the half, appended only if it waits.
            pending_record(&mut self.record, &half, now_ms, self.flushed_lens);
        }
        match self.join.offer(half, now_ms) {
            Offer::Matched(pair) => self.matched.push(pair),
            Offer::Pending if journal => {
                self.journal.append(&self.record)?;
                self.journal_lines += 1;
            }
            Offer::Pending => {}
            Offer::Duplicate => {
                self.counts.duplicates += 1;
                self.events.duplicates += 1;
            }
            Offer::Late(orphan) => self.write_orphan(&orphan, now_ms)?,
        }
        Ok(())
    }

    fn write_orphan(&mut self, orphan: &Orphan, now_ms: u64) -> Result<()> {
        let half = &orphan.half;
        self.record
            .clear()
            .push(half.id.as_str())
            .push(half.side.as_str())
            .push_display(half.value)
            .push_display(orphan.arrived_ms)
            .push_display(now_ms)
            .push(orphan.cause.as_str());
        self.orphans.append(&self.record)?;
        self.counts.orphans += 1;
        self.events.orphans.push((half.side, orphan.cause));
        Ok(())
    }

    /// Moves halves whose partner will not come to `orphans.csv` (see `nnmon_join`).
    pub fn evict(&mut self, now_ms: u64) -> Result<()> {
        for orphan in self.join.evict(now_ms) {
            self.write_orphan(&orphan, now_ms)?;
        }
        Ok(())
    }

    /// Whether more halves of `side` may be taken now (backpressure, see `nnmon_join`).
    pub fn accepts(&self, side: Side) -> bool {
        self.join.accepts(side)
    }

    /// Makes everything accepted so far durable (against a crash of the process), then
    /// empties or compacts the journal when it holds settled halves.
    pub fn flush(&mut self) -> Result<()> {
        let now_us = crate::services::now_us();
        for pair in self.matched.drain(..) {
            let latency = pair.published_us.map(|p| now_us.saturating_sub(p));
            row_record(&mut self.record, &pair, latency);
            self.rows.append(&self.record)?;
            self.counts.rows += 1;
            self.events.rows.push(WrittenRow {
                y_true: pair.y_true,
                y_pred: pair.y_pred,
                latency_us: latency,
            });
        }
        self.rows.flush()?;
        self.orphans.flush()?;
        self.journal.flush()?;
        self.flushed_lens = (self.rows.durable_len(), self.orphans.durable_len());
        let waiting = self.join.pending_len();
        if waiting == 0 && self.journal_lines > 0 {
            // Everything journaled is settled in the logs flushed above.
            self.journal.clear()?;
            self.journal_lines = 0;
        } else if self.journal_lines >= COMPACT_AFTER_LINES && self.journal_lines >= 4 * waiting {
            self.compact()?;
        }
        Ok(())
    }

    /// Rewrites the journal with just the halves still waiting. The logs must be flushed
    /// (so that nothing settled later can be written before the lengths noted now).
    fn compact(&mut self) -> Result<()> {
        let offsets = (self.rows.durable_len(), self.orphans.durable_len());
        debug_assert_eq!(offsets, self.flushed_lens, "compacting unflushed logs");
        let records: Vec<Record> = self
            .join
            .pending()
            .into_iter()
            .map(|(half, arrived_ms)| {
                let mut record = Record::default();
                pending_record(&mut record, half, arrived_ms, offsets);
                record
            })
            .collect();
        self.journal.rewrite(&records)?;
        self.journal_lines = records.len();
        Ok(())
    }

    /// What happened since the last call: rows written (by flushes), orphans, duplicates.
    pub fn take_events(&mut self) -> Events {
        std::mem::take(&mut self.events)
    }

    pub fn counts(&self) -> Counts {
        Counts {
            waiting_truths: self.join.pending_on(Side::Truth),
            waiting_predictions: self.join.pending_on(Side::Prediction),
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

    /// Accepts the `side` halves of items `items`, with IDs their numbers.
    fn accept_all(ledger: &mut Ledger, side: Side, items: std::ops::Range<u32>, value: f64) {
        for n in items {
            ledger
                .accept(half(side, &n.to_string(), value), 0)
                .expect("accept");
        }
    }

    fn limits(grace_ms: u64) -> JoinLimits {
        JoinLimits {
            grace_ms,
            ..JoinLimits::default()
        }
    }

    fn rows(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(METRIC_LOG)).expect("log exists");
        text.lines().skip(1).map(str::to_owned).collect()
    }

    fn journal(dir: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(PENDING_JOURNAL)).expect("journal exists");
        text.lines().map(str::to_owned).collect()
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
        assert_eq!(ledger.counts().waiting_truths, 1);
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
        assert_eq!(ledger.counts().waiting_truths, 0);
    }

    #[test]
    fn a_restart_restores_only_the_halves_still_waiting_whatever_the_dedup_window() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tiny = JoinLimits {
            grace_ms: 60_000,
            max_pending: 1_000,
            remembered: 1,
        };
        let mut ledger = Ledger::open(dir.path(), tiny, 0).expect("open");
        for n in 0..5 {
            ledger
                .accept(half(Side::Truth, &n.to_string(), 1.0), 0)
                .expect("accept");
            // Flushed one by one, so each line notes a different log length.
            ledger.flush().expect("flush");
        }
        accept_all(&mut ledger, Side::Prediction, 0..4, 2.0);
        ledger.flush().expect("flush");
        drop(ledger);
        let ledger = Ledger::open(dir.path(), tiny, 1).expect("reopen");
        assert_eq!(ledger.counts().waiting_truths, 1, "only item 4 still waits");
        assert_eq!(rows(dir.path()).len(), 4);
    }

    #[test]
    fn a_restart_reads_the_logs_from_the_end_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let window = JoinLimits {
            grace_ms: 60_000,
            max_pending: 1_000,
            remembered: 10,
        };
        let mut ledger = Ledger::open(dir.path(), window, 0).expect("open");
        accept_all(&mut ledger, Side::Truth, 0..1_000, 1.0);
        accept_all(&mut ledger, Side::Prediction, 0..1_000, 1.0);
        ledger
            .accept(half(Side::Truth, "late", 1.0), 0)
            .expect("accept");
        ledger.flush().expect("flush");
        drop(ledger);
        // Rows written after the waiting half: read from the half's offset, not the start.
        let path = dir.path().join(METRIC_LOG);
        let mut read = 0;
        let report = read_rows(&path, u64::MAX, window.remembered, |_| read += 1).expect("read");
        assert_eq!((read, report.rows), (10, 10));
        let ledger = Ledger::open(dir.path(), window, 1).expect("reopen");
        assert_eq!(ledger.counts().waiting_truths, 1);
    }

    #[test]
    fn the_journal_is_empty_while_nothing_waits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ledger = Ledger::open(dir.path(), limits(60_000), 0).expect("open");
        for n in 0..10 {
            ledger
                .accept(half(Side::Truth, &n.to_string(), 1.0), 0)
                .expect("accept");
            ledger.flush().expect("flush");
        }
        assert_eq!(journal(dir.path()).len(), 11);
        accept_all(&mut ledger, Side::Prediction, 0..10, 1.0);
        ledger.flush().expect("flush");
        assert_eq!(journal(dir.path()), vec![PENDING_HEADER]);
    }

    #[test]
    fn a_legacy_journal_is_read_and_rewritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(PENDING_JOURNAL),
            format!("{LEGACY_PENDING_HEADER}\nsettled,y_true,1,5,0\nwaiting,y_true,2,5,0\n"),
        )
        .expect("write");
        std::fs::write(
            dir.path().join(METRIC_LOG),
            format!("{METRIC_HEADER}\nsettled,1,1,0,9\n"),
        )
        .expect("write");
        let ledger = Ledger::open(dir.path(), limits(60_000), 0).expect("open");
        assert_eq!(ledger.counts().waiting_truths, 1);
        let lines = journal(dir.path());
        assert_eq!(lines[0], PENDING_HEADER);
        assert!(lines[1].starts_with("waiting,y_true,2,5,0,"), "{lines:?}");
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
        let untimed = |side, value| Half {
            published_us: None,
            ..half(side, "lonely", value)
        };
        ledger.accept(untimed(Side::Truth, 1.0), 0).expect("accept");
        ledger.evict(150).expect("evict");
        ledger
            .accept(untimed(Side::Prediction, 2.0), 160)
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
            .accept(untimed(Side::Truth, 1.0), 200)
            .expect("accept");
        ledger
            .accept(untimed(Side::Prediction, 2.0), 200)
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
        accept_all(&mut ledger, Side::Truth, 0..10, 1.0);
        ledger.flush().expect("flush");
        accept_all(&mut ledger, Side::Prediction, 0..9, 1.0);
        ledger.flush().expect("flush");
        drop(ledger);
        Ledger::open(dir.path(), limits(60_000), 1).expect("reopen");
        let journal = journal(dir.path());
        assert_eq!(
            journal.len(),
            2,
            "header + the one half still waiting:\n{journal:?}"
        );
    }

    #[test]
    fn a_log_with_another_header_is_refused_and_nothing_is_created() {
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
        let files: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(files, vec![std::ffi::OsString::from(METRIC_LOG)]);
    }
}
