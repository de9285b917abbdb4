//! nnmon-broker on lapin: its connection runs the socket on an I/O thread of its own, and
//! every publish, confirm and delivery crosses to it and back.

use super::{AmqpError, Outcome};
use crate::message::{Acker as NnmonAcker, Delivery, HeaderValue, Headers, Properties};
use crate::{BrokerError, BrokerUrl, tls};
use futures_util::FutureExt;
use futures_util::stream::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::tcp::{AMQPUriTcpExt, RustlsConnector};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{BasicProperties, Channel, Confirmation, ConnectionProperties, PublisherConfirm};
use std::collections::VecDeque;
use std::time::Instant;

pub(crate) const NAME: &str = "lapin";

pub(crate) type Error = lapin::Error;

/// The TLS connector an `amqps://` connection is made with.
pub(crate) type Connector = RustlsConnector;

pub(crate) fn reply(error: &Error) -> Option<(u16, &str)> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => Some((amqp.get_id(), amqp.get_message().as_str())),
        _ => None,
    }
}

/// Whether `error` is a setting lapin cannot work with: none (it keeps every heartbeat
/// interval).
pub(crate) fn unsupported(_: &Error) -> bool {
    false
}

/// The error a broker's reply `code` and `text` make (for tests of classification).
#[cfg(test)]
pub(crate) fn reply_error(code: u16, text: &str) -> Error {
    let reply = lapin::protocol::AMQPError::from_id(code, text.into()).expect("an AMQP reply code");
    lapin::ErrorKind::ProtocolError(reply).into()
}

fn amqp(error: lapin::Error) -> AmqpError {
    AmqpError(error)
}

/// The connector for `roots` (none: the platform's verifier) and a client certificate.
pub(crate) fn connector(
    roots: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    identity: Option<tls::Identity>,
) -> std::io::Result<Connector> {
    use lapin::tcp::RustlsConnectorConfig;
    let config = match roots {
        // Not the platform verifier: with it these would be added to the system's roots.
        Some(cas) => RustlsConnectorConfig::default().with_parsable_certificates(cas),
        None => RustlsConnectorConfig::new_with_platform_verifier(),
    };
    match identity {
        Some((chain, key)) => config.connector_with_single_cert(chain, key),
        None => config.connector_with_no_client_auth(),
    }
}

/// One lapin connection.
pub(crate) struct Connection(lapin::Connection);

impl Connection {
    /// Connects and logs in, with `connector` for an `amqps://` URL.
    pub(crate) async fn open(
        url: &BrokerUrl,
        name: &str,
        connector: Option<Connector>,
    ) -> Result<Self, AmqpError> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let connection = match connector {
            Some(connector) => connect_tls(url.uri(), properties, connector).await,
            None => lapin::Connection::connect_uri(url.uri(), properties).await,
        };
        connection.map(Self).map_err(amqp)
    }

    async fn channel(&self) -> Result<Channel, AmqpError> {
        self.0.create_channel().await.map_err(amqp)
    }

    /// Declares `queue` (`passive`: only checks that it exists); returns the messages
    /// ready in it.
    pub(crate) async fn declare_queue(
        &self,
        queue: &str,
        passive: bool,
        arguments: &Headers,
    ) -> Result<u32, AmqpError> {
        let options = QueueDeclareOptions {
            durable: !passive,
            passive,
            ..QueueDeclareOptions::default()
        };
        let channel = self.channel().await?;
        let declared = channel
            .queue_declare(queue.into(), options, table(arguments))
            .await
            .map_err(amqp)?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(declared.message_count())
    }

    /// Deletes `queue` with its messages (a queue already gone is fine).
    pub(crate) async fn delete_queue(&self, queue: &str) -> Result<(), AmqpError> {
        let channel = self.channel().await?;
        channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .map_err(amqp)?;
        let _ = channel.close(200, "deleted".into()).await;
        Ok(())
    }

    pub(crate) async fn declare_exchange(
        &self,
        exchange: &str,
        kind: &str,
        arguments: &Headers,
    ) -> Result<(), AmqpError> {
        let kind = match kind {
            "direct" => lapin::ExchangeKind::Direct,
            "fanout" => lapin::ExchangeKind::Fanout,
            other => lapin::ExchangeKind::Custom(other.to_owned()),
        };
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let channel = self.channel().await?;
        channel
            .exchange_declare(exchange.into(), kind, durable, table(arguments))
            .await
            .map_err(amqp)?;
        let _ = channel.close(200, "declared".into()).await;
        Ok(())
    }

    pub(crate) async fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let channel = self.channel().await?;
        channel
            .queue_bind(
                queue.into(),
                exchange.into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp)?;
        let _ = channel.close(200, "bound".into()).await;
        Ok(())
    }

    pub(crate) async fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let channel = self.channel().await?;
        channel
            .exchange_bind(
                destination.into(),
                source.into(),
                routing_key.into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp)?;
        let _ = channel.close(200, "bound".into()).await;
        Ok(())
    }

    /// A channel in confirm mode.
    pub(crate) async fn publisher(&self) -> Result<PublishChannel, AmqpError> {
        let channel = self.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(amqp)?;
        Ok(PublishChannel {
            channel,
            in_flight: VecDeque::new(),
        })
    }

    /// A channel consuming `queue` with `prefetch` unacked deliveries at most.
    pub(crate) async fn consumer(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<ConsumeChannel, AmqpError> {
        let channel = self.channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(amqp)?;
        let consumer = channel
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(amqp)?;
        Ok(ConsumeChannel { channel, consumer })
    }

    pub(crate) async fn close(self) -> Result<(), AmqpError> {
        self.0
            .close(200, "nnmon shutting down".into())
            .await
            .map_err(amqp)
    }
}

/// The AMQP 0-9-1 protocol header a client opens with.
const PROTOCOL_HEADER: &[u8; 8] = b"AMQP\x00\x00\x09\x01";
/// A method frame's type octet, and the octet every frame ends with.
const METHOD_FRAME: u8 = 1;
const FRAME_END: u8 = 0xCE;
/// The largest `connection.start` frame read: RabbitMQ's is about 500 bytes.
const MAX_START_FRAME: usize = 64 * 1024;

/// The broker's `version` server property. lapin keeps no copy of the server properties,
/// so this opens a connection of its own (over `connector` for `amqps://`), reads the
/// broker's greeting (`connection.start`) and leaves before logging in: the broker logs
/// that as `client unexpectedly closed TCP connection`.
pub(crate) async fn server_version(
    url: &BrokerUrl,
    connector: Option<Connector>,
) -> Result<String, BrokerError> {
    use futures_util::io::{AsyncReadExt, AsyncWriteExt};
    let runtime = lapin::runtime::default_runtime().map_err(amqp)?;
    let plain = AMQPUri {
        scheme: AMQPScheme::AMQP,
        ..url.uri()
    };
    let stream = plain.connect_async(&runtime).await?;
    let mut stream = match connector {
        Some(connector) => stream.into_rustls(&connector, url.host()).await?,
        None => stream,
    };
    stream.write_all(PROTOCOL_HEADER).await?;
    stream.flush().await?;
    let mut header = [0u8; 7];
    stream.read_exact(&mut header).await?;
    let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
    if header[0] != METHOD_FRAME || size > MAX_START_FRAME {
        return Err(greeting("no connection.start method frame"));
    }
    let mut payload = vec![0u8; size + 1];
    stream.read_exact(&mut payload).await?;
    if payload.pop() != Some(FRAME_END) {
        return Err(greeting("a frame without its end octet"));
    }
    start_version(&payload)
}

fn greeting(problem: &str) -> BrokerError {
    BrokerError::Greeting(problem.to_owned())
}

/// The `version` server property of a `connection.start` method frame's payload.
fn start_version(payload: &[u8]) -> Result<String, BrokerError> {
    use lapin::protocol::{AMQPClass, connection::AMQPMethod};
    let (_, class) = lapin::protocol::parse_class(payload)
        .map_err(|_| greeting("a frame that is not an AMQP method"))?;
    let AMQPClass::Connection(AMQPMethod::Start(start)) = class else {
        return Err(greeting("a method other than connection.start"));
    };
    match start.server_properties.inner().get("version") {
        Some(AMQPValue::LongString(version)) => Ok(version.to_string()),
        _ => Err(greeting("connection.start without a version property")),
    }
}

/// lapin's own TCP connection, then the TLS handshake with nnmon's settings, then the
/// broker's verdict on the client (see [`tls::await_verdict`]).
async fn connect_tls(
    uri: AMQPUri,
    properties: ConnectionProperties,
    connector: RustlsConnector,
) -> lapin::Result<lapin::Connection> {
    use lapin::tcp::AsyncTcpStream;
    use std::pin::Pin;
    let runtime = lapin::runtime::default_runtime()?;
    lapin::Connection::connector(
        uri,
        runtime,
        async move |uri, runtime| {
            let tcp = AMQPUri {
                scheme: AMQPScheme::AMQP,
                ..uri.clone()
            };
            let stream = tcp.connect_async(&runtime).await?;
            let started = Instant::now();
            let mut stream = stream.into_rustls(&connector, &uri.authority.host).await?;
            if let AsyncTcpStream::Rustls(tls) = &mut stream {
                let tls13 =
                    tls.get_ref().1.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3);
                let mut byte = [0u8; 1];
                let read = std::future::poll_fn(|cx| {
                    futures_io::AsyncRead::poll_read(Pin::new(&mut *tls), cx, &mut byte)
                });
                tls::await_verdict(tls13, started.elapsed(), read).await?;
            }
            Ok(stream)
        },
        properties,
    )
    .await
}

/// A confirm-mode channel and its messages awaiting confirmation, oldest first.
pub(crate) struct PublishChannel {
    channel: Channel,
    in_flight: VecDeque<PublisherConfirm>,
}

impl PublishChannel {
    /// Publishes one persistent-or-not (as `properties` say), mandatory message.
    pub(crate) async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: &Properties,
    ) -> Result<(), AmqpError> {
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                options,
                body,
                basic_properties(properties),
            )
            .await
            .map_err(amqp)?;
        self.in_flight.push_back(confirm);
        Ok(())
    }

    /// Waits for the oldest unconfirmed message's outcome; it leaves the window only when
    /// confirmed. Cancel-safe.
    pub(crate) async fn oldest(&mut self) -> Result<Outcome, AmqpError> {
        let Some(confirm) = self.in_flight.front_mut() else {
            return std::future::pending().await;
        };
        let outcome = match confirm.await.map_err(amqp)? {
            Confirmation::Ack(None) | Confirmation::NotRequested => Outcome::Ack,
            Confirmation::Ack(Some(_)) => Outcome::Returned,
            Confirmation::Nack(_) => Outcome::Nack,
        };
        if outcome == Outcome::Ack {
            self.in_flight.pop_front();
        }
        Ok(outcome)
    }

    pub(crate) async fn close(self) -> Result<(), AmqpError> {
        self.channel.close(200, "done".into()).await.map_err(amqp)
    }
}

/// A consumer on a channel of its own.
pub(crate) struct ConsumeChannel {
    channel: Channel,
    consumer: lapin::Consumer,
}

impl ConsumeChannel {
    /// The next delivery; `None` once the broker cancelled the consumer. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Result<Delivery, AmqpError>> {
        let delivery = self.consumer.next().await?;
        Some(delivery.map(delivery_of).map_err(amqp))
    }

    /// The next delivery if one is buffered already.
    pub(crate) fn try_next(&mut self) -> Option<Option<Result<Delivery, AmqpError>>> {
        self.next().now_or_never()
    }

    pub(crate) async fn close(self) -> Result<(), AmqpError> {
        self.channel.close(200, "done".into()).await.map_err(amqp)
    }
}

/// Acks on the delivery's channel.
#[derive(Clone)]
pub(crate) struct Acker(lapin::Acker);

impl Acker {
    pub(crate) async fn ack_multiple(&self) -> Result<(), AmqpError> {
        self.0
            .ack(BasicAckOptions { multiple: true })
            .await
            .map(drop)
            .map_err(amqp)
    }
}

fn delivery_of(delivery: lapin::message::Delivery) -> Delivery {
    Delivery {
        properties: properties_of(&delivery.properties),
        delivery_tag: delivery.delivery_tag,
        redelivered: delivery.redelivered,
        routing_key: delivery.routing_key.to_string(),
        data: delivery.data,
        acker: NnmonAcker(Acker(delivery.acker)),
    }
}

fn text(value: &Option<ShortString>) -> Option<String> {
    value.as_ref().map(|s| s.to_string())
}

fn properties_of(p: &BasicProperties) -> Properties {
    Properties {
        content_type: text(p.content_type()),
        content_encoding: text(p.content_encoding()),
        headers: p.headers().as_ref().map(headers_of),
        delivery_mode: *p.delivery_mode(),
        priority: *p.priority(),
        correlation_id: text(p.correlation_id()),
        reply_to: text(p.reply_to()),
        expiration: text(p.expiration()),
        message_id: text(p.message_id()),
        timestamp: *p.timestamp(),
        kind: text(p.kind()),
        user_id: text(p.user_id()),
        app_id: text(p.app_id()),
    }
}

fn basic_properties(p: &Properties) -> BasicProperties {
    let mut b = BasicProperties::default();
    let s = |v: &String| ShortString::from(v.as_str());
    if let Some(v) = &p.content_type {
        b = b.with_content_type(s(v));
    }
    if let Some(v) = &p.content_encoding {
        b = b.with_content_encoding(s(v));
    }
    if let Some(v) = &p.headers {
        b = b.with_headers(table(v));
    }
    if let Some(v) = p.delivery_mode {
        b = b.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        b = b.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        b = b.with_correlation_id(s(v));
    }
    if let Some(v) = &p.reply_to {
        b = b.with_reply_to(s(v));
    }
    if let Some(v) = &p.expiration {
        b = b.with_expiration(s(v));
    }
    if let Some(v) = &p.message_id {
        b = b.with_message_id(s(v));
    }
    if let Some(v) = p.timestamp {
        b = b.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        b = b.with_type(s(v));
    }
    if let Some(v) = &p.user_id {
        b = b.with_user_id(s(v));
    }
    if let Some(v) = &p.app_id {
        b = b.with_app_id(s(v));
    }
    b
}

fn headers_of(table: &FieldTable) -> Headers {
    table
        .inner()
        .iter()
        .map(|(name, value)| (name.to_string(), value_of(value)))
        .collect()
}

fn value_of(value: &AMQPValue) -> HeaderValue {
    use AMQPValue as A;
    match value {
        A::Boolean(v) => HeaderValue::Bool(*v),
        A::ShortShortInt(v) => HeaderValue::Int((*v).into()),
        A::ShortShortUInt(v) => HeaderValue::Int((*v).into()),
        A::ShortInt(v) => HeaderValue::Int((*v).into()),
        A::ShortUInt(v) => HeaderValue::Int((*v).into()),
        A::LongInt(v) => HeaderValue::Int((*v).into()),
        A::LongUInt(v) => HeaderValue::Int((*v).into()),
        A::LongLongInt(v) => HeaderValue::Int(*v),
        A::Float(v) => HeaderValue::Float((*v).into()),
        A::Double(v) => HeaderValue::Float(*v),
        A::ShortString(v) => HeaderValue::Text(v.to_string()),
        A::LongString(v) => HeaderValue::Text(String::from_utf8_lossy(v.as_bytes()).into_owned()),
        A::ByteArray(v) => HeaderValue::Bytes(v.as_slice().to_vec()),
        A::Timestamp(v) => HeaderValue::Timestamp(*v),
        A::FieldArray(v) => HeaderValue::Array(v.as_slice().iter().map(value_of).collect()),
        A::FieldTable(v) => HeaderValue::Table(headers_of(v)),
        A::DecimalValue(_) | A::Void => HeaderValue::Void,
    }
}

pub(crate) fn table(headers: &Headers) -> FieldTable {
    let mut table = FieldTable::default();
    for (name, value) in headers {
        table.insert(ShortString::from(name.as_str()), amqp_value(value));
    }
    table
}

fn amqp_value(value: &HeaderValue) -> AMQPValue {
    match value {
        HeaderValue::Bool(v) => AMQPValue::Boolean(*v),
        HeaderValue::Int(v) => AMQPValue::LongLongInt(*v),
        HeaderValue::Float(v) => AMQPValue::Double(*v),
        HeaderValue::Text(v) => AMQPValue::LongString(LongString::from(v.as_str())),
        HeaderValue::Bytes(v) => AMQPValue::ByteArray(v.clone().into()),
        HeaderValue::Timestamp(v) => AMQPValue::Timestamp(*v),
        HeaderValue::Array(v) => AMQPValue::FieldArray(FieldArray::from(
            v.iter().map(amqp_value).collect::<Vec<_>>(),
        )),
        HeaderValue::Table(v) => AMQPValue::FieldTable(table(v)),
        HeaderValue::Void => AMQPValue::Void,
    }
}

/// `properties` sent and read back (for the client-neutral test in `client`).
#[cfg(test)]
pub(crate) fn round_trip(properties: &Properties) -> Properties {
    properties_of(&basic_properties(properties))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `connection.start` payload as RabbitMQ sends it, with these server properties.
    fn start_payload(properties: &[(&str, &str)]) -> Vec<u8> {
        let long_string = |bytes: &mut Vec<u8>, text: &str| {
            bytes.extend((text.len() as u32).to_be_bytes());
            bytes.extend(text.as_bytes());
        };
        let mut table = Vec::new();
        for (key, value) in properties {
            table.push(key.len() as u8);
            table.extend(key.as_bytes());
            table.push(b'S');
            long_string(&mut table, value);
        }
        let mut payload = vec![0, 10, 0, 10, 0, 9]; // connection.start, AMQP 0-9
        payload.extend((table.len() as u32).to_be_bytes());
        payload.extend(table);
        long_string(&mut payload, "PLAIN AMQPLAIN");
        long_string(&mut payload, "en_US");
        payload
    }

    #[test]
    fn the_server_version_comes_from_the_greetings_properties() {
        let greeting = start_payload(&[("product", "RabbitMQ"), ("version", "3.10.8")]);
        assert_eq!(start_version(&greeting).expect("a version"), "3.10.8");
        let anonymous = start_payload(&[("product", "RabbitMQ")]);
        assert!(matches!(
            start_version(&anonymous),
            Err(BrokerError::Greeting(_))
        ));
        assert!(start_version(b"not a frame").is_err());
    }
}
