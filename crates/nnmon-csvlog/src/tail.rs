use crate::reader::parse_rows;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How much of the file is read at once.
const CHUNK_BYTES: u64 = 4 << 20;
/// Most columns a [`LogTail`] extracts (they are handed out from an array on the stack, so
/// that no row allocates).
pub const MAX_COLUMNS: usize = 8;

/// What changed since the previous [`LogTail::read_new`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TailEvent {
    /// The file shrank or was replaced: everything read before is void, and the rows
    /// handed out in this call are the file's from its start.
    pub reset: bool,
    /// New complete rows handed out in this call.
    pub rows: usize,
}

/// Follows a growing CSV file, reading each byte once. See the crate docs.
#[derive(Debug)]
pub struct LogTail {
    path: PathBuf,
    column_names: Vec<String>,
    /// Indices of `column_names`, known once the header has been read.
    columns: Option<Vec<usize>>,
    /// The file's inode when last read: a new one means the file was replaced.
    inode: Option<u64>,
    /// Bytes of the file already consumed (always at a line boundary).
    offset: u64,
    buffer: Vec<u8>,
    chunk_bytes: u64,
}

impl LogTail {
    /// Follows `path`, extracting the columns named `column_names` in its header (at most
    /// [`MAX_COLUMNS`]; more are ignored).
    pub fn new(path: &Path, column_names: &[&str]) -> Self {
        Self {
            path: path.to_owned(),
            column_names: column_names
                .iter()
                .take(MAX_COLUMNS)
                .map(|&name| name.to_owned())
                .collect(),
            columns: None,
            inode: None,
            offset: 0,
            buffer: Vec::new(),
            chunk_bytes: CHUNK_BYTES,
        }
    }

    /// Reads the complete lines appended since the last call and hands the chosen columns
    /// of each row, in the order they were named, to `on_row`. A missing file is an empty
    /// one; a trailing partial line is left for the next call; a row without every column
    /// is skipped.
    pub fn read_new(&mut self, mut on_row: impl FnMut(&[&str])) -> io::Result<TailEvent> {
        let mut event = TailEvent::default();
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(event),
            Err(e) => return Err(e),
        };
        let metadata = file.metadata()?;
        let len = metadata.len();
        let inode = Some(metadata.ino());
        let replaced = self.inode.is_some() && self.inode != inode;
        self.inode = inode;
        if len < self.offset || replaced {
            event.reset = true;
            self.offset = 0;
            self.columns = None;
        }
        if len == self.offset {
            return Ok(event);
        }
        file.seek(SeekFrom::Start(self.offset))?;
        let mut file = file.take(len - self.offset);
        self.buffer.clear();
        // Fixed-size chunks keep memory flat however much was appended; a line cut by a
        // chunk's end is carried over to the next one.
        loop {
            let read = (&mut file)
                .take(self.chunk_bytes)
                .read_to_end(&mut self.buffer)?;
            let Some(last_newline) = self.buffer.iter().rposition(|&b| b == b'\n') else {
                if read == 0 {
                    break;
                }
                continue;
            };
            event.rows += self.process_lines(last_newline, &mut on_row)?;
            self.offset += last_newline as u64 + 1;
            self.buffer.drain(..=last_newline);
            if read == 0 {
                break;
            }
        }
        // An unfinished last line is read again, whole, next time.
        self.buffer.clear();
        self.buffer.shrink_to(2 * self.chunk_bytes as usize);
        Ok(event)
    }
}

impl LogTail {
    /// Hands the chosen columns of each complete line in `buffer[..=end]` to `on_row`; the
    /// first line read from the file is its header. Returns the rows handed out.
    fn process_lines(&mut self, end: usize, on_row: &mut impl FnMut(&[&str])) -> io::Result<usize> {
        let lines = &self.buffer[..=end];
        let header_first = self.columns.is_none();
        if header_first {
            let header_end = lines.iter().position(|&b| b == b'\n').unwrap_or(end);
            let header = String::from_utf8_lossy(&lines[..header_end]);
            let header = header.trim_end_matches('\r');
            let columns = self
                .column_names
                .iter()
                .map(|wanted| {
                    header
                        .split(',')
                        .position(|name| name == wanted)
                        .ok_or(wanted)
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(|missing| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: no column `{missing}` in header `{header}`",
                            self.path.display()
                        ),
                    )
                })?;
            self.columns = Some(columns);
        }
        let columns = self.columns.as_deref().unwrap_or_default();
        let mut rows = 0;
        let (_, _) = parse_rows(lines, header_first, |row| {
            let mut values = [""; MAX_COLUMNS];
            for (value, &column) in values.iter_mut().zip(columns) {
                match row.get(column) {
                    Some(field) => *value = field,
                    None => return,
                }
            }
            on_row(&values[..columns.len()]);
            rows += 1;
        })
        .map_err(io::Error::other)?;
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn collect(tail: &mut LogTail) -> (TailEvent, Vec<String>) {
        let mut values = Vec::new();
        let event = tail
            .read_new(|row| values.push(row.join("|")))
            .expect("read");
        (event, values)
    }

    #[test]
    fn reads_only_new_complete_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        let mut tail = LogTail::new(&path, &["absolute_error"]);
        assert_eq!(collect(&mut tail).1, Vec::<String>::new());
        let mut file = File::create(&path).expect("create");
        write!(
            file,
            "id,y_true,y_pred,absolute_error\n\"a,1\",1,2,1\nb,1,4,3"
        )
        .expect("write");
        assert_eq!(collect(&mut tail).1, vec!["1"]);
        write!(file, "\nc,1,1,0\n").expect("write");
        assert_eq!(collect(&mut tail).1, vec!["3", "0"]);
        assert_eq!(collect(&mut tail).1, Vec::<String>::new());
    }

    #[test]
    fn hands_out_several_columns_in_the_order_asked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "id,y_true,y_pred,latency_us\na,1,2,\nb,3\nc,5,6,7\n")
            .expect("write");
        let mut tail = LogTail::new(&path, &["y_pred", "latency_us", "y_true"]);
        let (event, rows) = collect(&mut tail);
        // Row b lacks columns: skipped.
        assert_eq!(
            (event.rows, rows),
            (2, vec!["2||1".to_owned(), "6|7|5".to_owned()])
        );
    }

    #[test]
    fn lines_cut_by_chunk_boundaries_are_carried_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        let rows: Vec<String> = (0..200)
            .map(|i| format!("id-{i},{}", "x".repeat(i % 13)))
            .collect();
        std::fs::write(
            &path,
            format!("id,absolute_error\n{}\npartial,", rows.join("\n")),
        )
        .expect("write");
        let mut tail = LogTail::new(&path, &["absolute_error"]);
        tail.chunk_bytes = 7;
        let (event, values) = collect(&mut tail);
        assert_eq!(event.rows, 200);
        let want: Vec<String> = (0..200).map(|i| "x".repeat(i % 13)).collect();
        assert_eq!(values, want);
    }

    #[test]
    fn a_shrunk_file_is_read_again_from_the_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "absolute_error\n1\n2\n3\n").expect("write");
        let mut tail = LogTail::new(&path, &["absolute_error"]);
        assert_eq!(collect(&mut tail).1.len(), 3);
        std::fs::write(&path, "absolute_error\n9\n").expect("write");
        let (event, values) = collect(&mut tail);
        assert!(event.reset);
        assert_eq!(values, vec!["9"]);
        // Replaced by a longer file: noticed by its new inode, not its size.
        let replacement = dir.path().join("new.csv");
        std::fs::write(&replacement, "absolute_error\n1\n2\n3\n4\n").expect("write");
        std::fs::rename(&replacement, &path).expect("rename");
        let (event, values) = collect(&mut tail);
        assert!(event.reset);
        assert_eq!(values, vec!["1", "2", "3", "4"]);
    }

    #[test]
    fn a_header_without_the_column_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log.csv");
        std::fs::write(&path, "x,y\n1,2\n").expect("write");
        assert!(
            LogTail::new(&path, &["x", "absolute_error"])
                .read_new(|_| {})
                .is_err()
        );
    }
}
