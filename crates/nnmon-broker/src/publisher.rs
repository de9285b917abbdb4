use crate::client::{self, Outcome};
use crate::connection::short_string;
use crate::{BrokerError, Properties};
use futures_util::FutureExt;
use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

/// Properties of every nnmon message: persistent JSON with its ID and the time in seconds
/// (AMQP's resolution; the microsecond publish time travels in the body).
pub fn message_properties(message_id: &str) -> Properties {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Properties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json")
        .with_message_id(message_id)
        .with_timestamp(now)
}

/// A confirm-mode channel with a window of unconfirmed messages, each tagged with a token.
pub struct Publisher<T> {
    channel: client::PublishChannel,
    window: usize,
    /// The tokens of the messages in flight, oldest first (the channel keeps their order).
    in_flight: VecDeque<T>,
}

impl<T> Publisher<T> {
    pub(crate) fn new(channel: client::PublishChannel, window: usize) -> Self {
        Self {
            channel,
            window: window.max(1),
            in_flight: VecDeque::new(),
        }
    }

    /// Sends one message to `queue` on the default exchange. Its `token` comes back from
    /// [`confirmed`](Self::confirmed) once the broker has it safe.
    pub async fn publish(
        &mut self,
        queue: &str,
        body: &[u8],
        properties: Properties,
        token: T,
    ) -> Result<(), BrokerError> {
        self.publish_to("", queue, body, properties, token).await
    }

    /// Sends one message to `exchange` with `routing_key` (see `exchange`); confirmed,
    /// or returned as unroutable, like [`publish`](Self::publish).
    pub async fn publish_to(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: Properties,
        token: T,
    ) -> Result<(), BrokerError> {
        short_string("exchange name", exchange)?;
        short_string("routing key", routing_key)?;
        for (what, value) in [
            ("content type", &properties.content_type),
            ("content encoding", &properties.content_encoding),
            ("correlation ID", &properties.correlation_id),
            ("reply-to", &properties.reply_to),
            ("expiration", &properties.expiration),
            ("message ID", &properties.message_id),
            ("message type", &properties.kind),
            ("user ID", &properties.user_id),
            ("app ID", &properties.app_id),
        ] {
            if let Some(value) = value {
                short_string(what, value)?;
            }
        }
        self.channel
            .publish(exchange, routing_key, body, &properties)
            .await?;
        self.in_flight.push_back(token);
        Ok(())
    }

    /// Messages sent but not yet confirmed.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// How many more messages the window takes now.
    pub fn room(&self) -> usize {
        self.window.saturating_sub(self.in_flight.len())
    }

    /// Whether the window is full: await [`confirmed`](Self::confirmed) before publishing more.
    pub fn is_full(&self) -> bool {
        self.in_flight.len() >= self.window
    }

    /// Waits for the oldest unconfirmed message and returns its token. Pends forever when
    /// nothing is in flight, so it can sit in a `select!` guarded by `in_flight() > 0`.
    pub async fn confirmed(&mut self) -> Result<T, BrokerError> {
        if self.in_flight.is_empty() {
            return std::future::pending().await;
        }
        // On any failure the token stays in flight, so `into_unconfirmed` hands it back.
        match self.channel.oldest().await? {
            Outcome::Ack => self.in_flight.pop_front().ok_or(BrokerError::Nacked),
            Outcome::Returned => Err(BrokerError::Returned),
            Outcome::Nack => Err(BrokerError::Nacked),
        }
    }

    /// Tokens of messages already confirmed, without waiting.
    /// Tokens confirmed before a failure are returned first; the failure surfaces on the
    /// next call.
    pub fn ready(&mut self) -> Result<Vec<T>, BrokerError> {
        let mut tokens = Vec::new();
        while !self.in_flight.is_empty() {
            match self.confirmed().now_or_never() {
                Some(Ok(token)) => tokens.push(token),
                Some(Err(error)) if tokens.is_empty() => return Err(error),
                Some(Err(_)) | None => break,
            }
        }
        Ok(tokens)
    }

    /// Waits until every message in flight is confirmed, returning their tokens in order.
    pub async fn drain(&mut self) -> Result<Vec<T>, BrokerError> {
        let mut tokens = Vec::with_capacity(self.in_flight.len());
        while !self.in_flight.is_empty() {
            tokens.push(self.confirmed().await?);
        }
        Ok(tokens)
    }

    /// Closes the channel once nothing is in flight (call [`drain`](Self::drain) first).
    pub async fn close(self) -> Result<(), BrokerError> {
        self.channel.close().await?;
        Ok(())
    }

    /// Gives up on the channel, returning the tokens of messages whose fate is unknown, so
    /// that the caller can publish them again on a new connection.
    pub fn into_unconfirmed(self) -> Vec<T> {
        self.in_flight.into_iter().collect()
    }
}
