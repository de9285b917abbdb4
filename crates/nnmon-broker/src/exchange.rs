//! Exchanges other than the default one, for a sharded pipeline: declaring them and
//! binding queues and exchanges to them. Publishing to one is
//! [`Publisher::publish_to`](crate::Publisher::publish_to).
//!
//! Three kinds are used, all durable (they outlive a broker restart, like the queues):
//! - [`ExchangeKind::ConsistentHash`]: RabbitMQ's `x-consistent-hash`, from the bundled
//!   plugin `rabbitmq_consistent_hash_exchange`, hashing the `message_id` property
//!   (argument `hash-property: message_id`) instead of the routing key. A binding's
//!   routing key is its weight. A broker without the plugin refuses the declaration
//!   (503 COMMAND_INVALID, "unknown exchange type", closing the connection): that is
//!   [`ExchangeError::UnknownType`], which names the plugin and is permanent.
//! - [`ExchangeKind::Direct`] and [`ExchangeKind::Fanout`]: AMQP's own.
//!
//! An exchange that exists with other properties (another type, or another
//! `alternate-exchange`, which RabbitMQ compares, unlike arguments of its own choosing)
//! is refused with 406 PRECONDITION_FAILED: that is [`ExchangeError::Inequivalent`],
//! permanent, naming the exchange and quoting what the broker says differs.
//!
//! A message published with `mandatory` through these exchanges is confirmed once it
//! reached at least one queue, and comes back (basic.return) when it reached none, as on
//! the default exchange.
//!
//! Each call opens a short-lived channel of its own: a refused declaration closes its
//! channel, and must not take a publisher's or a consumer's with it.

use crate::client::AmqpError;
use crate::connection::{COMMAND_INVALID, precondition_failed, short_string};
use crate::message::{HeaderValue, Headers};
use crate::{Broker, BrokerError};

/// The plugin that provides [`ExchangeKind::ConsistentHash`].
pub const CONSISTENT_HASH_PLUGIN: &str = "rabbitmq_consistent_hash_exchange";

/// The kind of an exchange nnmon declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// `x-consistent-hash` on the `message_id` property: every message with one ID goes
    /// to the same destination while the bindings stay the same.
    ConsistentHash,
    /// Routes by exact routing key.
    Direct,
    /// Copies every message to every destination.
    Fanout,
}

impl ExchangeKind {
    /// The AMQP exchange type.
    pub fn type_name(self) -> &'static str {
        match self {
            Self::ConsistentHash => "x-consistent-hash",
            Self::Direct => "direct",
            Self::Fanout => "fanout",
        }
    }

    fn arguments(self, alternate_exchange: Option<&str>) -> Headers {
        let mut arguments = Headers::new();
        if let Some(alternate) = alternate_exchange {
            arguments.insert("alternate-exchange".into(), alternate.into());
        }
        if self == Self::ConsistentHash {
            arguments.insert("hash-property".into(), HeaderValue::from("message_id"));
        }
        arguments
    }
}

/// What can go wrong declaring or binding an exchange.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// The broker does not know the exchange type: its plugin is not enabled. Retrying
    /// cannot help (the broker closed the connection).
    #[error(
        "the broker does not know the exchange type `{kind}` (declaring {exchange}): enable \
         the plugin on every broker node with `rabbitmq-plugins enable {plugin}` (it is \
         bundled with RabbitMQ)"
    )]
    UnknownType {
        exchange: String,
        kind: &'static str,
        plugin: &'static str,
    },
    /// The exchange exists with other properties than asked for (406 PRECONDITION_FAILED).
    /// Retrying cannot help: an exchange cannot change in place.
    #[error(
        "exchange {exchange} already exists on the broker with other properties \
         ({broker_says}): it belongs to another application or pipeline, or to services \
         started with another --shards; run every service of a pipeline with the same \
         --shards (NNMON_SHARDS), or choose another --queue-prefix (or delete the exchange)"
    )]
    Inequivalent {
        exchange: String,
        broker_says: String,
    },
    /// Any other failure, as the rest of the crate reports it (a lost connection is
    /// retried by the caller).
    #[error("declaring or binding exchange {exchange}")]
    Broker {
        exchange: String,
        #[source]
        source: BrokerError,
    },
}

/// Every one of `names` fits an AMQP short string, else the first that does not, as a
/// failure about `exchange`.
fn names_fit<const N: usize>(
    exchange: &str,
    names: [(&'static str, &str); N],
) -> Result<(), ExchangeError> {
    for (what, name) in names {
        short_string(what, name).map_err(|source| ExchangeError::Broker {
            exchange: exchange.to_owned(),
            source,
        })?;
    }
    Ok(())
}

/// Whether `error` is the broker refusing an exchange type it does not know.
fn is_unknown_exchange_type(error: &AmqpError) -> bool {
    matches!(error.reply(), Some((COMMAND_INVALID, text)) if text.contains("unknown exchange type"))
}

impl ExchangeError {
    fn broker(exchange: &str, source: AmqpError) -> Self {
        Self::Broker {
            exchange: exchange.to_owned(),
            source: source.into(),
        }
    }
}

impl Broker {
    /// Declares a durable exchange of `kind` (or accepts the same one existing), with
    /// `alternate_exchange` as its `alternate-exchange` argument when given.
    pub async fn declare_exchange(
        &self,
        exchange: &str,
        kind: ExchangeKind,
        alternate_exchange: Option<&str>,
    ) -> Result<(), ExchangeError> {
        let too_long = |source| ExchangeError::Broker {
            exchange: exchange.to_owned(),
            source,
        };
        short_string("exchange name", exchange).map_err(too_long)?;
        if let Some(alternate) = alternate_exchange {
            short_string("alternate exchange name", alternate).map_err(too_long)?;
        }
        let failed = |source: AmqpError| {
            if kind == ExchangeKind::ConsistentHash && is_unknown_exchange_type(&source) {
                ExchangeError::UnknownType {
                    exchange: exchange.to_owned(),
                    kind: kind.type_name(),
                    plugin: CONSISTENT_HASH_PLUGIN,
                }
            } else if let Some(broker_says) = precondition_failed(&source) {
                ExchangeError::Inequivalent {
                    exchange: exchange.to_owned(),
                    broker_says: broker_says.to_owned(),
                }
            } else {
                ExchangeError::broker(exchange, source)
            }
        };
        self.connection()
            .declare_exchange(
                exchange,
                kind.type_name(),
                &kind.arguments(alternate_exchange),
            )
            .await
            .map_err(failed)
    }

    /// Binds `queue` to `exchange` with `routing_key` (for a consistent-hash exchange: the
    /// weight, e.g. `"1"`). Binding twice is one binding.
    pub async fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), ExchangeError> {
        names_fit(
            exchange,
            [
                ("queue name", queue),
                ("exchange name", exchange),
                ("routing key", routing_key),
            ],
        )?;
        self.connection()
            .bind_queue(queue, exchange, routing_key)
            .await
            .map_err(|source| ExchangeError::broker(exchange, source))
    }

    /// Binds the exchange `destination` to `source` with `routing_key`: what reaches
    /// `source` and matches goes on through `destination`'s own routing.
    pub async fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
    ) -> Result<(), ExchangeError> {
        names_fit(
            source,
            [
                ("exchange name", destination),
                ("exchange name", source),
                ("routing key", routing_key),
            ],
        )?;
        self.connection()
            .bind_exchange(destination, source, routing_key)
            .await
            .map_err(|error| ExchangeError::broker(source, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::PRECONDITION_FAILED;

    #[test]
    fn an_unknown_exchange_type_is_told_apart() {
        let unknown = AmqpError::from_reply(
            COMMAND_INVALID,
            "COMMAND_INVALID - unknown exchange type 'x-consistent-hash'",
        );
        assert!(is_unknown_exchange_type(&unknown));
        let other = AmqpError::from_reply(
            PRECONDITION_FAILED,
            "PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'shards'",
        );
        assert!(!is_unknown_exchange_type(&other));
        assert_eq!(
            precondition_failed(&other),
            Some("PRECONDITION_FAILED - inequivalent arg 'type' for exchange 'shards'")
        );
        let text = ExchangeError::UnknownType {
            exchange: "run42.shards".into(),
            kind: ExchangeKind::ConsistentHash.type_name(),
            plugin: CONSISTENT_HASH_PLUGIN,
        }
        .to_string();
        assert!(
            text.contains("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange")
                && text.contains("x-consistent-hash"),
            "{text}"
        );
    }

    #[test]
    fn only_the_consistent_hash_exchange_hashes_the_message_id() {
        let arguments = ExchangeKind::ConsistentHash.arguments(None);
        assert_eq!(
            arguments.get("hash-property"),
            Some(&HeaderValue::from("message_id"))
        );
        assert!(ExchangeKind::Direct.arguments(None).is_empty());
        assert!(ExchangeKind::Fanout.arguments(None).is_empty());
        let marked = ExchangeKind::ConsistentHash.arguments(Some("p.shards.of-2"));
        assert_eq!(
            marked.get("alternate-exchange"),
            Some(&HeaderValue::from("p.shards.of-2"))
        );
    }
}
