use crate::{CsvError, scan};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::Path;

/// What [`read_rows`] read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadReport {
    /// Where reading started (0: the whole file).
    pub start: u64,
    /// Rows handed to the caller.
    pub rows: usize,
    /// Rows skipped because they were not UTF-8 (nnmon never writes such rows).
    pub unreadable: usize,
}

/// Hands the rows of the CSV file at `path` to `on_row`: every row from byte offset `from`
/// (a line start the caller noted earlier, such as [`CsvAppender::durable_len`]) on, and at
/// least the last `last_rows` rows, however far back those start. A missing file has no
/// rows. The header is never handed out.
///
/// [`CsvAppender::durable_len`]: crate::CsvAppender::durable_len
pub fn read_rows(
    path: &Path,
    from: u64,
    last_rows: usize,
    mut on_row: impl FnMut(&csv::StringRecord),
) -> Result<ReadReport, CsvError> {
    let io_error = |source| CsvError::io(path, source);
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(ReadReport::default()),
        Err(e) => return Err(io_error(e)),
    };
    let len = file.metadata().map_err(io_error)?.len();
    let complete = scan::end_of_last_line(&mut file, len).map_err(io_error)?;
    let tail_start = scan::start_of_last_lines(&mut file, complete, last_rows).map_err(io_error)?;
    let start = from.min(tail_start);
    file.seek(SeekFrom::Start(start)).map_err(io_error)?;
    let reader = BufReader::with_capacity(1 << 20, file.take(complete - start));
    let (rows, unreadable) = parse_rows(reader, start == 0, |row| on_row(row))
        .map_err(|e| CsvError::from_csv(path, e))?;
    Ok(ReadReport {
        start,
        rows,
        unreadable,
    })
}

/// Hands at most `max_rows` complete rows of the CSV file at `path`, from byte offset
/// `from` on (0: the file's start, whose header is skipped; otherwise a line start this
/// function returned before), to `on_row`. Returns the offset just past the last row
/// handed out: where the next call goes on, and how far a follower that has dealt with
/// those rows may note it got (`from` itself when there is nothing new). A missing file
/// has no rows; a torn last line is left for a later call.
pub fn read_rows_from(
    path: &Path,
    from: u64,
    max_rows: usize,
    mut on_row: impl FnMut(&csv::StringRecord),
) -> Result<u64, CsvError> {
    let io_error = |source| CsvError::io(path, source);
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(from),
        Err(e) => return Err(io_error(e)),
    };
    let len = file.metadata().map_err(io_error)?.len();
    let complete = scan::end_of_last_line(&mut file, len).map_err(io_error)?;
    if complete <= from {
        return Ok(from);
    }
    file.seek(SeekFrom::Start(from)).map_err(io_error)?;
    let input = BufReader::with_capacity(1 << 16, file.take(complete - from));
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(from == 0)
        .flexible(true)
        .from_reader(input);
    let mut row = csv::StringRecord::new();
    let mut rows = 0;
    // Every row read but the last `max_rows`-th is followed by another or by the end:
    // the reader's position after a row is the start of the next line.
    while rows < max_rows {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {
                on_row(&row);
                rows += 1;
            }
            // nnmon never writes such rows; passed over like `read_rows` does.
            Err(error) if matches!(error.kind(), csv::ErrorKind::Utf8 { .. }) => {}
            Err(error) => return Err(CsvError::from_csv(path, error)),
        }
    }
    Ok(from + reader.position().byte())
}

/// Parses complete CSV lines from `input`, skipping the first one when it is the header,
/// and hands each row to `on_row`. Returns the number of rows handed out and of rows
/// skipped for not being UTF-8.
pub(crate) fn parse_rows(
    input: impl Read,
    skip_header: bool,
    mut on_row: impl FnMut(&csv::StringRecord),
) -> Result<(usize, usize), csv::Error> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(input);
    let mut row = csv::StringRecord::new();
    let (mut rows, mut unreadable) = (0, 0);
    let mut skip = skip_header;
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => return Ok((rows, unreadable)),
            Ok(true) if std::mem::take(&mut skip) => {}
            Ok(true) => {
                on_row(&row);
                rows += 1;
            }
            // The reader has moved past the bad row: go on with the next one.
            Err(error) if matches!(error.kind(), csv::ErrorKind::Utf8 { .. }) => {
                skip = false;
                unreadable += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CsvAppender, Record};
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_fields_without_line_breaks_round_trip(
            rows in proptest::collection::vec(proptest::collection::vec("[^\r\n]*", 1..5), 1..20),
        ) {
            let dir = tempfile::tempdir().expect("tempdir");
            let path = dir.path().join("log.csv");
            let (mut log, _) = CsvAppender::open(&path, "a,b").expect("open");
            let mut record = Record::default();
            for row in &rows {
                record.clear();
                for field in row {
                    record.push(field);
                }
                log.append(&record).expect("append");
            }
            log.flush().expect("flush");
            let mut back = Vec::new();
            read_rows(&path, 0, 0, |row| back.push(row.iter().map(str::to_owned).collect::<Vec<_>>()))
                .expect("read");
            prop_assert_eq!(back, rows);
        }
    }

    fn ids(path: &Path, from: u64, last_rows: usize) -> (ReadReport, Vec<String>) {
        let mut ids = Vec::new();
        let report = read_rows(path, from, last_rows, |row| {
            ids.push(row.get(0).unwrap_or_default().to_owned())
        })
        .expect("read");
        (report, ids)
    }

    #[test]
    fn reads_a_bounded_run_of_rows_and_says_where_to_go_on() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,v\na,1\n\"b,\"\"x\"\"\",2\nc,3\ntorn").expect("write");
        let mut seen = Vec::new();
        let mut take = |from, max| {
            read_rows_from(&path, from, max, |row| {
                seen.push(row.get(0).unwrap_or_default().to_owned())
            })
            .expect("read")
        };
        let after_a = take(0, 1);
        assert_eq!(after_a, 9, "row b starts at 9");
        let after_c = take(after_a, 10);
        assert_eq!(after_c, 25, "the torn line is left");
        assert_eq!(take(after_c, 10), after_c);
        assert_eq!(take(0, 0), 0);
        assert_eq!(seen, vec!["a", "b,\"x\"", "c"]);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b",4\n"))
            .expect("append");
        let mut last = Vec::new();
        let end = read_rows_from(&path, after_c, 10, |row| {
            last.push(row.get(1).map(str::to_owned))
        })
        .expect("read");
        assert_eq!((end, last), (32, vec![Some("4".to_owned())]));
        assert_eq!(
            read_rows_from(&dir.path().join("missing.csv"), 7, 1, |_| ()).expect("read"),
            7
        );
    }

    #[test]
    fn reads_from_an_offset_or_the_last_rows_whichever_is_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,v\na,1\n\"b,\"\"x\"\"\",2\nc,3\ntorn").expect("write");
        assert_eq!(ids(&path, u64::MAX, 0).1, Vec::<String>::new());
        assert_eq!(ids(&path, u64::MAX, 1).1, vec!["c"]);
        assert_eq!(ids(&path, u64::MAX, 2).1, vec!["b,\"x\"", "c"]);
        let (report, all) = ids(&path, u64::MAX, 10);
        assert_eq!(
            (report.start, all),
            (0, vec!["a".into(), "b,\"x\"".into(), "c".into()])
        );
        // Offset 9 is where row `b` starts.
        assert_eq!(ids(&path, 9, 1).1, vec!["b,\"x\"", "c"]);
        assert_eq!(
            ids(&dir.path().join("missing.csv"), 0, 9).1,
            Vec::<String>::new()
        );
    }
}
