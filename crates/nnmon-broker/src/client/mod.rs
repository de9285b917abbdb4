//! The AMQP client under nnmon-broker's API: lapin (the default, [`lapin`]) or amqprs
//! (feature `client-amqprs`, [`amqprs`]; it wins when both are asked for, so that
//! `--all-features` builds). Each module offers the same few items, used only by this
//! crate: a `Connection` that opens channels for one job each (declaring, publishing with
//! confirms, consuming), a `PublishChannel` that reports the outcome of its oldest
//! unconfirmed message, a `ConsumeChannel`, an `Acker`, the client's `Error` with the
//! broker's reply in it ([`AmqpError::reply`]) and a TLS `Connector`.

#[cfg(feature = "client-amqprs")]
mod amqprs;
#[cfg(feature = "client-amqprs")]
pub(crate) use self::amqprs::*;

#[cfg(not(feature = "client-amqprs"))]
mod lapin;
#[cfg(not(feature = "client-amqprs"))]
pub(crate) use self::lapin::*;

/// The AMQP client compiled in: `"lapin"` or `"amqprs"`.
pub const CLIENT: &str = NAME;

/// An error of the AMQP client compiled in, or the broker's reply that closed a channel or
/// the connection.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub struct AmqpError(pub(crate) Error);

impl AmqpError {
    /// The broker's reply code and text when it closed the channel or the connection
    /// (e.g. 403 and `ACCESS_REFUSED - ...`).
    pub fn reply(&self) -> Option<(u16, &str)> {
        reply(&self.0)
    }

    /// Whether the broker asked for something the compiled-in client cannot keep (amqprs:
    /// a heartbeat under 2 s): permanent, as retrying cannot help.
    pub(crate) fn is_unsupported(&self) -> bool {
        unsupported(&self.0)
    }

    /// The rustls error somewhere in this error's chain (the socket's I/O error wraps the
    /// TLS one).
    pub(crate) fn rustls_error(&self) -> Option<&rustls::Error> {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&self.0);
        while let Some(current) = cause {
            if let Some(found) = current.downcast_ref::<rustls::Error>() {
                return Some(found);
            }
            if let Some(found) = current
                .downcast_ref::<std::io::Error>()
                .and_then(crate::tls::rustls_error_in)
            {
                return Some(found);
            }
            cause = current.source();
        }
        None
    }
}

impl AmqpError {
    /// The broker's reply `code` with `text`, as the client reports it.
    #[cfg(test)]
    pub(crate) fn from_reply(code: u16, text: &str) -> Self {
        Self(reply_error(code, text))
    }
}

impl From<std::io::Error> for AmqpError {
    fn from(error: std::io::Error) -> Self {
        Self(Error::from(error))
    }
}

/// What became of a published message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Confirmed: the broker has it safe.
    Ack,
    /// Refused by the broker.
    Nack,
    /// Came back as unroutable (`mandatory`), then confirmed.
    Returned,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HeaderValue, Headers, Properties};

    #[test]
    fn properties_and_headers_survive_the_round_trip() {
        let mut nested = Headers::new();
        nested.insert("count".into(), HeaderValue::Int(3));
        let mut headers = Headers::new();
        headers.insert("x-nnmon-reason".into(), "not-json".into());
        headers.insert(
            "x-death".into(),
            HeaderValue::Array(vec![HeaderValue::Table(nested)]),
        );
        headers.insert("flag".into(), HeaderValue::Bool(true));
        let properties = Properties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json")
            .with_message_id("id-1")
            .with_type("status")
            .with_timestamp(7)
            .with_headers(headers);
        assert_eq!(round_trip(&properties), properties);
    }
}
