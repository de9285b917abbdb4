//! What the tests read of other processes from `/proc` (Linux): which exist, and whether
//! one still runs.

use std::path::PathBuf;

/// Every process now: its pid and its `/proc/<pid>` folder.
pub fn processes() -> Vec<(u32, PathBuf)> {
    let entries = std::fs::read_dir("/proc").expect("/proc");
    entries
        .flatten()
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, entry.path()))
        })
        .collect()
}

/// The fields of `/proc/<pid>/stat` after the program's name (`state ppid …`), which may
/// itself hold spaces and parentheses; `None` once the process is gone.
pub fn stat_fields(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ").map(|(_, rest)| rest.to_owned())
}

/// Whether process `pid` still runs (a zombie has ended: it only waits to be reaped).
pub fn runs(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|fields| !fields.starts_with('Z'))
}
