//! The wire protocol nnmon speaks, compatible with the Python seed services.
//!
//! # Layout
//! - [`MessageId`]: the ID that ties a sample's features, true value and prediction together.
//!   The seed sends a float Unix timestamp, nnmon sends a UUIDv7 string; both are accepted.
//! - [`FeaturesMessage`] (queue `features`) and [`ValueMessage`] (queues `y_true`, `y_pred`):
//!   `{"id": ID, "body": ...}` JSON envelopes, decoded and validated from raw bytes, encoded
//!   back to bytes. Everything that can be wrong with a message is a [`DecodeError`] with a
//!   short machine-readable [`DecodeError::reason`], used when dead-lettering it.
//! - [`QueueNames`]: the queue names of one pipeline, with its prefix applied;
//!   [`ShardNames`]: the exchanges and queues of a sharded one (`--shards N`), and
//!   [`RowMessage`], a shard's row as it publishes it for the view of all shards.
//! - [`headers`]: names of the AMQP headers nnmon adds on top of the seed's format.
//!
//! Data flows bytes → `decode` → typed message → service logic → `encode` → bytes.

mod id;
mod message;
mod queues;
mod row;
mod shards;

pub use id::MessageId;
pub use message::{
    DecodeError, EncodeError, FEATURE_COUNT, FeaturesMessage, MAX_ID_BYTES, MAX_MESSAGE_BYTES,
    ValueMessage,
};
pub use queues::QueueNames;
pub use row::RowMessage;
pub use shards::{MAX_SHARDS, ShardNames};

/// AMQP header names nnmon sets in addition to the seed's JSON body.
pub mod headers {
    /// Why a message was dead-lettered (a [`crate::DecodeError::reason`]).
    pub const REJECT_REASON: &str = "x-nnmon-reject-reason";
    /// The full human-readable rejection error.
    pub const REJECT_DETAIL: &str = "x-nnmon-reject-detail";
    /// The queue the rejected message was consumed from.
    pub const REJECT_QUEUE: &str = "x-nnmon-reject-queue";
}
