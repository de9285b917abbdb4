use crate::{BrokerUrl, Inbox, Publisher};
use lapin::options::{ConfirmSelectOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
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
    #[error("the broker cancelled the consumer of queue {queue} (deleted, or a failover?)")]
    ConsumerCancelled { queue: String },
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

    /// A channel of its own consuming `queue`, with `prefetch` unacked messages at most.
    pub async fn inbox(&self, queue: &str, prefetch: u16) -> Result<Inbox, BrokerError> {
        Inbox::open(&self.connection, queue, prefetch).await
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
