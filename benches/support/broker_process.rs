//! The broker's own CPU, when it is a process on this machine: the process that listens
//! on the AMQP URL's port, found through `/proc` (its listening socket's inode, then the
//! process holding that socket). A remote broker, or one in a container whose sockets this
//! bench cannot see, gives `None`, and the summary prints "-".

use super::run::cpu_ticks;
use std::path::Path;

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
