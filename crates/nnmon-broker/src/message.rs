//! The messages services send and receive, in nnmon's own terms rather than an AMQP
//! client's, so that the services do not change with the client compiled in (see
//! [`CLIENT`](crate::CLIENT)): [`Properties`] (with [`Headers`]), [`Delivery`] and the
//! [`Acker`] that settles it.

use crate::{BrokerError, client};
use std::collections::BTreeMap;

/// A message's headers (AMQP's field table), by name.
pub type Headers = BTreeMap<String, HeaderValue>;

/// One header value. Integers of every AMQP width read as [`Int`](Self::Int) and are sent
/// back as 64-bit (RabbitMQ's `l`): a dead-lettered copy keeps every header's value, not
/// its width.
#[derive(Clone, Debug, PartialEq)]
pub enum HeaderValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    /// A long (or short) string. AMQP allows any bytes; non-UTF-8 ones are replaced.
    Text(String),
    Bytes(Vec<u8>),
    /// Seconds since the Unix epoch.
    Timestamp(u64),
    Array(Vec<HeaderValue>),
    Table(Headers),
    /// AMQP's void, and decimals (which nnmon never reads).
    Void,
}

impl From<&str> for HeaderValue {
    fn from(text: &str) -> Self {
        Self::Text(text.to_owned())
    }
}

/// The AMQP properties of a message (`type` is [`kind`](Self::kind)).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Properties {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub headers: Option<Headers>,
    pub delivery_mode: Option<u8>,
    pub priority: Option<u8>,
    pub correlation_id: Option<String>,
    pub reply_to: Option<String>,
    pub expiration: Option<String>,
    pub message_id: Option<String>,
    pub timestamp: Option<u64>,
    pub kind: Option<String>,
    pub user_id: Option<String>,
    pub app_id: Option<String>,
}

impl Properties {
    /// 2: persistent.
    pub fn with_delivery_mode(mut self, mode: u8) -> Self {
        self.delivery_mode = Some(mode);
        self
    }

    pub fn with_content_type(mut self, content_type: &str) -> Self {
        self.content_type = Some(content_type.to_owned());
        self
    }

    pub fn with_message_id(mut self, id: &str) -> Self {
        self.message_id = Some(id.to_owned());
        self
    }

    pub fn with_timestamp(mut self, seconds: u64) -> Self {
        self.timestamp = Some(seconds);
        self
    }

    /// The AMQP `type` property.
    pub fn with_type(mut self, kind: &str) -> Self {
        self.kind = Some(kind.to_owned());
        self
    }

    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = Some(headers);
        self
    }
}

/// One message handed to a consumer ([`Inbox`](crate::Inbox)).
pub struct Delivery {
    /// The body.
    pub data: Vec<u8>,
    /// Its tag on the consumer's channel: tags grow in delivery order.
    pub delivery_tag: u64,
    pub redelivered: bool,
    /// The routing key it was published with (on the default exchange: its queue).
    pub routing_key: String,
    pub properties: Properties,
    /// Settles this delivery (and earlier ones), also after the batch is gone.
    pub acker: Acker,
}

/// Acks one delivery on its channel. Cheap to clone.
#[derive(Clone)]
pub struct Acker(pub(crate) client::Acker);

impl Acker {
    /// Acks this delivery and every earlier one of its channel (`multiple`), in one frame.
    pub async fn ack_multiple(&self) -> Result<(), BrokerError> {
        self.0.ack_multiple().await.map_err(BrokerError::Amqp)
    }
}
