//! Reads the machine's load from `/proc` (parsed and added up by `nnmon_scenario::load`):
//! a service's threads' scheduler counters and the 1-minute load average. On a system
//! without these files nothing is recorded.

use nnmon_scenario::{ProcessTimes, parse_loadavg, parse_schedstat};

/// Records every thread of process `pid` (`/proc/<pid>/task/<tid>/schedstat`). A thread
/// that exits while the folder is read is skipped: it keeps its previous sample.
pub fn sample_process(pid: u32, times: &mut ProcessTimes) {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        if let Some(stat) = std::fs::read_to_string(task.path().join("schedstat"))
            .ok()
            .as_deref()
            .and_then(parse_schedstat)
        {
            times.record(tid, stat);
        }
    }
}

/// The machine's 1-minute load average now, if `/proc/loadavg` can be read.
pub fn load1() -> Option<f64> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}
