//! The services, one per subcommand, and what they share.
//!
//! Each broker-facing service is a thin shell: its pure logic lives in the workspace
//! crates, its AMQP work goes through `nnmon-broker`, and [`crate::supervisor`] keeps it
//! connected. What they share here: the topology every service declares, the poison
//! message path to the dead-letter queue, and clocks.

pub mod features;
pub mod metric;
pub mod model;
pub mod plot;
pub mod topology;
pub mod train;

pub use topology::Topology;

use anyhow::{Context, Result};
use nnmon_broker::{Broker, Delivery, HeaderValue, Publisher, QueueType};
use nnmon_observe::{DeadLetterLabels, Metrics};
use nnmon_proto::{DecodeError, QueueNames, headers};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::warn;

/// Declares the whole pipeline's queues, of type `queue_type`, whichever service starts
/// first, so that no message is published to a queue that does not exist yet.
pub(crate) async fn declare_topology(
    broker: &Broker,
    queues: &QueueNames,
    queue_type: QueueType,
) -> Result<()> {
    broker
        .declare_queues(&queues.all(), queue_type)
        .await
        .context("declaring the pipeline's queues")
}

/// Microseconds since the Unix epoch.
pub(crate) fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    now_us() / 1000
}

/// Counts poison messages (also for Prometheus) and logs each reason once, so a flood
/// cannot flood the log.
pub(crate) struct PoisonCounter {
    total: u64,
    reasons_seen: Vec<&'static str>,
    metrics: Arc<Metrics>,
}

impl PoisonCounter {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            total: 0,
            reasons_seen: Vec::new(),
            metrics,
        }
    }

    pub(crate) fn record(&mut self, queue: &str, error: &DecodeError) {
        self.total += 1;
        let reason = error.reason();
        self.metrics
            .dead_lettered
            .get_or_create(&DeadLetterLabels {
                queue: queue.to_owned(),
                reason: reason.to_owned(),
            })
            .inc();
        if !self.reasons_seen.contains(&reason) {
            self.reasons_seen.push(reason);
            warn!(queue, reason, %error, "dead-lettering a message that cannot be processed; further ones with this reason are counted, not logged");
        }
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// Publishes a rejected delivery, unchanged, to the dead-letter queue with the reason in
/// its headers. The caller acks the original only once this copy is confirmed.
pub(crate) async fn dead_letter<T>(
    publisher: &mut Publisher<T>,
    queues: &QueueNames,
    delivery: &Delivery,
    error: &DecodeError,
    token: T,
) -> Result<()> {
    let mut headers = delivery.properties.headers.clone().unwrap_or_default();
    let text = |s: &str| HeaderValue::from(s);
    headers.insert(headers::REJECT_REASON.into(), text(error.reason()));
    headers.insert(headers::REJECT_DETAIL.into(), text(&error.to_string()));
    headers.insert(headers::REJECT_QUEUE.into(), text(&delivery.routing_key));
    let properties = delivery
        .properties
        .clone()
        .with_delivery_mode(2)
        .with_headers(headers);
    publisher
        .publish(&queues.dead_letter, &delivery.data, properties, token)
        .await?;
    Ok(())
}
