//! One queue of the bare broker's ceiling moved by lapin alone: a publisher with confirms
//! awaited in windows and a consumer acking in `multiple` batches, each on a connection of
//! its own (see [`ceiling`](super::ceiling)).

use super::connect;
use super::messages::{Message, timestamp_s};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, Consumer, PublisherConfirm};
use std::collections::VecDeque;
use std::time::SystemTime;

/// A publisher and a consumer of one queue, set up and waiting.
pub struct Pair {
    publisher: (Connection, Channel),
    consumer: (Connection, Consumer),
    queue: String,
    window: u16,
}

impl Pair {
    /// Connects both sides: a confirm-mode channel allowing `window` unconfirmed messages,
    /// and a consumer with as much prefetch.
    pub async fn open(url: &str, queue: &str, window: u16) -> Self {
        let publisher = connect(url).await;
        let channel = publisher.create_channel().await.expect("channel");
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm_select");
        let consumer_connection = connect(url).await;
        let consuming = consumer_connection.create_channel().await.expect("channel");
        consuming
            .basic_qos(window, BasicQosOptions::default())
            .await
            .expect("qos");
        let consumer = consuming
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        Self {
            publisher: (publisher, channel),
            consumer: (consumer_connection, consumer),
            queue: queue.to_owned(),
            window,
        }
    }

    /// Moves `messages` through the queue; returns when the first was published and when
    /// the last was acked.
    pub async fn run(self, messages: Vec<Message>) -> (SystemTime, SystemTime) {
        let count = messages.len() as u64;
        let (connection, channel) = self.publisher;
        let (consumer_connection, consumer) = self.consumer;
        tokio::join!(
            publish(
                connection,
                channel,
                self.queue,
                self.window.into(),
                messages
            ),
            consume(consumer_connection, consumer, count)
        )
    }
}

/// Publishes `messages` to `queue`, persistent and mandatory with nnmon's properties,
/// confirms awaited in windows. Returns when the first message was published.
async fn publish(
    connection: Connection,
    channel: Channel,
    queue: String,
    window: usize,
    messages: Vec<Message>,
) -> SystemTime {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let mut in_flight: VecDeque<PublisherConfirm> = VecDeque::with_capacity(window);
    let first = SystemTime::now();
    for message in messages {
        if in_flight.len() >= window
            && let Some(confirm) = in_flight.pop_front()
        {
            let confirmation = confirm.await.expect("confirm");
            assert!(confirmation.is_ack(), "the broker nacked a message");
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message.id.into())
            .with_timestamp(timestamp_s());
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.as_str().into(),
                options,
                &message.body,
                properties,
            )
            .await
            .expect("publish");
        in_flight.push_back(confirm);
    }
    for confirm in in_flight {
        assert!(confirm.await.expect("confirm").is_ack(), "nacked");
    }
    let _ = connection.close(200, "done".into()).await;
    first
}

/// Consumes `count` messages, acking what is buffered in one `multiple` ack. Returns when
/// the last message was acked.
async fn consume(connection: Connection, mut consumer: Consumer, count: u64) -> SystemTime {
    let mut received = 0u64;
    while received < count {
        let first = consumer
            .next()
            .await
            .expect("consumer cancelled")
            .expect("delivery");
        let mut newest = first;
        received += 1;
        while received < count {
            match futures_util::FutureExt::now_or_never(consumer.next()) {
                Some(Some(delivery)) => {
                    newest = delivery.expect("delivery");
                    received += 1;
                }
                Some(None) => panic!("consumer cancelled"),
                None => break,
            }
        }
        newest
            .acker
            .ack(BasicAckOptions { multiple: true })
            .await
            .expect("ack");
    }
    let last = SystemTime::now();
    let _ = connection.close(200, "done".into()).await;
    last
}
