//! nnmon's CSV files: written append-only by `metric`, read incrementally by `plot`.
//!
//! # Layout
//! - [`fields`]: CSV quoting and splitting of one line (IDs may hold commas or quotes).
//! - [`CsvAppender`]: opens a log for appending. It checks the header (never appends rows
//!   of another shape), cuts off a torn last line left by a crash mid-write, hands every
//!   existing row to the caller (so `metric` can rebuild its memory of written IDs), and
//!   buffers appends until [`CsvAppender::flush`]. [`CsvAppender::rewrite`] replaces a
//!   file atomically (journal compaction).
//! - [`LogTail`]: reads only the complete lines appended since its last call, so a refresh
//!   costs O(new rows) and never sees half a row.
//!
//! Data flows rows → `CsvAppender::append` → file → `LogTail::read_new` → parsed fields.

mod appender;
pub mod fields;
mod tail;

pub use appender::{CsvAppender, CsvError, OpenReport};
pub use tail::{LogTail, TailEvent};
