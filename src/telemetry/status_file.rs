//! A status file for `plot`'s page (`metric_status.json`, `feature_drift.json`), written on
//! a thread of its own.
//!
//! The file is replaced atomically, which syncs it and its folder ([`write_atomically`]):
//! a millisecond on an idle disk, tens to hundreds of them while other processes write a
//! lot. Done on the event loop, that stalled every delivery behind it once per status
//! interval. The file is for people and `plot`'s page, never for a guarantee, so nothing
//! waits for it but the last status, written before the service exits.

use super::write_atomically;
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, SyncSender, sync_channel};
use std::thread::JoinHandle;
use tracing::warn;

/// One status to write, and who waits for it to be written (the last one).
struct Job {
    json: Vec<u8>,
    done: Option<SyncSender<()>>,
}

pub struct StatusFile {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl StatusFile {
    /// A writer of `path`, with its thread.
    pub fn new(path: PathBuf) -> Result<Self> {
        let (jobs, queued) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("status-file".to_owned())
            .spawn(move || write_queued(&path, &queued))
            .context("starting the status file's writer")?;
        Ok(Self {
            jobs: Some(jobs),
            thread: Some(thread),
        })
    }

    /// Queues `status` and returns at once. Statuses queued faster than the disk takes
    /// them are skipped for the newest one.
    pub fn write(&self, status: &impl Serialize) {
        self.send(status, None);
    }

    /// Writes `status` and returns once it, and every status queued before it, is written.
    pub fn write_and_wait(&self, status: &impl Serialize) {
        let (done, written) = sync_channel(1);
        if self.send(status, Some(done)) {
            // An error means the thread is gone; it said why.
            let _ = written.recv();
        }
    }

    /// Whether the job reached the thread.
    fn send(&self, status: &impl Serialize, done: Option<SyncSender<()>>) -> bool {
        let json = match serde_json::to_vec_pretty(status) {
            Ok(json) => json,
            Err(error) => {
                warn!(%error, "cannot encode the status file");
                return false;
            }
        };
        self.jobs
            .as_ref()
            .is_some_and(|jobs| jobs.send(Job { json, done }).is_ok())
    }
}

impl Drop for StatusFile {
    /// Lets the thread write what is queued, then waits for it.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            warn!("the status file's writer panicked");
        }
    }
}

/// The thread: writes the newest queued status, until the sender is dropped.
fn write_queued(path: &std::path::Path, queued: &Receiver<Job>) {
    while let Ok(mut job) = queued.recv() {
        let mut waiting = Vec::new();
        while let Ok(newer) = queued.try_recv() {
            waiting.extend(job.done.take());
            job = newer;
        }
        waiting.extend(job.done.take());
        // Failing to write it must not stop the join.
        if let Err(error) = write_atomically(path, &job.json) {
            warn!("{error:#}");
        }
        for done in waiting {
            let _ = done.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_status_is_on_disk_once_written_and_waited_for() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("status.json");
        let file = StatusFile::new(path.clone()).expect("writer");
        for n in 0..100 {
            file.write(&n);
        }
        file.write_and_wait(&1000);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1000");
        file.write(&1001);
        drop(file);
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "1001");
    }
}
