//! Keeps a service connected: connect, run a session, and on broker failure rebuild
//! everything (connection, channels, topology, prefetch, consumers) and run it again — on
//! the next broker node when there are several, so that a cluster's node going away moves
//! the service to another at once.

use crate::telemetry::Telemetry;
use anyhow::Result;
use nnmon_broker::{AmqpError, Broker, BrokerError, BrokerUrls, RetryPolicy, is_refusal};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// A session that ran this long is considered healthy, and the backoff starts over.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Whether `error` means the broker connection failed (retry) rather than the service
/// itself, the broker refusing this user's credentials or permissions, or a TLS file or
/// certificate that cannot work (give up: see `BrokerError::is_permanent`).
fn is_broker_failure(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if let Some(error) = cause.downcast_ref::<BrokerError>() {
            !error.is_permanent()
        } else if let Some(error) = cause.downcast_ref::<AmqpError>() {
            !is_refusal(error)
        } else {
            false
        }
    })
}

/// Runs `session` on a fresh connection until it returns `Ok` (done) or a non-broker
/// error; a broker failure closes that connection and starts a new session, on the next
/// node of `urls` (the one after the node lost). Sessions lost on every node in turn (or
/// on the only one) are followed by a jittered backoff before the next. Returns `Ok` at
/// once if `cancel` fires while connecting, and an error at once if the broker refuses the
/// user, the vhost or the permissions, or if a TLS file cannot be used or a certificate is
/// refused (by nnmon or by the broker), or if a queue exists as another type.
///
/// The service is unhealthy (for `/healthz`) until its session says otherwise, and again
/// from the moment the broker is lost; every rebuilt connection counts as a reconnect.
pub async fn supervise(
    name: &str,
    urls: &BrokerUrls,
    cancel: &CancellationToken,
    telemetry: &Telemetry,
    mut session: impl AsyncFnMut(&Broker) -> Result<()>,
) -> Result<()> {
    let retry = RetryPolicy::default();
    let mut backoff = retry.backoff();
    let nodes = urls.nodes().len();
    let mut node = 0;
    // Sessions lost since the last backoff: a full round of nodes earns one.
    let mut lost_in_round = 0;
    loop {
        let Some(broker) = Broker::connect(urls, node, name, retry, cancel).await? else {
            return Ok(());
        };
        let started = Instant::now();
        let result = session(&broker).await;
        telemetry.health.set(false);
        match result {
            Err(error) if is_broker_failure(&error) && !cancel.is_cancelled() => {
                let lost = broker.url().clone();
                node = (broker.node() + 1) % nodes;
                drop(broker);
                telemetry.metrics.broker_reconnects.inc();
                if started.elapsed() > HEALTHY_SESSION {
                    backoff = retry.backoff();
                    lost_in_round = 0;
                }
                lost_in_round += 1;
                let delay = if lost_in_round < nodes {
                    Duration::ZERO
                } else {
                    lost_in_round = 0;
                    backoff.next().unwrap_or(retry.max)
                };
                warn!(
                    service = name,
                    broker = %lost,
                    next = %urls.nodes()[node],
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

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> BrokerError {
        BrokerError::Refused {
            user: "ops".into(),
            vhost: "/".into(),
            reason: "ACCESS_REFUSED".into(),
        }
    }

    #[test]
    fn broker_failures_are_retried_but_refusals_and_service_errors_are_not() {
        let lost = anyhow::Error::new(BrokerError::Nacked).context("publishing");
        assert!(is_broker_failure(&lost));
        let refused = anyhow::Error::new(refused()).context("declaring the pipeline's queues");
        assert!(!is_broker_failure(&refused));
        let certificate = BrokerError::Tls(nnmon_broker::TlsError::NoKey {
            path: "client.key".into(),
        });
        assert!(!is_broker_failure(&anyhow::Error::new(certificate)));
        assert!(!is_broker_failure(&anyhow::anyhow!("disk full")));
    }
}
