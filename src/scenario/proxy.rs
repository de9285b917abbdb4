//! A local TCP proxy between the services and the broker, for the `partition` fault: while
//! held, it passes no byte either way and leaves every connection open, as a network
//! that drops packets would. Released, it passes on what it held.

use anyhow::{Context, Result};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The proxy's address and its switch.
pub struct Proxy {
    /// `127.0.0.1:PORT`, to put in the services' AMQP URL.
    pub address: String,
    held: Arc<watch::Sender<bool>>,
}

impl Proxy {
    /// Listens on a free local port and relays every connection to `upstream`
    /// (`HOST:PORT`) until `cancel` fires.
    pub async fn start(upstream: String, cancel: CancellationToken) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the partition proxy")?;
        let address = listener.local_addr()?.to_string();
        let (held, _) = watch::channel(false);
        let held = Arc::new(held);
        let switch = Arc::clone(&held);
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(_) => continue,
                    },
                    () = cancel.cancelled() => return,
                };
                let upstream = upstream.clone();
                let mut held = switch.subscribe();
                let cancel = cancel.clone();
                tokio::spawn(async move {
                    // A partitioned network reaches no broker: dial once released.
                    if held.wait_for(|held| !held).await.is_err() {
                        return;
                    }
                    if let Ok(server) = TcpStream::connect(&upstream).await {
                        relay(client, server, held, cancel).await;
                    }
                });
            }
        });
        Ok(Self { address, held })
    }

    /// Holds (`true`) or releases (`false`) every byte.
    pub fn hold(&self, hold: bool) {
        self.held.send_replace(hold);
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    held: watch::Receiver<bool>,
    cancel: CancellationToken,
) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    tokio::select! {
        () = pump(client_read, server_write, held.clone()) => {}
        () = pump(server_read, client_write, held) => {}
        () = cancel.cancelled() => {}
    }
}

/// Copies `from` to `to`, waiting before each write while held.
async fn pump(
    mut from: impl AsyncReadExt + Unpin,
    mut to: impl AsyncWriteExt + Unpin,
    mut held: watch::Receiver<bool>,
) {
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read @ 1..) = from.read(&mut buffer).await {
        if held.wait_for(|held| !held).await.is_err() {
            return;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
    // The end of the stream is held too (no FIN passes a partition), and so is the close
    // of the other direction, which ends when this returns.
    if held.wait_for(|held| !held).await.is_err() {
        return;
    }
    let _ = to.shutdown().await;
}

/// The `HOST:PORT` of an AMQP URL (the first of a comma-separated list), and the URL with
/// that replaced by `address`.
pub fn reroute(url: &str, address: &str) -> Option<(String, String)> {
    let first = url.split(',').next()?.trim();
    let (scheme, rest) = first.split_once("://")?;
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let (userinfo, host_port) = match authority.rsplit_once('@') {
        Some((userinfo, host_port)) => (Some(userinfo), host_port),
        None => (None, authority),
    };
    let default_port = if scheme == "amqps" { 5671 } else { 5672 };
    let upstream = if host_port
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    let userinfo = userinfo.map_or_else(String::new, |u| format!("{u}@"));
    Some((upstream, format!("{scheme}://{userinfo}{address}{path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reroute_replaces_only_the_host_and_port() {
        assert_eq!(
            reroute("amqp://guest:guest@127.0.0.1:5672/%2f", "127.0.0.1:9"),
            Some((
                "127.0.0.1:5672".into(),
                "amqp://guest:guest@127.0.0.1:9/%2f".into()
            ))
        );
        assert_eq!(
            reroute("amqp://broker?heartbeat=5,amqp://other", "127.0.0.1:9"),
            Some((
                "broker:5672".into(),
                "amqp://127.0.0.1:9?heartbeat=5".into()
            ))
        );
        assert_eq!(reroute("not a url", "x"), None);
    }

    #[tokio::test]
    async fn a_held_proxy_passes_nothing_until_released() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = upstream.local_addr().expect("address").to_string();
        let cancel = CancellationToken::new();
        let proxy = Proxy::start(target, cancel.clone()).await.expect("proxy");
        let mut client = TcpStream::connect(&proxy.address).await.expect("connect");
        let (mut server, _) = upstream.accept().await.expect("accept");
        proxy.hold(true);
        client.write_all(b"held").await.expect("write");
        let mut buffer = [0u8; 4];
        let early = tokio::time::timeout(
            std::time::Duration::from_millis(200),
            server.read_exact(&mut buffer),
        )
        .await;
        assert!(early.is_err(), "bytes passed while held");
        proxy.hold(false);
        server.read_exact(&mut buffer).await.expect("released");
        assert_eq!(&buffer, b"held");
        cancel.cancel();
    }

    #[tokio::test]
    async fn a_held_proxy_neither_dials_nor_passes_an_end_of_stream() {
        let upstream = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let target = upstream.local_addr().expect("address").to_string();
        let cancel = CancellationToken::new();
        let proxy = Proxy::start(target, cancel.clone()).await.expect("proxy");
        let mut open = TcpStream::connect(&proxy.address).await.expect("connect");
        let (mut server, _) = upstream.accept().await.expect("accept");
        proxy.hold(true);
        open.shutdown().await.expect("FIN");
        let _late = TcpStream::connect(&proxy.address).await.expect("connect");
        let wait = std::time::Duration::from_millis(200);
        let mut byte = [0u8; 1];
        let fin = tokio::time::timeout(wait, server.read(&mut byte)).await;
        assert!(fin.is_err(), "the end of stream passed while held");
        let dialed = tokio::time::timeout(wait, upstream.accept()).await;
        assert!(dialed.is_err(), "the broker was dialled while held");
        proxy.hold(false);
        assert_eq!(server.read(&mut byte).await.expect("released"), 0);
        upstream.accept().await.expect("dialled once released");
        cancel.cancel();
    }
}
