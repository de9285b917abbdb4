//! The pipeline's own flow through nnmon-broker with none of the services' work: three
//! processes chained as `features`, `model` and `metric` are, moving the same messages
//! with the same guarantees, and doing nothing else (no JSON, model, drift tests, join,
//! CSV or monitoring).
//!
//! The ceiling's three queues run side by side, each fed by a publisher that never waits
//! for anything but its confirms. The pipeline's are chained: `model` publishes only what
//! it was delivered and acks a features message only once its prediction is confirmed, and
//! `metric` reads what the other two wrote. The chain keeps exactly that dependency, and
//! the services' layout of connections and windows (one connection a stage, where the
//! ceiling has one per publisher and per consumer; `features`' one window shared by its
//! two queues, where each ceiling queue has one of its own). Set between the ceiling
//! through nnmon-broker and the pipeline, it tells apart what the pipeline's shape costs
//! (the broker's work changes with it: queues that run dry sync more often) from what
//! nnmon's services cost on top (see [`ceiling`](super::ceiling), which runs it).
//!
//! - `features`: one publisher whose window counts messages, not items; as the service,
//!   it starts an item (its features message, then its true value) while the window is not
//!   full.
//! - `model`: an inbox on `features`; each delivery yields one publish to `y_pred` whose
//!   token is the delivery's acker; a confirm acks, with `multiple`, up to the newest
//!   delivery it settles; no new batch is taken while the window is full.
//! - `metric`: an inbox on each of `y_true` and `y_pred`; each batch is acked with
//!   `multiple` as it comes.
//!
//! The run ends when `metric` acks its last batch, as the pipeline's ends at its last row:
//! `features` and `model` report their first publish as their end too, so that their own
//! last confirms (which the pipeline's clock does not wait for either) stay out of it.

use super::messages::{Kind, Message, messages};
use super::seam::connect;
use nnmon_broker::{Acker, Broker, Inbox, Publisher, message_properties};
use nnmon_proto::QueueNames;
use std::time::SystemTime;

/// Which service a chain process stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Features,
    Model,
    Metric,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Features, Role::Model, Role::Metric];

    pub fn name(self) -> &'static str {
        match self {
            Role::Features => "features",
            Role::Model => "model",
            Role::Metric => "metric",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.name() == name)
    }
}

/// What a stage moves, made before the clock starts.
enum Work {
    /// Each item's features message and true value (the three kinds of message are made
    /// apart, under IDs of their own: no stage of the chain joins them).
    Features(Publisher<()>, Vec<(Message, Message)>),
    /// A prediction per features message delivered.
    Model(Inbox, Publisher<Acker>, Vec<Message>),
    /// The true values and the predictions, as many of each as there are items.
    Metric(Inbox, Inbox, u64),
}

/// One process of the chain, connected and waiting.
pub struct Stage {
    broker: Broker,
    queues: QueueNames,
    work: Work,
}

impl Stage {
    /// Connects `role`'s side of the chain over `queues` for `count` items: publishers
    /// allowing `window` unconfirmed messages, inboxes with as much prefetch.
    pub async fn open(url: &str, role: Role, queues: QueueNames, window: u16, count: u64) -> Self {
        let broker = connect(url, "nnmon-bench-chain").await;
        let work = match role {
            Role::Features => {
                let publisher = broker.publisher(window.into()).await.expect("publisher");
                let items = messages(Kind::Features, count)
                    .into_iter()
                    .zip(messages(Kind::Truth, count))
                    .collect();
                Work::Features(publisher, items)
            }
            Role::Model => {
                let inbox = broker.inbox(&queues.features, window).await.expect("inbox");
                let publisher = broker.publisher(window.into()).await.expect("publisher");
                Work::Model(inbox, publisher, messages(Kind::Prediction, count))
            }
            Role::Metric => {
                let truths = broker.inbox(&queues.y_true, window).await.expect("inbox");
                let predictions = broker.inbox(&queues.y_pred, window).await.expect("inbox");
                Work::Metric(truths, predictions, count)
            }
        };
        Self {
            broker,
            queues,
            work,
        }
    }

    /// Does this stage's part; returns when the run started and ended as far as this
    /// stage can tell: for `features` and `model` their first publish, twice; for
    /// `metric` its first delivery and its last ack.
    pub async fn run(self) -> (SystemTime, SystemTime) {
        let Self {
            broker,
            queues,
            work,
        } = self;
        let span = match work {
            Work::Features(publisher, items) => {
                let first = features(publisher, &queues, items).await;
                (first, first)
            }
            Work::Model(inbox, publisher, predictions) => {
                let first = model(inbox, publisher, &queues.y_pred, predictions).await;
                (first, first)
            }
            Work::Metric(truths, predictions, count) => metric(truths, predictions, count).await,
        };
        broker.close().await;
        span
    }
}

/// Publishes every item, an item at a time while the window is not full; returns when it
/// published the first.
async fn features(
    mut publisher: Publisher<()>,
    queues: &QueueNames,
    items: Vec<(Message, Message)>,
) -> SystemTime {
    let first = SystemTime::now();
    for (features, truth) in items {
        if publisher.is_full() {
            publisher.confirmed().await.expect("confirm");
        }
        for (queue, message) in [(&queues.features, features), (&queues.y_true, truth)] {
            publisher
                .publish(queue, &message.body, message_properties(&message.id), ())
                .await
                .expect("publish");
        }
    }
    publisher.drain().await.expect("confirms");
    first
}

/// Predicts (publishes the next of `predictions` for) every features message delivered and
/// acks it once that is confirmed; returns when it published the first.
async fn model(
    mut inbox: Inbox,
    mut publisher: Publisher<Acker>,
    y_pred: &str,
    predictions: Vec<Message>,
) -> SystemTime {
    let count = predictions.len();
    let mut predictions = predictions.into_iter();
    let (mut first, mut settled) = (None, 0);
    while settled < count {
        tokio::select! {
            biased;
            confirmed = publisher.confirmed(), if publisher.in_flight() > 0 => {
                let mut ackers = vec![confirmed.expect("confirm")];
                ackers.extend(publisher.ready().expect("confirms"));
                settled += ackers.len();
                if let Some(newest) = ackers.last() {
                    newest.ack_multiple().await.expect("ack");
                }
            }
            batch = inbox.next_batch(), if !publisher.is_full() => {
                for delivery in batch.expect("deliveries") {
                    let prediction = predictions.next().expect("a prediction per delivery");
                    first.get_or_insert_with(SystemTime::now);
                    publisher
                        .publish(
                            y_pred,
                            &prediction.body,
                            message_properties(&prediction.id),
                            delivery.acker,
                        )
                        .await
                        .expect("publish");
                }
            }
        }
    }
    first.expect("published")
}

/// Acks `count` true values and `count` predictions, a batch at a time; returns when the
/// first was delivered and when the last was acked.
async fn metric(mut truths: Inbox, mut predictions: Inbox, count: u64) -> (SystemTime, SystemTime) {
    let (mut first, mut taken) = (None, [0u64; 2]);
    while taken.iter().any(|&side| side < count) {
        let (side, inbox, batch) = tokio::select! {
            batch = truths.next_batch(), if taken[0] < count => (0, &truths, batch),
            batch = predictions.next_batch(), if taken[1] < count => (1, &predictions, batch),
        };
        let batch = batch.expect("deliveries");
        first.get_or_insert_with(SystemTime::now);
        taken[side] += batch.len() as u64;
        inbox.ack(&batch).await.expect("ack");
    }
    (first.expect("delivered"), SystemTime::now())
}
