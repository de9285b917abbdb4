//! One queue of the bare broker's ceiling moved by amqprs alone: the same guarantees and
//! the same clock as [`raw_lapin`](super::raw_lapin), so that nnmon on amqprs is compared
//! with amqprs alone (see [`ceiling`](super::ceiling)).

use super::messages::{Message, timestamp_s};
use amqprs::callbacks::ChannelCallback;
use amqprs::channel::{
    BasicAckArguments, BasicConsumeArguments, BasicPublishArguments, BasicQosArguments, Channel,
    ConfirmSelectArguments, ConsumerMessage,
};
use amqprs::connection::{Connection, OpenConnectionArguments};
use amqprs::{Ack, BasicProperties, Cancel, CloseChannel, Nack, Return};
use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::SystemTime;
use tokio::sync::mpsc;

type Outcome = std::result::Result<(), amqprs::error::Error>;

/// Forwards the broker's confirms of one channel: `(tag, multiple, acked)`.
struct Confirms(mpsc::UnboundedSender<(u64, bool, bool)>);

#[async_trait::async_trait]
impl ChannelCallback for Confirms {
    async fn close(&mut self, _: &Channel, close: CloseChannel) -> Outcome {
        panic!("the broker closed a ceiling channel: {close}");
    }
    async fn cancel(&mut self, _: &Channel, _: Cancel) -> Outcome {
        panic!("the broker cancelled a ceiling consumer");
    }
    async fn flow(
        &mut self,
        _: &Channel,
        active: bool,
    ) -> std::result::Result<bool, amqprs::error::Error> {
        Ok(active)
    }
    async fn publish_ack(&mut self, _: &Channel, ack: Ack) {
        let _ = self.0.send((ack.delivery_tag(), ack.mutiple(), true));
    }
    async fn publish_nack(&mut self, _: &Channel, nack: Nack) {
        let _ = self.0.send((nack.delivery_tag(), nack.multiple(), false));
    }
    async fn publish_return(&mut self, _: &Channel, _: Return, _: BasicProperties, _: Vec<u8>) {
        panic!("a ceiling message was returned");
    }
}

async fn open(url: &str) -> Connection {
    let uri = lapin::uri::AMQPUri::from_str(url).expect("AMQP_URL");
    let user = &uri.authority.userinfo;
    let mut arguments = OpenConnectionArguments::new(
        &uri.authority.host,
        uri.authority.port,
        &user.username,
        &user.password,
    );
    arguments.virtual_host(&uri.vhost);
    Connection::open(&arguments)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the broker at AMQP_URL with amqprs ({e})"))
}

/// Publishes `messages` to `queue`, persistent and mandatory with nnmon's properties,
/// confirms awaited in windows. Returns when the first message was published.
async fn publish(
    connection: Connection,
    channel: Channel,
    mut confirms: mpsc::UnboundedReceiver<(u64, bool, bool)>,
    queue: String,
    window: u64,
    messages: Vec<Message>,
) -> SystemTime {
    let count = messages.len() as u64;
    let mut arguments = BasicPublishArguments::new("", &queue);
    arguments.mandatory = true;
    // Confirmed: every tag up to `settled`, and single acks beyond it.
    let mut settled = 0u64;
    let mut ahead = BTreeSet::new();
    let mut confirm = |(tag, multiple, acked): (u64, bool, bool), settled: &mut u64| {
        assert!(acked, "the broker nacked a message");
        if multiple {
            *settled = (*settled).max(tag);
        } else {
            ahead.insert(tag);
        }
        while ahead.first().is_some_and(|&t| t <= *settled + 1) {
            let t = ahead.pop_first().unwrap_or_default();
            *settled = (*settled).max(t);
        }
    };
    let first = SystemTime::now();
    for (published, message) in (0u64..).zip(messages) {
        while published - settled >= window {
            let event = confirms.recv().await.expect("the channel closed");
            confirm(event, &mut settled);
        }
        let mut properties = BasicProperties::default();
        properties
            .with_delivery_mode(2)
            .with_content_type("application/json")
            .with_message_id(&message.id)
            .with_timestamp(timestamp_s());
        channel
            .basic_publish(properties, message.body, arguments.clone())
            .await
            .expect("publish");
    }
    while settled < count {
        let event = confirms.recv().await.expect("the channel closed");
        confirm(event, &mut settled);
    }
    let _ = connection.close().await;
    first
}

/// Consumes `count` messages, acking what is buffered in one `multiple` ack. Returns when
/// the last message was acked.
async fn consume(
    connection: Connection,
    channel: Channel,
    mut deliveries: mpsc::UnboundedReceiver<ConsumerMessage>,
    count: u64,
) -> SystemTime {
    let tag = |message: ConsumerMessage| message.deliver.expect("a delivery").delivery_tag();
    let mut received = 0u64;
    while received < count {
        let mut newest = tag(deliveries.recv().await.expect("consumer ended"));
        received += 1;
        while received < count {
            match deliveries.try_recv() {
                Ok(message) => {
                    newest = tag(message);
                    received += 1;
                }
                Err(_) => break,
            }
        }
        channel
            .basic_ack(BasicAckArguments::new(newest, true))
            .await
            .expect("ack");
    }
    let last = SystemTime::now();
    let _ = connection.close().await;
    last
}

/// A publisher and a consumer of one queue, set up and waiting.
pub struct Pair {
    publisher: (
        Connection,
        Channel,
        mpsc::UnboundedReceiver<(u64, bool, bool)>,
    ),
    consumer: (
        Connection,
        Channel,
        mpsc::UnboundedReceiver<ConsumerMessage>,
    ),
    queue: String,
    window: u16,
}

impl Pair {
    /// Connects both sides: a confirm-mode channel allowing `window` unconfirmed messages,
    /// and a consumer with as much prefetch.
    pub async fn open(url: &str, queue: &str, window: u16) -> Self {
        let publisher = open(url).await;
        let channel = publisher.open_channel(None).await.expect("channel");
        let (sender, confirms) = mpsc::unbounded_channel();
        channel
            .register_callback(Confirms(sender))
            .await
            .expect("callback");
        channel
            .confirm_select(ConfirmSelectArguments::new(false))
            .await
            .expect("confirm_select");
        let consumer = open(url).await;
        let consuming = consumer.open_channel(None).await.expect("channel");
        consuming
            .basic_qos(BasicQosArguments::new(0, window, false))
            .await
            .expect("qos");
        let (_, deliveries) = consuming
            .basic_consume_rx(BasicConsumeArguments::new(queue, ""))
            .await
            .expect("consume");
        Self {
            publisher: (publisher, channel, confirms),
            consumer: (consumer, consuming, deliveries),
            queue: queue.to_owned(),
            window,
        }
    }

    /// Moves `messages` through the queue; returns when the first was published and when
    /// the last was acked.
    pub async fn run(self, messages: Vec<Message>) -> (SystemTime, SystemTime) {
        let count = messages.len() as u64;
        let (connection, channel, confirms) = self.publisher;
        let (consumer, consuming, deliveries) = self.consumer;
        tokio::join!(
            publish(
                connection,
                channel,
                confirms,
                self.queue,
                self.window.into(),
                messages
            ),
            consume(consumer, consuming, deliveries, count)
        )
    }
}
