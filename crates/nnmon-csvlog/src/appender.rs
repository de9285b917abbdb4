use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a CSV file could not be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum CsvError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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

/// What [`CsvAppender::open`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The file did not exist (or was empty) and was created with its header.
    pub created: bool,
    /// Complete rows already in the file.
    pub rows: usize,
    /// Bytes of a torn last line that were cut off.
    pub repaired_bytes: u64,
}

/// An append-only CSV file with a fixed header. See the crate docs.
#[derive(Debug)]
pub struct CsvAppender {
    path: PathBuf,
    header: String,
    out: BufWriter<File>,
}

impl CsvAppender {
    /// Opens (or creates) `path` for appending rows under `header`, calling `on_row` with
    /// every complete row already in the file.
    pub fn open(
        path: &Path,
        header: &str,
        mut on_row: impl FnMut(&str),
    ) -> Result<(Self, OpenReport), CsvError> {
        let io_error = |source| CsvError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let mut report = OpenReport::default();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error)?;
        let mut reader = BufReader::with_capacity(1 << 20, &file);
        let mut line = Vec::new();
        let mut complete_len = 0u64;
        let mut found_header: Option<String> = None;
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line).map_err(io_error)?;
            if read == 0 {
                break;
            }
            if line.last() != Some(&b'\n') {
                report.repaired_bytes = read as u64;
                break;
            }
            complete_len += read as u64;
            let text = String::from_utf8_lossy(&line);
            let text = text.trim_end_matches(['\n', '\r']);
            if found_header.is_none() {
                found_header = Some(text.to_owned());
            } else if !text.is_empty() {
                on_row(text);
                report.rows += 1;
            }
        }
        drop(reader);
        match found_header {
            Some(found) if found != header => {
                return Err(CsvError::HeaderMismatch {
                    path: path.to_owned(),
                    found,
                    expected: header.to_owned(),
                });
            }
            Some(_) => {}
            None => {
                // Empty, or only a torn header: check the torn part really is ours.
                if report.repaired_bytes > 0 {
                    let torn = std::fs::read(path).map_err(io_error)?;
                    if !header.as_bytes().starts_with(&torn) {
                        return Err(CsvError::HeaderMismatch {
                            path: path.to_owned(),
                            found: String::from_utf8_lossy(&torn).into_owned(),
                            expected: header.to_owned(),
                        });
                    }
                }
                report.created = true;
            }
        }
        if report.repaired_bytes > 0 {
            file.set_len(complete_len).map_err(io_error)?;
        }
        let mut appender = Self {
            path: path.to_owned(),
            header: header.to_owned(),
            out: BufWriter::with_capacity(1 << 16, file),
        };
        if report.created {
            appender.append_line(header)?;
            appender.flush()?;
        }
        Ok((appender, report))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: io::Error) -> CsvError {
        CsvError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Buffers one row (without its line break). Nothing reaches the file before
    /// [`flush`](Self::flush) or a full buffer.
    pub fn append_line(&mut self, line: &str) -> Result<(), CsvError> {
        let result = self
            .out
            .write_all(line.as_bytes())
            .and_then(|()| self.out.write_all(b"\n"));
        result.map_err(|e| self.io_error(e))
    }

    /// Hands every buffered row to the operating system: after this a crash of the process
    /// (not of the machine) loses none of them.
    pub fn flush(&mut self) -> Result<(), CsvError> {
        self.out.flush().map_err(|e| self.io_error(e))
    }

    /// Replaces the file's rows with `lines` atomically: written to a temporary file,
    /// synced, then renamed over the original.
    pub fn rewrite<'a>(
        &mut self,
        lines: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), CsvError> {
        self.flush()?;
        let mut tmp_name = self.path.as_os_str().to_owned();
        tmp_name.push(".tmp");
        let tmp = PathBuf::from(tmp_name);
        let write = || -> io::Result<File> {
            let mut out = BufWriter::new(File::create(&tmp)?);
            writeln!(out, "{}", self.header)?;
            for line in lines {
                writeln!(out, "{line}")?;
            }
            let file = out.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            OpenOptions::new().append(true).open(&self.path)
        };
        let file = write().map_err(|e| self.io_error(e))?;
        self.out = BufWriter::with_capacity(1 << 16, file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "id,value";

    fn open(path: &Path) -> Result<(CsvAppender, OpenReport, Vec<String>), CsvError> {
        let mut rows = Vec::new();
        let (appender, report) = CsvAppender::open(path, HEADER, |row| rows.push(row.to_owned()))?;
        Ok((appender, report, rows))
    }

    #[test]
    fn creates_then_appends_under_the_same_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/log.csv");
        let (mut log, report, _) = open(&path).expect("open");
        assert!(report.created);
        log.append_line("a,1").expect("append");
        log.flush().expect("flush");
        drop(log);
        let (mut log, report, rows) = open(&path).expect("reopen");
        assert_eq!(
            (report.created, report.rows, rows),
            (false, 1, vec!["a,1".to_owned()])
        );
        log.append_line("b,2").expect("append");
        log.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,value\na,1\nb,2\n"
        );
    }

    #[test]
    fn cuts_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,value\na,1\nb,2").expect("write");
        let (mut log, report, rows) = open(&path).expect("open");
        assert_eq!((report.rows, report.repaired_bytes, rows.len()), (1, 3, 1));
        log.append_line("c,3").expect("append");
        log.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,value\na,1\nc,3\n"
        );
    }

    #[test]
    fn completes_a_torn_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,va").expect("write");
        let (_, report, _) = open(&path).expect("open");
        assert!(report.created);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "id,value\n");
    }

    #[test]
    fn refuses_another_header_and_names_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,y_true,y_pred,absolute_error\n1,2,3,1\n").expect("write");
        let message = open(&path).expect_err("mismatch").to_string();
        assert!(
            message.contains("log.csv")
                && message.contains("id,y_true,y_pred,absolute_error")
                && message.contains(HEADER),
            "{message}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,y_true,y_pred,absolute_error\n1,2,3,1\n"
        );
    }

    #[test]
    fn rewrite_replaces_the_rows_and_keeps_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        let (mut log, _, _) = open(&path).expect("open");
        for line in ["a,1", "b,2", "c,3"] {
            log.append_line(line).expect("append");
        }
        log.rewrite(["b,2"]).expect("rewrite");
        log.append_line("d,4").expect("append");
        log.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,value\nb,2\nd,4\n"
        );
    }
}
