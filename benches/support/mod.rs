//! What the broker benches share: where the broker and the binary are, queue plumbing, a
//! cheap line counter for a growing CSV file, runs of the pipeline ([`run`]) and of the
//! bare broker ([`ceiling`], moved by [`raw_lapin`], [`raw_amqprs`] or nnmon-broker,
//! [`seam`], or chained as the services are, [`chain`]).
#![allow(dead_code)] // each bench uses its own part

pub mod broker_process;
pub mod ceiling;
pub mod chain;
pub mod messages;
pub mod raw_amqprs;
pub mod raw_lapin;
pub mod run;
pub mod seam;

use lapin::options::{QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// The broker: `AMQP_URL`, else the local one.
pub fn amqp_url() -> String {
    std::env::var("AMQP_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// The `nnmon` binary: Cargo builds it for benches and says where; without that, the
/// release build in this workspace.
pub fn nnmon_binary() -> PathBuf {
    let path = match option_env!("CARGO_BIN_EXE_nnmon") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/nnmon"),
    };
    assert!(
        path.is_file(),
        "{} does not exist: run `cargo build --release --bin nnmon` first",
        path.display()
    );
    path
}

/// The `nnmon` binaries to compare, each with the AMQP client it was built with:
/// `NNMON_BENCH_BINARIES` as `CLIENT=PATH,CLIENT=PATH` (what `just bench-binaries`
/// builds), else [`nnmon_binary`] with the client this bench was built with.
pub fn bench_binaries() -> Vec<(String, PathBuf)> {
    client_paths("NNMON_BENCH_BINARIES")
        .unwrap_or_else(|| vec![(nnmon_broker::CLIENT.to_owned(), nnmon_binary())])
}

/// `CLIENT=PATH,CLIENT=PATH` from the variable `name`, each path checked; `None` when it
/// is unset or empty.
pub fn client_paths(name: &str) -> Option<Vec<(String, PathBuf)>> {
    let list = std::env::var(name)
        .ok()
        .filter(|list| !list.trim().is_empty())?;
    let entries = list
        .split(',')
        .map(|entry| {
            let (client, path) = entry
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: `{entry}` is not CLIENT=PATH"));
            let path = PathBuf::from(path.trim());
            assert!(path.is_file(), "{name}: {} does not exist", path.display());
            (client.trim().to_owned(), path)
        })
        .collect();
    Some(entries)
}

pub async fn connect(url: &str) -> Connection {
    Connection::connect(url, ConnectionProperties::default())
        .await
        .unwrap_or_else(|e| panic!("cannot reach the broker at AMQP_URL ({e}); is it running?"))
}

pub async fn delete_queues(connection: &Connection, queues: &[&str]) {
    let channel = connection.create_channel().await.expect("channel");
    for queue in queues {
        channel
            .queue_delete((*queue).into(), QueueDeleteOptions::default())
            .await
            .unwrap_or_else(|e| panic!("deleting queue {queue}: {e}"));
    }
    let _ = channel.close(200, "done".into()).await;
}

/// Ready messages in `queue` and its consumers; `None` while it does not exist.
pub async fn queue_state(connection: &Connection, queue: &str) -> Option<(u32, u32)> {
    let channel = connection.create_channel().await.ok()?;
    let options = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    let declared = channel
        .queue_declare(queue.into(), options, FieldTable::default())
        .await
        .ok()?;
    let _ = channel.close(200, "done".into()).await;
    Some((declared.message_count(), declared.consumer_count()))
}

/// Counts the lines of a growing file, reading each byte once.
pub struct LineCounter {
    path: PathBuf,
    file: Option<File>,
    lines: u64,
    buffer: Vec<u8>,
}

impl LineCounter {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            file: None,
            lines: 0,
            buffer: vec![0; 1 << 16],
        }
    }

    pub fn lines(&mut self) -> u64 {
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        if let Some(file) = &mut self.file {
            while let Ok(read @ 1..) = file.read(&mut self.buffer) {
                self.lines += self.buffer[..read].iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        self.lines
    }
}
