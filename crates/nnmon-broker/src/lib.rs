//! RabbitMQ plumbing shared by every nnmon service, so none of them repeats AMQP code.
//!
//! # Layout
//! - [`BrokerUrl`]: a validated AMQP URL that never shows its password when printed.
//! - [`Broker`]: one connection. [`Broker::connect`] retries with capped exponential
//!   backoff until the broker answers (or shutdown is requested); it declares durable
//!   queues (accepting, with a warning, queues that already exist with other properties),
//!   and opens [`Publisher`]s and consumers.
//! - [`Publisher`]: a confirm-mode channel with a window of messages in flight. Messages
//!   are persistent and mandatory; each carries a caller's token that comes back, in
//!   publish order, once the broker has confirmed it — so callers ack their inputs only
//!   after their outputs are safe, without waiting for one confirm at a time.
//! - [`Inbox`]: a consumer channel with prefetch, yielding deliveries; acks go back through
//!   the deliveries' own ackers.
//! - [`message_properties`]: the AMQP properties every nnmon message carries.
//!
//! Data flows service → `Publisher::publish` → broker → `Inbox` → service → ack.

mod connection;
mod publisher;
mod url;

pub use connection::{Broker, BrokerError, Inbox, Incoming, QueueState, RetryPolicy};
pub use lapin::message::Delivery;
pub use lapin::options::BasicAckOptions;
pub use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
pub use lapin::{Acker, BasicProperties, Error as AmqpError};
pub use publisher::{Publisher, message_properties};
pub use url::{BrokerUrl, InvalidUrl};
