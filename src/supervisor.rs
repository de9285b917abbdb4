//! Keeps a service connected: connect, run a session, and on broker failure rebuild
//! everything (connection, channels, topology, prefetch, consumers) and run it again.

use anyhow::Result;
use nnmon_broker::{AmqpError, Broker, BrokerError, BrokerUrl, RetryPolicy};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A session that ran this long is considered healthy, and the backoff starts over.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Whether `error` means the broker connection failed (retry) rather than the service
/// itself (give up).
fn is_broker_failure(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.is::<BrokerError>() || cause.is::<AmqpError>())
}

/// Runs `session` on a fresh connection until it returns `Ok` (done) or a non-broker
/// error; a broker failure closes that connection and starts a new session after a backoff.
/// Returns `Ok` at once if `cancel` fires while connecting.
pub async fn supervise(
    name: &str,
    url: &BrokerUrl,
    cancel: &CancellationToken,
    mut session: impl AsyncFnMut(&Broker) -> Result<()>,
) -> Result<()> {
    let retry = RetryPolicy::default();
    let mut failures = 0u32;
    loop {
        let Some(broker) = Broker::connect(url, name, retry, cancel).await else {
            return Ok(());
        };
        let started = Instant::now();
        let result = session(&broker).await;
        match result {
            Err(error) if is_broker_failure(&error) && !cancel.is_cancelled() => {
                drop(broker);
                failures = if started.elapsed() > HEALTHY_SESSION {
                    1
                } else {
                    failures + 1
                };
                let delay = retry.delay(failures);
                warn!(
                    service = name,
                    error = format!("{error:#}"),
                    retry_in_ms = delay.as_millis() as u64,
                    "lost the broker; reconnecting"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = cancel.cancelled() => return Ok(()),
                }
            }
            other => {
                broker.close().await;
                return other;
            }
        }
    }
}
