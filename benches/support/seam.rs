//! One queue of the bare broker's ceiling moved through nnmon's own AMQP layer
//! (`nnmon-broker`'s [`Publisher`] and [`Inbox`], on the client it was built with) instead
//! of a raw client: the same messages, guarantees and clock as
//! [`raw_lapin`](super::raw_lapin) and [`raw_amqprs`](super::raw_amqprs), and nothing of
//! nnmon's services (no JSON, model, join or CSV). Set beside the raw client of the same
//! library, it gives the CPU nnmon's client layer costs per message (see
//! [`ceiling`](super::ceiling)).

use super::messages::Message;
use nnmon_broker::{Broker, BrokerUrls, Inbox, Publisher, RetryPolicy, message_properties};
use std::time::SystemTime;
use tokio_util::sync::CancellationToken;

/// A publisher and a consumer of one queue, set up and waiting.
pub struct Pair {
    publisher: (Broker, Publisher<()>),
    consumer: (Broker, Inbox),
    queue: String,
}

/// A connection through nnmon-broker to `url`, as a service makes it, named `name` on the
/// broker.
pub(super) async fn connect(url: &str, name: &str) -> Broker {
    let urls: BrokerUrls = url.parse().expect("AMQP_URL");
    Broker::connect(
        &urls,
        0,
        name,
        RetryPolicy::default(),
        &CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("cannot reach the broker at AMQP_URL ({e})"))
    .expect("not cancelled")
}

impl Pair {
    /// Connects both sides: a publisher allowing `window` unconfirmed messages, and an
    /// inbox with as much prefetch.
    pub async fn open(url: &str, queue: &str, window: u16) -> Self {
        let publisher = connect(url, "nnmon-bench-seam").await;
        let publishing = publisher.publisher(window.into()).await.expect("publisher");
        let consumer = connect(url, "nnmon-bench-seam").await;
        let inbox = consumer.inbox(queue, window).await.expect("inbox");
        Self {
            publisher: (publisher, publishing),
            consumer: (consumer, inbox),
            queue: queue.to_owned(),
        }
    }

    /// Moves `messages` through the queue; returns when the first was published and when
    /// the last was acked.
    pub async fn run(self, messages: Vec<Message>) -> (SystemTime, SystemTime) {
        let count = messages.len() as u64;
        let (broker, publisher) = self.publisher;
        let (consumer, inbox) = self.consumer;
        tokio::join!(
            publish(broker, publisher, self.queue, messages),
            consume(consumer, inbox, count)
        )
    }
}

/// Publishes `count` persistent mandatory messages, confirms awaited as the window fills,
/// as `features` does. Returns when the first message was published.
async fn publish(
    broker: Broker,
    mut publisher: Publisher<()>,
    queue: String,
    messages: Vec<Message>,
) -> SystemTime {
    let first = SystemTime::now();
    for message in messages {
        if publisher.is_full() {
            publisher.confirmed().await.expect("confirm");
        }
        publisher
            .publish(&queue, &message.body, message_properties(&message.id), ())
            .await
            .expect("publish");
    }
    publisher.drain().await.expect("confirms");
    broker.close().await;
    first
}

/// Consumes `count` messages a batch at a time, each batch acked in one `multiple` ack.
/// Returns when the last message was acked.
async fn consume(broker: Broker, mut inbox: Inbox, count: u64) -> SystemTime {
    let mut received = 0u64;
    while received < count {
        let batch = inbox.next_batch().await.expect("deliveries");
        received += batch.len() as u64;
        inbox.ack(&batch).await.expect("ack");
    }
    let last = SystemTime::now();
    broker.close().await;
    last
}
