use crate::CsvError;
use crate::record::Record;
use crate::scan;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// What [`CsvAppender::open`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// The file did not exist (or was empty) and was created with its header.
    pub created: bool,
    /// Bytes of a torn last line that were cut off.
    pub repaired_bytes: u64,
}

/// The file, counting the bytes handed to the operating system, so that the appender
/// knows how long the file is on disk without asking it.
#[derive(Debug)]
struct CountedFile {
    file: File,
    len: u64,
}

impl Write for CountedFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.write(buf)?;
        self.len += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// An append-only CSV file with a fixed header. See the crate docs.
#[derive(Debug)]
pub struct CsvAppender {
    path: PathBuf,
    header: String,
    /// A second handle on the file, to truncate it under the writer.
    file: File,
    out: csv::Writer<CountedFile>,
}

/// Bytes buffered before they are handed to the operating system.
const BUFFER_BYTES: usize = 1 << 16;

fn writer(file: File, len: u64) -> csv::Writer<CountedFile> {
    // Rows' shapes are the caller's constants; `flexible` spares a per-row length check.
    csv::WriterBuilder::new()
        .has_headers(false)
        .flexible(true)
        .buffer_capacity(BUFFER_BYTES)
        .from_writer(CountedFile { file, len })
}

impl CsvAppender {
    /// Opens (or creates) `path` for appending rows under `header`. Reads only the first
    /// line (to check the header) and the end (to cut a torn last line), so opening costs
    /// the same whatever the file holds.
    pub fn open(path: &Path, header: &str) -> Result<(Self, OpenReport), CsvError> {
        let io_error = |source| CsvError::io(path, source);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error)?;
        let (complete_len, report) = inspect(&mut file, path, header)?;
        let mut len = complete_len;
        if report.repaired_bytes > 0 {
            file.set_len(complete_len).map_err(io_error)?;
        }
        if report.created {
            // nnmon's own constant header, written as it is (its names need no quoting).
            writeln!(file, "{header}").map_err(io_error)?;
            len = header.len() as u64 + 1;
        }
        let appender = Self {
            path: path.to_owned(),
            header: header.to_owned(),
            out: writer(file.try_clone().map_err(io_error)?, len),
            file,
        };
        Ok((appender, report))
    }

    /// Checks, without creating or changing anything, that [`open`](Self::open) would
    /// accept the file at `path` (a missing file is accepted), so that a caller opening
    /// several files can refuse before creating any.
    pub fn check(path: &Path, header: &str) -> Result<(), CsvError> {
        match File::open(path) {
            Ok(mut file) => inspect(&mut file, path, header).map(|_| ()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CsvError::io(path, e)),
        }
    }

    /// Writes a new file at `path` holding `header` and `records`, atomically (a crash
    /// leaves the old file or the new one), and opens it for appending.
    pub fn create<'a>(
        path: &Path,
        header: &str,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<Self, CsvError> {
        let file = write_atomically(path, header, records)?;
        let io_error = |source| CsvError::io(path, source);
        let len = file.metadata().map_err(io_error)?.len();
        Ok(Self {
            path: path.to_owned(),
            header: header.to_owned(),
            out: writer(file.try_clone().map_err(io_error)?, len),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io_error(&self, source: io::Error) -> CsvError {
        CsvError::io(&self.path, source)
    }

    /// Buffers one row. Nothing reaches the file before [`flush`](Self::flush) or a full
    /// buffer.
    pub fn append(&mut self, record: &Record) -> Result<(), CsvError> {
        self.out
            .write_byte_record(record.fields())
            .map_err(|e| CsvError::from_csv(&self.path, e))
    }

    /// Hands every buffered row to the operating system: after this a crash of the process
    /// (not of the machine) loses none of them.
    pub fn flush(&mut self) -> Result<(), CsvError> {
        self.out.flush().map_err(|e| self.io_error(e))
    }

    /// How many bytes of the file the operating system has: rows appended before this
    /// offset survive a crash of the process; rows appended later start at or after it.
    pub fn durable_len(&self) -> u64 {
        self.out.get_ref().len
    }

    /// Removes every row, keeping the header. The file stays in place: a crash leaves
    /// either the old rows or none.
    pub fn clear(&mut self) -> Result<(), CsvError> {
        self.flush()?;
        let header_len = self.header.len() as u64 + 1;
        let result = self
            .file
            .set_len(header_len)
            .and_then(|()| self.file.try_clone());
        self.out = writer(result.map_err(|e| self.io_error(e))?, header_len);
        Ok(())
    }

    /// Replaces the file's rows with `records` atomically: written to a temporary file,
    /// synced, then renamed over the original.
    pub fn rewrite<'a>(
        &mut self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<(), CsvError> {
        self.flush()?;
        *self = Self::create(&self.path, &self.header, records)?;
        Ok(())
    }
}

/// Checks the header of an open file (seeking in it) and finds its complete length.
fn inspect(file: &mut File, path: &Path, header: &str) -> Result<(u64, OpenReport), CsvError> {
    let io_error = |source| CsvError::io(path, source);
    let mut report = OpenReport::default();
    let len = file.metadata().map_err(io_error)?.len();
    let complete_len = scan::end_of_last_line(file, len).map_err(io_error)?;
    report.repaired_bytes = len - complete_len;
    if complete_len == 0 {
        // Empty, or only a torn header: check the torn part really is ours.
        let mut torn = Vec::new();
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        (&*file)
            .take(len)
            .read_to_end(&mut torn)
            .map_err(io_error)?;
        if !header.as_bytes().starts_with(&torn) {
            return Err(CsvError::HeaderMismatch {
                path: path.to_owned(),
                found: String::from_utf8_lossy(&torn).into_owned(),
                expected: header.to_owned(),
            });
        }
        report.created = true;
    } else {
        let found = scan::first_line(file).map_err(io_error)?;
        if found != header {
            return Err(CsvError::HeaderMismatch {
                path: path.to_owned(),
                found,
                expected: header.to_owned(),
            });
        }
    }
    Ok((complete_len, report))
}

/// Writes `header` and `records` to a temporary file, syncs it and renames it over `path`;
/// returns the new file opened for appending.
fn write_atomically<'a>(
    path: &Path,
    header: &str,
    records: impl IntoIterator<Item = &'a Record>,
) -> Result<File, CsvError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let write = || -> Result<File, csv::Error> {
        let mut out = BufWriter::new(File::create(&tmp)?);
        writeln!(out, "{header}")?;
        let mut records_out = csv::WriterBuilder::new()
            .has_headers(false)
            .flexible(true)
            .from_writer(out);
        for record in records {
            records_out.write_byte_record(record.fields())?;
        }
        let out = records_out
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        Ok(OpenOptions::new().append(true).open(path)?)
    };
    write().map_err(|e| CsvError::from_csv(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "id,value";

    fn record(fields: &[&str]) -> Record {
        let mut record = Record::default();
        for field in fields {
            record.push(field);
        }
        record
    }

    fn append(log: &mut CsvAppender, fields: &[&str]) {
        log.append(&record(fields)).expect("append");
    }

    #[test]
    fn creates_then_appends_under_the_same_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/log.csv");
        let (mut log, report) = CsvAppender::open(&path, HEADER).expect("open");
        assert!(report.created);
        append(&mut log, &["a", "1"]);
        log.flush().expect("flush");
        assert_eq!(log.durable_len(), "id,value\na,1\n".len() as u64);
        drop(log);
        let (mut log, report) = CsvAppender::open(&path, HEADER).expect("reopen");
        assert_eq!(report, OpenReport::default());
        append(&mut log, &["b, with a comma", "2"]);
        log.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,value\na,1\n\"b, with a comma\",2\n"
        );
    }

    #[test]
    fn cuts_a_torn_last_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,value\na,1\nb,2").expect("write");
        let (mut log, report) = CsvAppender::open(&path, HEADER).expect("open");
        assert_eq!(report.repaired_bytes, 3);
        append(&mut log, &["c", "3"]);
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
        let (_, report) = CsvAppender::open(&path, HEADER).expect("open");
        assert!(report.created);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "id,value\n");
    }

    #[test]
    fn refuses_another_header_and_names_both() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,y_true,y_pred,absolute_error\n1,2,3,1\n").expect("write");
        assert!(CsvAppender::check(&path, HEADER).is_err());
        assert!(CsvAppender::check(&dir.path().join("missing.csv"), HEADER).is_ok());
        assert!(
            !dir.path().join("missing.csv").exists(),
            "check creates nothing"
        );
        let message = CsvAppender::open(&path, HEADER)
            .expect_err("mismatch")
            .to_string();
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
    fn rewrite_and_clear_replace_the_rows_and_keep_appending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        let (mut log, _) = CsvAppender::open(&path, HEADER).expect("open");
        for (id, value) in [("a", "1"), ("b", "2"), ("c", "3")] {
            append(&mut log, &[id, value]);
        }
        log.rewrite([&record(&["b", "2"])]).expect("rewrite");
        append(&mut log, &["d", "4"]);
        log.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,value\nb,2\nd,4\n"
        );
        assert_eq!(log.durable_len(), "id,value\nb,2\nd,4\n".len() as u64);
        log.clear().expect("clear");
        append(&mut log, &["e", "5"]);
        log.flush().expect("flush");
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "id,value\ne,5\n"
        );
    }

    #[test]
    fn errors_name_the_file_and_say_the_cause_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::create_dir(&path).expect("a folder where the file should be");
        let error = CsvAppender::open(&path, HEADER).expect_err("a folder is not a log");
        let chain: Vec<String> =
            std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect();
        let text = chain.join(": ");
        assert!(text.contains("log.csv"), "{text}");
        assert_eq!(text.matches("os error").count(), 1, "{text}");
    }
}
