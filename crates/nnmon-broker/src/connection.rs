use crate::{BrokerUrl, Publisher};
use futures_util::FutureExt;
use futures_util::stream::{BoxStream, SelectAll, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, ConnectionProperties};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What can go wrong talking to the broker. Every variant means "this connection is no
/// longer trustworthy": the caller rebuilds it and carries on.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("AMQP: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the broker refused (nacked) a published message")]
    Nacked,
    #[error("a published message was returned as unroutable (its queue is gone)")]
    Returned,
    #[error("the consumer was cancelled by the broker (queue deleted?)")]
    ConsumerCancelled,
}

/// Whether `error` is the broker's 406 PRECONDITION_FAILED: the queue exists with other
/// properties. (Other soft errors, such as ACCESS_REFUSED, are real failures.)
fn is_precondition_failed(error: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e)
        if matches!(e.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

/// How long to wait between connection attempts: doubling from `initial` up to `max`.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The delay after `attempt` failures (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(16));
        self.initial.saturating_mul(factor).min(self.max)
    }
}

/// How a queue declaration went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueState {
    /// Durable, as nnmon wants it (created now or before).
    Durable,
    /// It existed with other properties (e.g. a seed deployment's transient queue) and is
    /// used as it is: messages in it do not survive a broker restart.
    ExistingWithOtherProperties,
}

/// One connection to the broker.
pub struct Broker {
    connection: Connection,
}

impl Broker {
    /// Connects, retrying with backoff until the broker answers. Returns `None` if
    /// `cancel` fires first.
    pub async fn connect(
        url: &BrokerUrl,
        name: &str,
        retry: RetryPolicy,
        cancel: &CancellationToken,
    ) -> Option<Self> {
        let mut attempt = 0u32;
        loop {
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            let result = tokio::select! {
                result = Connection::connect_uri(url.uri(), properties) => result,
                () = cancel.cancelled() => return None,
            };
            match result {
                Ok(connection) => {
                    if attempt > 0 {
                        info!(broker = %url, attempts = attempt + 1, "connected to the broker");
                    } else {
                        info!(broker = %url, "connected to the broker");
                    }
                    return Some(Self { connection });
                }
                Err(error) => {
                    attempt += 1;
                    let delay = retry.delay(attempt);
                    warn!(broker = %url, %error, attempt, retry_in_ms = delay.as_millis() as u64, "broker not reachable yet; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return None,
                    }
                }
            }
        }
    }

    /// Declares a durable queue, or accepts an existing one as it is.
    pub async fn declare_queue(&self, queue: &str) -> Result<QueueState, BrokerError> {
        let channel = self.connection.create_channel().await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        match channel
            .queue_declare(queue.into(), durable, FieldTable::default())
            .await
        {
            Ok(_) => Ok(QueueState::Durable),
            Err(error) if is_precondition_failed(&error) => {
                // PRECONDITION_FAILED closed that channel; ask on a fresh one whether the
                // queue exists at all, without asserting its properties.
                let channel = self.connection.create_channel().await?;
                let passive = QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                };
                channel
                    .queue_declare(queue.into(), passive, FieldTable::default())
                    .await?;
                warn!(queue, %error, "queue exists with other properties (a seed deployment's transient queue?); using it as it is, so its messages will not survive a broker restart");
                Ok(QueueState::ExistingWithOtherProperties)
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Declares every queue in `queues`.
    pub async fn declare_queues(&self, queues: &[&str]) -> Result<(), BrokerError> {
        for queue in queues {
            self.declare_queue(queue).await?;
        }
        Ok(())
    }

    /// A confirm-mode channel allowing `window` unconfirmed messages at once.
    pub async fn publisher<T>(&self, window: usize) -> Result<Publisher<T>, BrokerError> {
        let channel = self.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher::new(channel, window))
    }

    /// A channel consuming `queues`, each with `prefetch` unacked messages at most.
    pub async fn inbox(&self, queues: &[&str], prefetch: u16) -> Result<Inbox, BrokerError> {
        let channel = self.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let mut consumers = SelectAll::new();
        for (queue_index, queue) in queues.iter().enumerate() {
            let consumer = channel
                .basic_consume(
                    (*queue).into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            consumers.push(
                consumer
                    .map(move |delivery| (queue_index, delivery))
                    .boxed(),
            );
        }
        Ok(Inbox { channel, consumers })
    }

    /// Closes the connection politely; unacked deliveries go back to their queues.
    pub async fn close(self) {
        if let Err(error) = self
            .connection
            .close(200, "nnmon shutting down".into())
            .await
        {
            warn!(%error, "closing the broker connection failed");
        }
    }
}

/// One delivery and the index, in [`Broker::inbox`]'s list, of the queue it came from.
pub struct Incoming {
    pub queue: usize,
    pub delivery: Delivery,
}

/// Deliveries from one or more queues sharing a channel (so one ack with `multiple`
/// settles deliveries from all of them).
pub struct Inbox {
    channel: Channel,
    consumers: SelectAll<BoxStream<'static, (usize, lapin::Result<Delivery>)>>,
}

impl Inbox {
    /// Waits for at least one delivery, then takes every delivery already buffered, from
    /// every queue. Deliveries on a channel complete in delivery-tag order, so afterwards
    /// no delivery with a lower tag than the batch's highest is left unread: acking that
    /// one with `multiple` (see [`ack`](Self::ack)) settles exactly this batch and earlier
    /// ones. Errors when the channel or connection fails.
    pub async fn next_batch(&mut self) -> Result<Vec<Incoming>, BrokerError> {
        let (queue, first) = self
            .consumers
            .next()
            .await
            .ok_or(BrokerError::ConsumerCancelled)?;
        let mut batch = vec![Incoming {
            queue,
            delivery: first?,
        }];
        loop {
            match self.consumers.next().now_or_never() {
                Some(Some((queue, delivery))) => batch.push(Incoming {
                    queue,
                    delivery: delivery?,
                }),
                Some(None) => return Err(BrokerError::ConsumerCancelled),
                None => return Ok(batch),
            }
        }
    }

    /// Acks every delivery of `batch`, and all earlier ones, in one frame.
    pub async fn ack(&self, batch: &[Incoming]) -> Result<(), BrokerError> {
        if let Some(newest) = batch
            .iter()
            .map(|incoming| &incoming.delivery)
            .max_by_key(|d| d.delivery_tag)
        {
            newest.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        Ok(())
    }

    /// Stops consuming; deliveries not yet acked go back to their queues.
    pub async fn close(self) -> Result<(), BrokerError> {
        self.channel.close(200, "done".into()).await?;
        Ok(())
    }
}
