use crate::MessageId;
use serde::{Deserialize, Serialize};

/// Number of features in one diabetes sample.
pub const FEATURE_COUNT: usize = 10;

/// Longest ID accepted, in bytes: an AMQP `message_id` (a short string) holds 255.
pub const MAX_ID_BYTES: usize = 255;

/// Largest message body accepted. A real message is under 400 bytes; anything near this size
/// is garbage or an attack, and is dead-lettered before parsing.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// One sample's feature vector, as sent on the `features` queue.
#[derive(Clone, Debug, PartialEq)]
pub struct FeaturesMessage {
    pub id: MessageId,
    pub features: [f64; FEATURE_COUNT],
    /// When `features` first published the item (µs since the Unix epoch), if the producer
    /// says: nnmon's extra field, which the seed's services ignore and never send.
    pub published_us: Option<u64>,
    /// The item's number in its producer's stream (0-based, in sending order; a resent
    /// item keeps it), if the producer says: nnmon's extra field, for a model swap at an
    /// exact item and alarms that name their item.
    pub item: Option<u64>,
}

/// One scalar, as sent on the `y_true` and `y_pred` queues.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueMessage {
    pub id: MessageId,
    pub value: f64,
    /// The item's first publish time, carried through from `features` (see
    /// [`FeaturesMessage::published_us`]).
    pub published_us: Option<u64>,
}

/// Why a message body could not be accepted.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("not JSON: {0}")]
    NotJson(serde_json::Error),
    #[error("wrong shape: {0}")]
    WrongShape(serde_json::Error),
    #[error("wrong shape: the message is not a JSON object")]
    NotAnObject,
    #[error("the message ID is empty")]
    EmptyId,
    #[error("the message ID is {0} bytes long; at most {MAX_ID_BYTES} fit an AMQP message_id")]
    IdTooLong(usize),
    #[error("the message ID contains a control character")]
    ControlInId,
    #[error("expected {FEATURE_COUNT} features, got {0}")]
    FeatureCount(usize),
    #[error("non-finite number in the body")]
    NonFinite,
}

impl DecodeError {
    /// A short stable label for metrics and the dead-letter reason header.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::WrongShape(_) | DecodeError::NotAnObject => "wrong_shape",
            DecodeError::EmptyId => "empty_id",
            DecodeError::IdTooLong(_) => "id_too_long",
            DecodeError::ControlInId => "bad_id",
            DecodeError::FeatureCount(_) => "feature_count",
            DecodeError::NonFinite => "non_finite",
        }
    }
}

/// Why a message could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// JSON has no NaN or infinity; the seed's Python would send `NaN`, which no strict
    /// parser accepts, so nnmon refuses to produce it.
    #[error("refusing to encode a non-finite number for message {0}")]
    NonFinite(MessageId),
}

#[derive(Deserialize)]
struct Envelope<B> {
    id: MessageId,
    body: B,
    #[serde(default)]
    published_us: Option<u64>,
    /// Read only for `features` messages ([`FeaturesMessage::item`]); ignored elsewhere.
    #[serde(default)]
    item: Option<u64>,
}

#[derive(Serialize)]
struct EnvelopeRef<'a, B: ?Sized> {
    id: &'a MessageId,
    body: &'a B,
    #[serde(skip_serializing_if = "Option::is_none")]
    published_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<u64>,
}

fn parse<'a, B: Deserialize<'a>>(bytes: &'a [u8]) -> Result<Envelope<B>, DecodeError> {
    if bytes.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            max: MAX_MESSAGE_BYTES,
        });
    }
    let envelope: Envelope<B> = serde_json::from_slice(bytes).map_err(|e| {
        if e.is_data() {
            DecodeError::WrongShape(e)
        } else {
            DecodeError::NotJson(e)
        }
    })?;
    // serde would also read a struct from a JSON array (`[id, body]`); the wire format is an
    // object, and accepting both would make two spellings of one message.
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(DecodeError::NotAnObject);
    }
    let id = envelope.id.as_str();
    if id.trim().is_empty() {
        return Err(DecodeError::EmptyId);
    }
    if id.len() > MAX_ID_BYTES {
        return Err(DecodeError::IdTooLong(id.len()));
    }
    // A line break would split the ID's CSV line; no real ID has control characters.
    if id.chars().any(char::is_control) {
        return Err(DecodeError::ControlInId);
    }
    Ok(envelope)
}

fn to_json<B: Serialize + ?Sized>(
    id: &MessageId,
    body: &B,
    published_us: Option<u64>,
    item: Option<u64>,
) -> Vec<u8> {
    // Serialising plain floats and strings into a Vec cannot fail.
    serde_json::to_vec(&EnvelopeRef {
        id,
        body,
        published_us,
        item,
    })
    .unwrap_or_default()
}

impl FeaturesMessage {
    /// Parses and validates a `features` message body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Envelope {
            id,
            body,
            published_us,
            item,
        } = parse::<Vec<f64>>(bytes)?;
        let features: [f64; FEATURE_COUNT] = body
            .as_slice()
            .try_into()
            .map_err(|_| DecodeError::FeatureCount(body.len()))?;
        if !features.iter().all(|x| x.is_finite()) {
            return Err(DecodeError::NonFinite);
        }
        Ok(Self {
            id,
            features,
            published_us,
            item,
        })
    }

    /// The JSON body the seed's model service expects.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if !self.features.iter().all(|x| x.is_finite()) {
            return Err(EncodeError::NonFinite(self.id.clone()));
        }
        Ok(to_json(
            &self.id,
            &self.features[..],
            self.published_us,
            self.item,
        ))
    }
}

impl ValueMessage {
    /// Parses and validates a `y_true` or `y_pred` message body.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let Envelope {
            id,
            body,
            published_us,
            ..
        } = parse::<f64>(bytes)?;
        if !body.is_finite() {
            return Err(DecodeError::NonFinite);
        }
        Ok(Self {
            id,
            value: body,
            published_us,
        })
    }

    /// The JSON body the seed's metric service expects.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        if !self.value.is_finite() {
            return Err(EncodeError::NonFinite(self.id.clone()));
        }
        Ok(to_json(&self.id, &self.value, self.published_us, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn text(id: &str) -> MessageId {
        MessageId::Text(id.into())
    }

    #[test]
    fn decodes_the_seeds_float_timestamp_id() {
        let body = br#"{"id": 1700000000.123456, "body": 151.0}"#;
        let msg = ValueMessage::decode(body).expect("valid");
        assert!(matches!(&msg.id, MessageId::Number(n) if &**n == "1700000000.123456"));
        assert_eq!(msg.value, 151.0);
        // Echoed back as a number, as the seed's consumers compare it.
        let echoed = String::from_utf8(msg.encode().expect("finite")).expect("utf8");
        assert_eq!(echoed, r#"{"id":1700000000.123456,"body":151.0}"#);
    }

    #[test]
    fn decodes_string_ids_and_ignores_unknown_fields() {
        let body = br#"{"id": "abc", "body": [1,2,3,4,5,6,7,8,9,10], "extra": {"x": 1}}"#;
        let msg = FeaturesMessage::decode(body).expect("valid");
        assert_eq!(msg.id, text("abc"));
        assert_eq!(msg.features[9], 10.0);
    }

    #[test]
    fn the_publish_time_is_an_optional_extra_field() {
        let msg =
            ValueMessage::decode(br#"{"id": "a", "body": 2.5, "published_us": 1700000000000000}"#)
                .expect("valid");
        assert_eq!(msg.published_us, Some(1_700_000_000_000_000));
        assert_eq!(
            msg.encode().expect("finite"),
            br#"{"id":"a","body":2.5,"published_us":1700000000000000}"#
        );
        let reason = ValueMessage::decode(br#"{"id": "a", "body": 2.5, "published_us": -1}"#)
            .expect_err("negative")
            .reason();
        assert_eq!(reason, "wrong_shape");
    }

    #[test]
    fn the_item_number_is_an_optional_extra_field_of_features() {
        let body = br#"{"id": "a", "body": [1,2,3,4,5,6,7,8,9,10], "item": 3200}"#;
        let msg = FeaturesMessage::decode(body).expect("valid");
        assert_eq!(msg.item, Some(3200));
        let encoded = String::from_utf8(msg.encode().expect("finite")).expect("utf8");
        assert!(encoded.ends_with(r#","item":3200}"#), "{encoded}");
        let seed = FeaturesMessage::decode(br#"{"id": "a", "body": [1,2,3,4,5,6,7,8,9,10]}"#);
        assert_eq!(seed.expect("valid").item, None);
        let reason =
            FeaturesMessage::decode(br#"{"id": "a", "body": [1,2,3,4,5,6,7,8,9,10], "item": -1}"#)
                .expect_err("negative")
                .reason();
        assert_eq!(reason, "wrong_shape");
    }

    #[test]
    fn integer_ids_stay_integers() {
        let msg = ValueMessage::decode(br#"{"id": 42, "body": 1}"#).expect("valid");
        assert_eq!(msg.id.as_str(), "42");
        assert_eq!(msg.encode().expect("finite"), br#"{"id":42,"body":1.0}"#);
    }

    fn reason_of(result: Result<impl std::fmt::Debug, DecodeError>) -> &'static str {
        result.expect_err("must be rejected").reason()
    }

    #[test]
    fn rejects_bad_input_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"hello", "not_json"),
            (b"", "not_json"),
            (br#"{"id": "a", "body": 1.5"#, "not_json"),
            (br#"{"id": "a", "body": NaN}"#, "not_json"),
            // serde_json classes an out-of-range number as a syntax error.
            (br#"{"id": "a", "body": 1e999}"#, "not_json"),
            (br#"{"body": 1.0}"#, "wrong_shape"),
            (br#"{"id": null, "body": 1.0}"#, "wrong_shape"),
            (br#"{"id": true, "body": 1.0}"#, "wrong_shape"),
            (br#"{"id": "a"}"#, "wrong_shape"),
            (br#"{"id": "a", "body": "1.0"}"#, "wrong_shape"),
            (br#"[1, 2]"#, "wrong_shape"),
            (br#"{"id": "", "body": 1.0}"#, "empty_id"),
            (br#"{"id": "   ", "body": 1.0}"#, "empty_id"),
            (br#"{"id": "a\nb", "body": 1.0}"#, "bad_id"),
            (br#"{"id": "a\u0000", "body": 1.0}"#, "bad_id"),
        ];
        for (body, reason) in cases {
            assert_eq!(
                reason_of(ValueMessage::decode(body)),
                *reason,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn rejects_ids_too_long_for_amqp() {
        let long = format!(
            r#"{{"id": "{}", "body": 1.0}}"#,
            "a".repeat(MAX_ID_BYTES + 1)
        );
        assert_eq!(
            reason_of(ValueMessage::decode(long.as_bytes())),
            "id_too_long"
        );
        let fits = format!(r#"{{"id": "{}", "body": 1.0}}"#, "a".repeat(MAX_ID_BYTES));
        assert!(ValueMessage::decode(fits.as_bytes()).is_ok());
    }

    #[test]
    fn rejects_wrong_feature_counts_and_huge_bodies() {
        assert_eq!(
            reason_of(FeaturesMessage::decode(br#"{"id":"a","body":[1,2,3]}"#)),
            "feature_count"
        );
        assert_eq!(
            reason_of(FeaturesMessage::decode(br#"{"id":"a","body":[]}"#)),
            "feature_count"
        );
        assert_eq!(
            reason_of(FeaturesMessage::decode(br#"{"id":"a","body":1.0}"#)),
            "wrong_shape"
        );
        let huge = vec![b' '; MAX_MESSAGE_BYTES + 1];
        assert_eq!(reason_of(FeaturesMessage::decode(&huge)), "too_large");
    }

    #[test]
    fn refuses_to_encode_non_finite_values() {
        let msg = ValueMessage {
            id: text("a"),
            value: f64::INFINITY,
            published_us: None,
        };
        assert!(msg.encode().is_err());
        let msg = FeaturesMessage {
            id: text("a"),
            features: [f64::NAN; FEATURE_COUNT],
            published_us: None,
            item: None,
        };
        assert!(msg.encode().is_err());
    }

    fn any_id() -> impl Strategy<Value = MessageId> {
        prop_oneof![
            "[ -~]{0,100}[!-~][ -~]{0,100}".prop_map(|s| MessageId::Text(s.into())),
            any::<u64>().prop_map(|n| MessageId::Number(n.to_string().into())),
            (-1e300f64..1e300).prop_map(|x| {
                MessageId::Number(
                    serde_json::Number::from_f64(x)
                        .map(|n| n.to_string())
                        .unwrap_or_default()
                        .into(),
                )
            }),
        ]
    }

    proptest! {
        #[test]
        fn features_round_trip_exactly(id in any_id(), features in proptest::array::uniform10(-1e300f64..1e300), published_us in any::<Option<u64>>(), item in any::<Option<u64>>()) {
            let msg = FeaturesMessage { id, features, published_us, item };
            let back = FeaturesMessage::decode(&msg.encode().expect("finite")).expect("valid");
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn values_round_trip_exactly(id in any_id(), value in any::<f64>().prop_filter("finite", |x| x.is_finite()), published_us in any::<Option<u64>>()) {
            let msg = ValueMessage { id, value, published_us };
            let back = ValueMessage::decode(&msg.encode().expect("finite")).expect("valid");
            prop_assert_eq!(back, msg);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = FeaturesMessage::decode(&bytes);
            let _ = ValueMessage::decode(&bytes);
        }
    }
}
