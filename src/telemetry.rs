//! What every service reports while it runs: Prometheus metrics and health (served when
//! `--metrics-addr` is given), one human progress line every `--status-interval`, and
//! status files written atomically for `plot`'s page.

mod status_file;

pub use status_file::StatusFile;

use crate::cli::ObserveArgs;
use anyhow::{Context, Result};
use nnmon_observe::{Health, Metrics, Service};
use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// A service's metrics and health, shared with its HTTP endpoint.
#[derive(Clone)]
pub struct Telemetry {
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

impl Telemetry {
    /// Creates the service's metrics and, with `--metrics-addr`, serves them until
    /// `cancel` fires. A port that cannot be bound fails the service at once.
    pub async fn start(
        service: Service,
        args: &ObserveArgs,
        cancel: &CancellationToken,
    ) -> Result<Self> {
        let telemetry = Self {
            metrics: Arc::new(Metrics::new(service)),
            health: Health::default(),
        };
        if let Some(addr) = args.metrics_addr {
            nnmon_observe::serve(
                addr,
                telemetry.metrics.clone(),
                telemetry.health.clone(),
                cancel.clone(),
            )
            .await?;
        }
        Ok(telemetry)
    }
}

/// Says when the next progress line is due and how fast a count grew since the last one.
pub struct StatusClock {
    every: Duration,
    last: Instant,
    count_at_last: u64,
}

impl StatusClock {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
            count_at_last: 0,
        }
    }

    /// When a line is due (or `now` is forced), the rate per second at which `count` grew
    /// since the last line.
    pub fn due(&mut self, count: u64, force: bool) -> Option<f64> {
        let elapsed = self.last.elapsed();
        // A quarter of slack: a timer firing every `every` sees a little less than
        // `every` elapsed each time, and must not skip every other line.
        if !force && elapsed < self.every - self.every / 4 {
            return None;
        }
        let rate =
            count.saturating_sub(self.count_at_last) as f64 / elapsed.as_secs_f64().max(1e-3);
        self.last = Instant::now();
        self.count_at_last = count;
        Some(rate)
    }
}

/// Writes `bytes` to `path` atomically: through a temporary file of its own in the same
/// folder, renamed into place, so a reader sees the old file or the new one, and two
/// writers of the same file (two `plot`s on one folder) never rename each other's half.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    // Readable by everyone like any file the services write (the temporary file is made
    // private).
    // Synced before the rename, and the folder after it, so that a crash leaves the old
    // file or the whole new one (an offset file must never come back empty or older).
    tmp.write_all(bytes)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .with_context(|| format!("writing {}", tmp.path().display()))?;
    tmp.persist(path)
        .with_context(|| format!("moving a new {} into place", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|folder| folder.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Writes `value` as JSON to `path` atomically (see [`write_atomically`]).
pub fn write_json_atomically(path: &Path, value: &impl Serialize) -> Result<()> {
    let json = serde_json::to_vec_pretty(value).context("encoding a status file")?;
    write_atomically(path, &json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_writes_replace_the_file_and_leave_it_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        write_atomically(&path, b"old").expect("write");
        write_atomically(&path, b"new").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"new");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o644);
        let leftovers = std::fs::read_dir(dir.path()).expect("list").count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
    }
}
