//! The broker's own work over a run, when it is a process on this machine: the process
//! that listens on the AMQP URL's port, found through `/proc` (its listening socket's
//! inode, then the process holding that socket). A remote broker, or one in a container
//! whose sockets this bench cannot see, gives `None`, and the summary prints "-".
//!
//! - CPU: its ticks in `/proc`.
//! - Disk syncs: RabbitMQ's own count of them (`io_sync` in `file_handle_cache_stats`,
//!   read with `rabbitmqctl eval`), when `rabbitmqctl` reaches a node whose OS process is
//!   that one (else "-"). A classic queue syncs its journal before it confirms persistent
//!   messages, whenever it runs out of work with confirms owed, so the count says how
//!   often the broker's queues went idle in mid-stream. `rabbitmqctl` takes most of a
//!   second: it is read before the CPU span starts and after it ends.

use super::run::{TICKS_PER_SECOND, cpu_ticks};
use std::path::Path;
use std::process::Command;

/// The local broker process behind `url`.
#[derive(Clone, Copy, Debug)]
pub struct BrokerProcess {
    pid: u32,
}

impl BrokerProcess {
    /// The process listening on `url`'s port (5672 when the URL names none).
    pub fn find(url: &str) -> Option<Self> {
        let port = port_of(url)?;
        let inodes = listening_inodes(port);
        if inodes.is_empty() {
            return None;
        }
        let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                let Ok(target) = std::fs::read_link(fd.path()) else {
                    continue;
                };
                if wanted.iter().any(|w| Path::new(w) == target) {
                    return Some(Self { pid });
                }
            }
        }
        None
    }

    /// Its CPU ticks so far (user + system, every thread).
    pub fn ticks(self) -> u64 {
        cpu_ticks(self.pid)
    }

    /// Starts a span of the broker's work: syncs first, then CPU, so that `rabbitmqctl`
    /// stays out of the CPU.
    pub fn start(self) -> BrokerSpan {
        let syncs = self.syncs();
        BrokerSpan {
            broker: self,
            ticks: self.ticks(),
            syncs,
        }
    }

    /// Disk syncs so far, as RabbitMQ counts them; `None` when `rabbitmqctl` is missing or
    /// reaches another node.
    fn syncs(self) -> Option<u64> {
        let expression =
            "{os:getpid(), proplists:get_value({io_sync, count}, file_handle_cache_stats:get())}.";
        let output = ["rabbitmqctl", "/usr/sbin/rabbitmqctl"]
            .into_iter()
            .find_map(|ctl| {
                Command::new(ctl)
                    .args(["-q", "eval", expression])
                    .output()
                    .ok()
                    .filter(|output| output.status.success())
            })?;
        // `{"3425",67128}`
        let text = String::from_utf8_lossy(&output.stdout);
        let (pid, count) = text.trim().trim_matches(['{', '}']).split_once(',')?;
        let pid: u32 = pid.trim_matches('"').parse().ok()?;
        (pid == self.pid)
            .then(|| count.trim().parse().ok())
            .flatten()
    }
}

/// The broker's work from [`BrokerProcess::start`] on.
#[derive(Clone, Copy, Debug)]
pub struct BrokerSpan {
    broker: BrokerProcess,
    ticks: u64,
    syncs: Option<u64>,
}

/// What the broker did over a span.
#[derive(Clone, Copy, Debug)]
pub struct BrokerWork {
    /// CPU seconds.
    pub cpu_s: f64,
    /// Disk syncs, when they could be counted.
    pub syncs: Option<u64>,
}

impl BrokerSpan {
    /// Ends the span: CPU first, then syncs.
    pub fn finish(self) -> BrokerWork {
        let ticks = self.broker.ticks().saturating_sub(self.ticks);
        let syncs = self
            .syncs
            .zip(self.broker.syncs())
            .map(|(before, after)| after.saturating_sub(before));
        BrokerWork {
            cpu_s: ticks as f64 / TICKS_PER_SECOND,
            syncs,
        }
    }
}

fn port_of(url: &str) -> Option<u16> {
    let uri: lapin::uri::AMQPUri = url.parse().ok()?;
    Some(uri.authority.port)
}

/// Inodes of the TCP sockets listening on `port` (IPv4 and IPv6).
fn listening_inodes(port: u16) -> Vec<u64> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            if *state == LISTEN
                && local_port == Some(port)
                && let Ok(inode) = inode.parse()
            {
                inodes.push(inode);
            }
        }
    }
    inodes
}
