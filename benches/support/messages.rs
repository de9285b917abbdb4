//! The messages a ceiling moves: byte for byte the kind the pipeline moves on the same
//! queue, so that the broker does the same work per message on both sides of the ratio.
//! `features` carries the data set's feature vectors, `y_true` its targets and `y_pred` the
//! built-in model's predictions, each encoded by `nnmon_proto` under a fresh UUIDv7 with a
//! publish time and item number, as `features` and `model` send them; every message also
//! gets nnmon's properties (persistent JSON, its ID, a timestamp), which the movers set.
//!
//! Until this module the ceiling moved 200-byte bodies of `x` with no ID or timestamp:
//! other sizes per queue than the pipeline's, and fewer properties for the broker to decode
//! and store.

use nnmon_model::{LinearModel, diabetes};
use nnmon_proto::{FeaturesMessage, MessageId, ValueMessage};
use std::time::{SystemTime, UNIX_EPOCH};

/// The pipeline queue whose messages a ceiling queue carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Features,
    Truth,
    Prediction,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Features, Kind::Truth, Kind::Prediction];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Features => "features",
            Kind::Truth => "y_true",
            Kind::Prediction => "y_pred",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One message to publish: its body and its `message_id`.
pub struct Message {
    pub id: String,
    pub body: Vec<u8>,
}

/// `count` messages of `kind`, made before the clock starts (encoding is the services'
/// work, not the client's).
pub fn messages(kind: Kind, count: u64) -> Vec<Message> {
    let samples = diabetes();
    let model = LinearModel::default_ols().expect("the built-in model");
    let now_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    (0..count)
        .map(|item| {
            let sample = &samples[item as usize % samples.len()];
            let uuid = uuid::Uuid::now_v7();
            let id = MessageId::from(uuid);
            let published_us = Some(now_us + item);
            let body = match kind {
                Kind::Features => FeaturesMessage {
                    id: id.clone(),
                    features: sample.features,
                    published_us,
                    item: Some(item),
                }
                .encode(),
                Kind::Truth => ValueMessage {
                    id: id.clone(),
                    value: sample.target,
                    published_us,
                }
                .encode(),
                Kind::Prediction => ValueMessage {
                    id: id.clone(),
                    value: model.predict(&sample.features),
                    published_us,
                }
                .encode(),
            }
            .expect("the data set's messages encode");
            Message {
                id: id.as_str().to_owned(),
                body,
            }
        })
        .collect()
}

/// AMQP's `timestamp` property as nnmon sets it: seconds since the Unix epoch.
pub fn timestamp_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
