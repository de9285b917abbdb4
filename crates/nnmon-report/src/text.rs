//! Times and counts as people read them.

/// `ms` since the Unix epoch as `2026-11-03 12:00:05 UTC` (to the second).
pub fn format_utc(ms: u64) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        // Past year 9999: nothing a clock here will say.
        Err(_) => format!("{ms} ms after the epoch"),
    }
}

/// `n` with a thin space between groups of three digits: `10 000 000`.
pub fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() * 4 / 3 + 1);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push('\u{2009}');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_counts() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(1_793_707_205_999), "2026-11-03 12:00:05 UTC");
        assert_eq!(group_thousands(0), "0");
        assert_eq!(group_thousands(999), "999");
        assert_eq!(group_thousands(1_000), "1\u{2009}000");
        assert_eq!(group_thousands(10_000_000), "10\u{2009}000\u{2009}000");
    }
}
