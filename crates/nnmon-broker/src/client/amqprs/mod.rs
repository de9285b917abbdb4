//! nnmon-broker on amqprs: its reader and writer run as tasks on the caller's tokio
//! runtime (one thread per nnmon service), so publishes, confirms and deliveries do not
//! cross threads. Its channels report events through callbacks: [`Events`] turns them
//! into what nnmon awaits — confirms ([`confirms`]), the consumer's cancellation, and the
//! broker's reply when it closes a channel or the connection, which amqprs keeps from the
//! failing call. A login or TLS failure is diagnosed again in a handshake of nnmon's own
//! ([`handshake`]); a socket that never connected, or a `connection.close` amqprs kept the
//! reply of, is not.

mod confirms;
mod convert;
mod handshake;

use super::{AmqpError, Outcome};
use crate::message::{Acker as NnmonAcker, Delivery, Headers, Properties};
use crate::{BrokerError, BrokerUrl, tls};
use amqprs::callbacks::{ChannelCallback, ConnectionCallback};
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, ConsumerMessage, ExchangeBindArguments, ExchangeDeclareArguments,
    QueueBindArguments, QueueDeclareArguments, QueueDeleteArguments,
};
use amqprs::connection::OpenConnectionArguments;
use amqprs::security::SecurityCredentials;
use amqprs::tls::TlsAdaptor;
use amqprs::{Ack, BasicProperties, Cancel, Close, CloseChannel, Nack, Return};
use async_trait::async_trait;
use confirms::{Confirm, ConfirmWindow};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

pub(crate) const NAME: &str = "amqprs";

/// The TLS connector an `amqps://` connection is made with.
pub(crate) type Connector = tokio_rustls::TlsConnector;

/// The broker's reply closing a channel or the connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) code: u16,
    pub(crate) text: String,
}

/// What can go wrong, as amqprs says it or as the broker did.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Client(#[from] amqprs::error::Error),
    #[error("the broker closed the channel or connection: {} {}", .0.code, .0.text)]
    Reply(Reply),
    #[error("{0}")]
    Io(#[source] std::io::Error),
    /// A channel or the connection ended without a reply (a lost connection).
    #[error("{0}")]
    Ended(&'static str),
    /// The broker asked for something amqprs cannot keep: retrying cannot help.
    #[error("{0}")]
    Unsupported(&'static str),
}

impl From<std::io::Error> for Error {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

/// Whether `error` is a setting amqprs cannot work with (see [`Error::Unsupported`]).
pub(crate) fn unsupported(error: &Error) -> bool {
    matches!(error, Error::Unsupported(_))
}

pub(crate) fn reply(error: &Error) -> Option<(u16, &str)> {
    match error {
        Error::Reply(reply) => Some((reply.code, reply.text.as_str())),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) use convert::round_trip;

#[cfg(test)]
pub(crate) fn reply_error(code: u16, text: &str) -> Error {
    Error::Reply(Reply {
        code,
        text: text.to_owned(),
    })
}

/// The connector for `roots` (none: the platform's verifier, as on lapin, so both clients
/// trust the same CAs) and a client certificate.
pub(crate) fn connector(
    roots: Option<Vec<rustls::pki_types::CertificateDer<'static>>>,
    identity: Option<tls::Identity>,
) -> std::io::Result<Connector> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let versions = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?;
    let builder = match roots {
        // Only these: the platform verifier would add them to the system's roots.
        Some(cas) => {
            let mut store = rustls::RootCertStore::empty();
            for ca in cas {
                store.add(ca).map_err(std::io::Error::other)?;
            }
            versions.with_root_certificates(store)
        }
        None => versions
            .with_platform_verifier()
            .map_err(std::io::Error::other)?,
    };
    let config = match identity {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(std::io::Error::other)?,
        None => builder.with_no_client_auth(),
    };
    Ok(Connector::from(Arc::new(config)))
}

/// Where the broker's reply closing the connection is kept, for every channel's errors.
type ReplySlot = Arc<Mutex<Option<Reply>>>;

fn take_reply(slot: &ReplySlot) -> Option<Reply> {
    slot.lock().map(|reply| reply.clone()).unwrap_or_default()
}

fn keep_reply(slot: &ReplySlot, code: u16, text: &str) {
    if let Ok(mut reply) = slot.lock() {
        reply.get_or_insert(Reply {
            code,
            text: text.to_owned(),
        });
    }
}

/// The connection's callback: keeps the broker's reply when it closes the connection.
struct ConnectionEvents(ReplySlot);

#[async_trait]
impl ConnectionCallback for ConnectionEvents {
    async fn close(
        &mut self,
        _: &amqprs::connection::Connection,
        close: Close,
    ) -> std::result::Result<(), amqprs::error::Error> {
        keep_reply(&self.0, close.reply_code(), close.reply_text());
        Ok(())
    }

    async fn blocked(&mut self, _: &amqprs::connection::Connection, _: String) {}

    async fn unblocked(&mut self, _: &amqprs::connection::Connection) {}

    async fn secret_updated(&mut self, _: &amqprs::connection::Connection) {}
}

/// What a channel's callback learnt: the broker's reply closing it, and whether it
/// cancelled the consumer.
struct ChannelState {
    closed: ReplySlot,
    connection: ReplySlot,
    cancelled: AtomicBool,
}

impl ChannelState {
    /// `error` with the broker's reply that caused it, when there was one.
    fn error(&self, error: amqprs::error::Error) -> AmqpError {
        AmqpError(match self.reply() {
            Some(reply) => Error::Reply(reply),
            None => Error::Client(error),
        })
    }

    fn reply(&self) -> Option<Reply> {
        take_reply(&self.closed).or_else(|| take_reply(&self.connection))
    }

    /// Why the channel's events ended.
    fn ended(&self) -> AmqpError {
        AmqpError(match self.reply() {
            Some(reply) => Error::Reply(reply),
            None => Error::Ended("the channel closed (connection lost?)"),
        })
    }
}

/// A channel's callback.
struct Events {
    state: Arc<ChannelState>,
    /// For a confirm-mode channel.
    confirms: Option<mpsc::UnboundedSender<Confirm>>,
}

impl Events {
    fn confirm(&self, confirm: Confirm) {
        if let Some(confirms) = &self.confirms {
            // The publisher gone, nobody waits for it.
            let _ = confirms.send(confirm);
        }
    }
}

#[async_trait]
impl ChannelCallback for Events {
    async fn close(
        &mut self,
        _: &Channel,
        close: CloseChannel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        keep_reply(&self.state.closed, close.reply_code(), close.reply_text());
        Ok(())
    }

    async fn cancel(
        &mut self,
        _: &Channel,
        _: Cancel,
    ) -> std::result::Result<(), amqprs::error::Error> {
        self.state.cancelled.store(true, Ordering::Release);
        Ok(())
    }

    async fn flow(
        &mut self,
        _: &Channel,
        active: bool,
    ) -> std::result::Result<bool, amqprs::error::Error> {
        Ok(active)
    }

    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        self.confirm(Confirm::Ack {
            tag: ack.delivery_tag(),
            multiple: ack.mutiple(), // sic: amqprs 2.1 spells it so
        });
    }

    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        self.confirm(Confirm::Nack {
            tag: nack.delivery_tag(),
            multiple: nack.multiple(),
        });
    }

    async fn publish_return(
        &mut self,
        _: &Channel,
        _: Return,
        properties: BasicProperties,
        _: Vec<u8>,
    ) {
        self.confirm(Confirm::Return {
            message_id: properties.message_id().cloned(),
        });
    }
}

/// One amqprs connection.
pub(crate) struct Connection {
    connection: amqprs::connection::Connection,
    closed: ReplySlot,
}

impl Connection {
    /// Connects and logs in, with `connector` for an `amqps://` URL.
    pub(crate) async fn open(
        url: &BrokerUrl,
        name: &str,
        connector: Option<Connector>,
    ) -> Result<Self, AmqpError> {
        let uri = url.uri();
        let user = &uri.authority.userinfo;
        let mut arguments = OpenConnectionArguments::new(
            &uri.authority.host,
            uri.authority.port,
            &user.username,
            &user.password,
        );
        arguments
            .virtual_host(&uri.vhost)
            .connection_name(name)
            .heartbeat(uri.query.heartbeat.unwrap_or_default());
        if url.uses_external_auth() {
            arguments.credentials(SecurityCredentials::new_external());
        }
        if let Some(connector) = &connector {
            arguments.tls_adaptor(TlsAdaptor::new(
                connector.clone(),
                uri.authority.host.clone(),
            ));
        }
        let connection = match amqprs::connection::Connection::open(&arguments).await {
            Ok(connection) => connection,
            // Only a failure amqprs could not explain is asked again of the broker: not a
            // socket that never connected (a broker outage: each retry would knock twice),
            // nor a `connection.close` amqprs kept the reply of (a vhost down: each retry
            // would log in twice).
            Err(error) => {
                return Err(AmqpError(match handshake::failure(&error) {
                    handshake::Failure::Reply(reply) => Error::Reply(reply),
                    handshake::Failure::Socket => Error::Client(error),
                    handshake::Failure::Unexplained => handshake::diagnose(url, connector.as_ref())
                        .await
                        .unwrap_or(Error::Client(error)),
                }));
            }
        };
        // A broker whose own heartbeat setting is below what amqprs can keep (see
        // `url::heartbeat_problem`) lowers the negotiated interval to it.
        if connection.heartbeat() < crate::url::MIN_HEARTBEAT_SECS {
            let _ = connection.close().await;
            return Err(AmqpError(Error::Unsupported(
                "the broker's heartbeat setting is below 2 s, which the amqprs client cannot keep (it would send heartbeats without pause); raise it on the broker, or build nnmon on lapin (--no-default-features)",
            )));
        }
        let closed = ReplySlot::default();
        connection
            .register_callback(ConnectionEvents(closed.clone()))
            .await
            .map_err(|error| AmqpError(Error::Client(error)))?;
        Ok(Self { connection, closed })
    }

    /// A new channel with its callback (`confirms` for a confirm-mode one).
    async fn channel(
        &self,
        confirms: Option<mpsc::UnboundedSender<Confirm>>,
    ) -> Result<(Channel, Arc<ChannelState>), AmqpError> {
        let state = Arc::new(ChannelState {
            closed: ReplySlot::default(),
            connection: self.closed.clone(),
            cancelled: AtomicBool::new(false),
        });
        let failed = |error| {
            AmqpError(match take_reply(&self.closed) {
                Some(reply) => Error::Reply(reply),
                None => Error::Client(error),
            })
        };
        let channel = self.connection.open_channel(None).await.map_err(failed)?;
        let events = Events {
            state: state.clone(),
            confirms,
        };
        channel.register_callback(events).await.map_err(failed)?;
        Ok((channel, state))
    }

    /// Runs one declaration or binding on a short-lived channel of its own: a refusal
    /// closes that channel, and must not take a publisher's or a consumer's with it.
    async fn declare<T>(
        &self,
        command: impl AsyncFnOnce(&Channel) -> Result<T, amqprs::error::Error>,
    ) -> Result<T, AmqpError> {
        let (channel, state) = self.channel(None).await?;
        let done = command(&channel)
            .await
            .map_err(|error| state.error(error))?;
        let _ = channel.close().await;
        Ok(done)
    }

    /// Declares `queue` (`passive`: only checks that it exists); returns the messages
    /// ready in it.
    pub(crate) async fn declare_queue(
        &self,
        queue: &str,
        passive: bool,
        arguments: &Headers,
    ) -> Result<u32, AmqpError> {
        let declare = QueueDeclareArguments::new(queue)
            .durable(!passive)
            .passive(passive)
            .arguments(convert::table(arguments))
            .finish();
        let declared = self
            .declare(async |channel| channel.queue_declare(declare).await)
            .await?;
        // amqprs gives no declare-ok only for a `no_wait` declare, which this is not.
        match declared {
            Some((_, messages, _)) => Ok(messages),
            None => Err(AmqpError(Error::Ended("queue.declare got no declare-ok"))),
        }
    }

    /// Deletes `queue` with its messages (a queue already gone is fine).
    pub(crate) async fn delete_queue(&self, queue: &str) -> Result<(), AmqpError> {
        let delete = QueueDeleteArguments::new(queue);
        self.declare(async |channel| channel.queue_delete(delete).await.map(drop))
            .await
    }

    pub(crate) async fn declare_exchange(
        &self,
        exchange: &str,
        kind: &str,
        arguments: &Headers,
    ) -> Result<(), AmqpError> {
        let mut declare = ExchangeDeclareArguments::new(exchange, kind);
        declare.durable = true;
        declare.arguments = convert::table(arguments);
        self.declare(async |channel| channel.exchange_declare(declare).await)
            .await
    }

    pub(crate) async fn bind_queue(
        &self,
        queue: &str,
        exchange: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let bind = QueueBindArguments::new(queue, exchange, routing_key);
        self.declare(async |channel| channel.queue_bind(bind).await)
            .await
    }

    pub(crate) async fn bind_exchange(
        &self,
        destination: &str,
        source: &str,
        routing_key: &str,
    ) -> Result<(), AmqpError> {
        let bind = ExchangeBindArguments::new(destination, source, routing_key);
        self.declare(async |channel| channel.exchange_bind(bind).await)
            .await
    }

    /// A channel in confirm mode.
    pub(crate) async fn publisher(&self) -> Result<PublishChannel, AmqpError> {
        let (sender, confirms) = mpsc::unbounded_channel();
        let (channel, state) = self.channel(Some(sender)).await?;
        channel
            .confirm_select(ConfirmSelectArguments::new(false))
            .await
            .map_err(|error| state.error(error))?;
        Ok(PublishChannel {
            channel,
            state,
            confirms,
            window: ConfirmWindow::new(),
        })
    }

    /// A channel consuming `queue` with `prefetch` unacked deliveries at most.
    pub(crate) async fn consumer(
        &self,
        queue: &str,
        prefetch: u16,
    ) -> Result<ConsumeChannel, AmqpError> {
        let (channel, state) = self.channel(None).await?;
        channel
            .basic_qos(BasicQosArguments::new(0, prefetch, false))
            .await
            .map_err(|error| state.error(error))?;
        let (_, deliveries) = channel
            .basic_consume_rx(BasicConsumeArguments::new(queue, ""))
            .await
            .map_err(|error| state.error(error))?;
        Ok(ConsumeChannel {
            channel,
            state,
            deliveries,
        })
    }

    pub(crate) async fn close(self) -> Result<(), AmqpError> {
        self.connection
            .close()
            .await
            .map_err(|error| AmqpError(Error::Client(error)))
    }
}

/// The broker's `version` server property, which amqprs keeps from the greeting: this
/// logs in (over `connector` for `amqps://`) and leaves.
pub(crate) async fn server_version(
    url: &BrokerUrl,
    connector: Option<Connector>,
) -> Result<String, BrokerError> {
    let connection = Connection::open(url, "nnmon-server-version", connector)
        .await
        .map_err(|error| BrokerError::classify(error, url, true))?;
    let version = connection
        .connection
        .server_properties()
        .version()
        .to_owned();
    let _ = connection.close().await;
    if version.is_empty() {
        return Err(BrokerError::Greeting(
            "connection.start without a version property".to_owned(),
        ));
    }
    Ok(version)
}

/// A confirm-mode channel and the outcomes of its messages in flight.
pub(crate) struct PublishChannel {
    channel: Channel,
    state: Arc<ChannelState>,
    confirms: mpsc::UnboundedReceiver<Confirm>,
    window: ConfirmWindow,
}

impl PublishChannel {
    /// Publishes one mandatory message.
    pub(crate) async fn publish(
        &mut self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: &Properties,
    ) -> Result<(), AmqpError> {
        // amqprs would send it on a channel the broker closed, and the broker would close
        // the whole connection for that (504 CHANNEL_ERROR), every consumer on it with it.
        if !self.channel.is_open() {
            return Err(self.state.ended());
        }
        let mut arguments = BasicPublishArguments::new(exchange, routing_key);
        arguments.mandatory = true;
        self.channel
            .basic_publish(
                convert::basic_properties(properties),
                body.to_vec(),
                arguments,
            )
            .await
            .map_err(|error| self.state.error(error))?;
        self.window.sent(properties.message_id.clone());
        Ok(())
    }

    /// Waits for the oldest unconfirmed message's outcome; it leaves the window only when
    /// confirmed. Cancel-safe (an event received is applied before the next await).
    pub(crate) async fn oldest(&mut self) -> Result<Outcome, AmqpError> {
        loop {
            // Everything already received first: one wake-up settles a whole `multiple` ack.
            while let Ok(confirm) = self.confirms.try_recv() {
                self.window.apply(confirm);
            }
            if let Some(outcome) = self.window.oldest() {
                if outcome == Outcome::Ack {
                    self.window.pop();
                }
                return Ok(outcome);
            }
            match self.confirms.recv().await {
                Some(confirm) => self.window.apply(confirm),
                None => return Err(self.state.ended()),
            }
        }
    }

    pub(crate) async fn close(self) -> Result<(), AmqpError> {
        let state = self.state;
        self.channel
            .close()
            .await
            .map_err(|error| state.error(error))
    }
}

/// A consumer on a channel of its own.
pub(crate) struct ConsumeChannel {
    channel: Channel,
    state: Arc<ChannelState>,
    deliveries: mpsc::UnboundedReceiver<ConsumerMessage>,
}

impl ConsumeChannel {
    /// The next delivery; `None` once the broker cancelled the consumer (after the
    /// deliveries before it), an error when the channel or connection ended. Cancel-safe.
    pub(crate) async fn next(&mut self) -> Option<Result<Delivery, AmqpError>> {
        let message = self.deliveries.recv().await;
        self.delivered(message)
    }

    /// The next delivery if one is buffered already.
    pub(crate) fn try_next(&mut self) -> Option<Option<Result<Delivery, AmqpError>>> {
        use mpsc::error::TryRecvError;
        match self.deliveries.try_recv() {
            Ok(message) => Some(self.delivered(Some(message))),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(self.delivered(None)),
        }
    }

    fn delivered(&self, message: Option<ConsumerMessage>) -> Option<Result<Delivery, AmqpError>> {
        let Some(message) = message else {
            if self.state.cancelled.load(Ordering::Acquire) {
                return None;
            }
            return Some(Err(self.state.ended()));
        };
        let (Some(deliver), Some(properties), Some(data)) =
            (message.deliver, message.basic_properties, message.content)
        else {
            return Some(Err(AmqpError(Error::Ended("a delivery came incomplete"))));
        };
        Some(Ok(Delivery {
            data,
            delivery_tag: deliver.delivery_tag(),
            redelivered: deliver.redelivered(),
            routing_key: deliver.routing_key().clone(),
            properties: convert::properties_of(&properties),
            acker: NnmonAcker(Acker {
                channel: self.channel.clone(),
                state: self.state.clone(),
                tag: deliver.delivery_tag(),
            }),
        }))
    }

    pub(crate) async fn close(self) -> Result<(), AmqpError> {
        let state = self.state;
        self.channel
            .close()
            .await
            .map_err(|error| state.error(error))
    }
}

/// Acks on the delivery's channel.
#[derive(Clone)]
pub(crate) struct Acker {
    channel: Channel,
    state: Arc<ChannelState>,
    tag: u64,
}

impl Acker {
    pub(crate) async fn ack_multiple(&self) -> Result<(), AmqpError> {
        // As for publishing: an ack on a closed channel would close the connection.
        if !self.channel.is_open() {
            return Err(self.state.ended());
        }
        self.channel
            .basic_ack(BasicAckArguments::new(self.tag, true))
            .await
            .map_err(|error| self.state.error(error))
    }
}
