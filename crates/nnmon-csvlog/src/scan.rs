//! Finding lines in a file without reading all of it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};

/// How much is read at once when walking a file backwards.
const BACKWARD_CHUNK: u64 = 1 << 20;

/// The first line of `file` (without its line break), read from its start.
pub(crate) fn first_line(file: &mut File) -> io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut line = Vec::new();
    BufReader::new(&*file).read_until(b'\n', &mut line)?;
    let text = String::from_utf8_lossy(&line);
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// The offset just past the `n`-th line break counted back from `before` (exclusive), or
/// `None` when the part of the file before `before` holds fewer.
fn nth_line_break_back(file: &mut File, before: u64, n: usize) -> io::Result<Option<u64>> {
    if n == 0 {
        return Ok(Some(before));
    }
    let mut seen = 0;
    let mut end = before;
    let mut chunk = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(BACKWARD_CHUNK);
        chunk.clear();
        file.seek(SeekFrom::Start(start))?;
        (&*file).take(end - start).read_to_end(&mut chunk)?;
        for (i, _) in chunk.iter().enumerate().rev().filter(|(_, b)| **b == b'\n') {
            seen += 1;
            if seen == n {
                return Ok(Some(start + i as u64 + 1));
            }
        }
        end = start;
    }
    Ok(None)
}

/// The length of `file`'s complete lines: `len`, or less when its last line is torn.
pub(crate) fn end_of_last_line(file: &mut File, len: u64) -> io::Result<u64> {
    Ok(nth_line_break_back(file, len, 1)?.unwrap_or(0))
}

/// Where the last `rows` lines of a file of `len` bytes (ending in a line break) start; 0
/// when it holds no more than that many.
pub(crate) fn start_of_last_lines(file: &mut File, len: u64, rows: usize) -> io::Result<u64> {
    // The last byte ends the last line: `rows` lines start after the (rows + 1)-th break.
    Ok(nth_line_break_back(file, len, rows.saturating_add(1))?.unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(text: &str) -> (tempfile::NamedTempFile, File) {
        let mut tmp = tempfile::NamedTempFile::new().expect("tempfile");
        tmp.write_all(text.as_bytes()).expect("write");
        let file = tmp.reopen().expect("reopen");
        (tmp, file)
    }

    #[test]
    fn finds_the_last_lines_and_the_torn_end() {
        let text = "h\na\nbb\nccc\n";
        let (_tmp, mut file) = file_with(text);
        let len = text.len() as u64;
        assert_eq!(end_of_last_line(&mut file, len).expect("scan"), len);
        assert_eq!(start_of_last_lines(&mut file, len, 1).expect("scan"), 7);
        assert_eq!(start_of_last_lines(&mut file, len, 2).expect("scan"), 4);
        assert_eq!(start_of_last_lines(&mut file, len, 4).expect("scan"), 0);
        assert_eq!(start_of_last_lines(&mut file, len, 99).expect("scan"), 0);
        let (_tmp, mut torn) = file_with("h\na\nbb");
        assert_eq!(end_of_last_line(&mut torn, 6).expect("scan"), 4);
        assert_eq!(first_line(&mut torn).expect("first"), "h");
    }
}
