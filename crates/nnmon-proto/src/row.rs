use crate::{DecodeError, MAX_ID_BYTES, MAX_MESSAGE_BYTES};
use serde::{Deserialize, Serialize};

/// One row of a shard's `metric_log.csv`, as the shard publishes it to the `<prefix>rows`
/// exchange (see [`ShardNames`](crate::ShardNames)) for the view of all shards.
///
/// `{"shard": 1, "offset": 4096, "id": ID, "y_true": 151, "y_pred": 140.5, "latency_us": 6775}`; the
/// absolute error is not sent, it is `|y_true - y_pred|` as in the log. The ID is the
/// log's text: a row is one item, whatever form the producer gave its ID.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowMessage {
    /// The shard whose log holds the row.
    pub shard: u16,
    /// Where the row starts in its shard's `metric_log.csv`, in bytes: larger for every
    /// later row of that log, so a copy is told apart from a new row exactly (a row at or
    /// below the highest offset already collected from its shard is a copy).
    pub offset: u64,
    pub id: String,
    pub y_true: f64,
    pub y_pred: f64,
    /// Publish to row, when the producer said when it published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
}

impl RowMessage {
    pub fn absolute_error(&self) -> f64 {
        (self.y_true - self.y_pred).abs()
    }

    /// The JSON body. A row holds finite numbers (the log is written from decoded,
    /// finite messages), so this cannot fail.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and validates a body: an ID that fits an AMQP `message_id`, finite values.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_MESSAGE_BYTES {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max: MAX_MESSAGE_BYTES,
            });
        }
        let row: Self = serde_json::from_slice(bytes).map_err(DecodeError::WrongShape)?;
        if row.id.is_empty() {
            return Err(DecodeError::EmptyId);
        }
        if row.id.len() > MAX_ID_BYTES {
            return Err(DecodeError::IdTooLong(row.id.len()));
        }
        if row.id.chars().any(char::is_control) {
            return Err(DecodeError::ControlInId);
        }
        if !(row.y_true.is_finite() && row.y_pred.is_finite()) {
            return Err(DecodeError::NonFinite);
        }
        Ok(row)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_what_a_shard_sends_and_refuses_the_rest() {
        let row =
            RowMessage::decode(br#"{"shard":1,"offset":9,"id":"a,b","y_true":151,"y_pred":140.5}"#)
                .expect("valid");
        assert_eq!(
            (row.shard, row.offset, row.id.as_str(), row.latency_us),
            (1, 9, "a,b", None)
        );
        assert_eq!(row.absolute_error(), 10.5);
        for (body, reason) in [
            (
                &br#"{"shard":1,"offset":9,"id":"","y_true":1,"y_pred":1}"#[..],
                "empty_id",
            ),
            (
                br#"{"shard":1,"offset":9,"id":"x","y_true":1}"#,
                "wrong_shape",
            ),
            (
                br#"{"shard":1,"id":"x","y_true":1,"y_pred":1}"#,
                "wrong_shape",
            ),
            (
                br#"{"shard":-1,"offset":9,"id":"x","y_true":1,"y_pred":1}"#,
                "wrong_shape",
            ),
            (
                br#"{"shard":1,"offset":9,"id":"x\n","y_true":1,"y_pred":1}"#,
                "bad_id",
            ),
        ] {
            let error = RowMessage::decode(body).expect_err("refused");
            assert_eq!(error.reason(), reason, "{}", String::from_utf8_lossy(body));
        }
    }

    proptest! {
        #[test]
        fn rows_round_trip(
            shard in 0..64u16,
            offset in 0..u64::MAX,
            id in "[ -~]{1,60}",
            y_true in -1e6..1e6f64,
            y_pred in -1e6..1e6f64,
            latency_us in proptest::option::of(0..u64::MAX),
        ) {
            let row = RowMessage { shard, offset, id, y_true, y_pred, latency_us };
            prop_assert_eq!(RowMessage::decode(&row.encode()).expect("decodes"), row);
        }
    }
}
