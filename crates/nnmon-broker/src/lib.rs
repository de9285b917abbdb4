//! RabbitMQ plumbing shared by every nnmon service, so none of them repeats AMQP code.
//!
//! # Layout
//! - [`BrokerUrl`]: a validated AMQP URL that never shows its password when printed, with
//!   the TLS files of an `amqps://` URL ([`TlsFiles`]: a CA that replaces the system's
//!   roots, a client certificate and key; `auth_mechanism=external` logs in with the
//!   certificate alone).
//! - [`BrokerUrls`]: the brokers a service may use — one URL, or the nodes of a cluster —
//!   parsed from a comma-separated list. The one seam where several brokers meet: everything
//!   else sees one [`Broker`] at a time.
//! - [`Broker`]: one connection to one node. [`Broker::connect`] tries the nodes in order
//!   from a given one, a full round then a capped exponential backoff with jitter
//!   ([`RetryPolicy`]), until one answers (or shutdown is requested), and says which it
//!   reached ([`Broker::node`]), so that a caller that lost it starts with the next node.
//!   It gives up at once when the broker refuses the user, the vhost or the permissions
//!   ([`BrokerError::Refused`], [`is_refusal`]) or a certificate is refused or a TLS file
//!   cannot be used ([`BrokerError::Tls`], [`TlsError`]); it declares durable queues of a
//!   [`QueueType`] (classic, or quorum: replicated by Raft), accepting with a warning
//!   queues that already exist with other properties but refusing one of another type
//!   ([`BrokerError::QueueTypeMismatch`]), and opens [`Publisher`]s and consumers.
//! - [`Publisher`]: a confirm-mode channel with a window of messages in flight. Messages
//!   are persistent and mandatory; each carries a caller's token that comes back, in
//!   publish order, once the broker has confirmed it — so callers ack their inputs only
//!   after their outputs are safe, without waiting for one confirm at a time.
//! - [`Inbox`]: one queue's consumer on a channel of its own, with prefetch, yielding
//!   deliveries in batches and acking them with `multiple`. A consumer the broker cancels
//!   (its queue deleted) is an error like a lost connection, never a silent end.
//! - [`message_properties`]: the AMQP properties every nnmon message carries.
//! - Exchanges for a sharded pipeline ([`ExchangeKind`]: consistent-hash on the message
//!   ID, direct, fanout): [`Broker::declare_exchange`], [`Broker::bind_queue`],
//!   [`Broker::bind_exchange`]; a missing plugin is [`ExchangeError::UnknownType`].
//!
//! - [`Delivery`], [`Properties`] (with [`Headers`]), [`Acker`]: messages in nnmon's own
//!   terms, whichever AMQP client is compiled in ([`CLIENT`]): lapin by default, amqprs
//!   with the feature `client-amqprs` (it wins when both are asked for). The client's
//!   errors come wrapped as [`AmqpError`], with the broker's reply when there was one.
//!   Each client lives in a module of its own under `client/`; nothing else in this
//!   crate, and nothing in the services, names either.
//!
//! Data flows service → `Publisher::publish` → broker → `Inbox` → service → ack.

mod client;
mod connection;
mod exchange;
mod inbox;
mod message;
mod publisher;
mod tls;
mod url;

pub use client::{AmqpError, CLIENT};
pub use connection::{Broker, BrokerError, QueueState, QueueType, RetryPolicy, is_refusal};
pub use exchange::{CONSISTENT_HASH_PLUGIN, ExchangeError, ExchangeKind};
pub use inbox::Inbox;
pub use message::{Acker, Delivery, HeaderValue, Headers, Properties};
pub use publisher::{Publisher, message_properties};
pub use tls::{FileRole, TlsError, TlsFiles, Trusted};
pub use url::{BrokerUrl, BrokerUrls, InvalidUrl};
