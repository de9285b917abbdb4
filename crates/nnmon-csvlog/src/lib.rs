//! nnmon's CSV files: written append-only by `metric`, read incrementally by `plot`.
//!
//! The `csv` crate writes and parses the fields (IDs may hold commas or quotes); what is
//! nnmon's own is around it: files only ever appended to, a fixed header, repair after a
//! crash, and reading only the part of a file that is needed.
//!
//! # Layout
//! - [`Record`]: one row's fields, built without allocating per row.
//! - [`CsvAppender`]: opens a log for appending. It checks the header (never appends rows
//!   of another shape), cuts off a torn last line left by a crash mid-write, and buffers
//!   rows until [`CsvAppender::flush`]. It reads neither the rows nor the whole file, so
//!   opening a log of ten million rows is as quick as an empty one. It also says how much
//!   of the file is on disk ([`CsvAppender::durable_len`]), and replaces or empties a file
//!   (journal compaction).
//! - [`read_rows`]: the rows from a known offset, or the last N rows, read from the end;
//!   [`read_rows_from`]: a bounded run of rows from an offset, and where the next starts.
//! - [`LogTail`]: reads only the complete lines appended since its last call, so a refresh
//!   costs O(new rows) and never sees half a row.
//!
//! Data flows rows → `CsvAppender::append` → file → `read_rows` (metric's restart) or
//! `LogTail::read_new` (plot) → parsed fields.

mod appender;
mod reader;
mod record;
mod scan;
mod tail;

pub use appender::{CsvAppender, OpenReport};
pub use csv::StringRecord;
pub use reader::{ReadReport, read_rows, read_rows_from};
pub use record::Record;
pub use tail::{LogTail, TailEvent};

use std::io;
use std::path::{Path, PathBuf};

/// Why a CSV file could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("cannot read or write {path}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not valid CSV")]
    Malformed { path: PathBuf, source: csv::Error },
    #[error(
        "{path} has the header `{found}` but nnmon writes `{expected}`; \
         refusing to append rows of another shape (move the file away or use another --log-dir)"
    )]
    HeaderMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
}

impl CsvError {
    fn io(path: &Path, source: io::Error) -> Self {
        CsvError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn from_csv(path: &Path, error: csv::Error) -> Self {
        match error.kind() {
            // The same I/O failure, carried as such so that it reads like the others.
            csv::ErrorKind::Io(cause) => {
                CsvError::io(path, io::Error::new(cause.kind(), cause.to_string()))
            }
            _ => CsvError::Malformed {
                path: path.to_owned(),
                source: error,
            },
        }
    }
}
