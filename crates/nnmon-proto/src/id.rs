use serde::de::{self, Deserializer, Visitor};
use serde::{Serialize, Serializer};
use std::fmt;

/// The ID of one item flowing through the pipeline.
///
/// Kept in the JSON type it arrived in, so that a service echoing it back (the model copying
/// a features ID onto its prediction) speaks to a seed consumer in the same type it sent.
/// Identity (equality, hashing, order) is the text alone: an ID read back from a CSV file,
/// where the JSON type is gone, is the same ID as the one that arrived on the wire.
#[derive(Clone, Debug)]
pub enum MessageId {
    /// A string ID, such as nnmon's UUIDv7 or a seed copy's UUID.
    Text(Box<str>),
    /// A numeric ID, such as the seed's float Unix timestamp, kept as its JSON text so that
    /// it round-trips exactly and hashes consistently.
    Number(Box<str>),
}

impl MessageId {
    /// The ID as text: what goes into the CSV and the AMQP `message_id` property.
    pub fn as_str(&self) -> &str {
        match self {
            MessageId::Text(s) | MessageId::Number(s) => s,
        }
    }

    /// When the item was created, in milliseconds since the Unix epoch, if the ID says: a
    /// UUIDv7 (nnmon's own IDs) carries it in its first 48 bits. Other IDs carry no time.
    pub fn timestamp_ms(&self) -> Option<u64> {
        let MessageId::Text(text) = self else {
            return None;
        };
        // Cheap refusal before parsing: only a hyphenated or simple UUID can qualify.
        if text.len() != 36 && text.len() != 32 {
            return None;
        }
        let uuid = uuid::Uuid::try_parse(text).ok()?;
        if uuid.get_version() != Some(uuid::Version::SortRand) {
            return None;
        }
        let (seconds, nanos) = uuid.get_timestamp()?.to_unix();
        Some(seconds * 1000 + u64::from(nanos) / 1_000_000)
    }
}

impl PartialEq for MessageId {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for MessageId {}

impl std::hash::Hash for MessageId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl From<uuid::Uuid> for MessageId {
    fn from(id: uuid::Uuid) -> Self {
        MessageId::Text(id.hyphenated().to_string().into_boxed_str())
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            MessageId::Text(s) => serializer.serialize_str(s),
            MessageId::Number(s) => {
                // Stored text came from a JSON number, so it parses back; re-emit it as a number.
                let number: serde_json::Number = s.parse().map_err(serde::ser::Error::custom)?;
                number.serialize(serializer)
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(IdVisitor)
    }
}

struct IdVisitor;

impl IdVisitor {
    fn number<E: de::Error>(n: serde_json::Number) -> Result<MessageId, E> {
        Ok(MessageId::Number(n.to_string().into_boxed_str()))
    }
}

impl Visitor<'_> for IdVisitor {
    type Value = MessageId;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number as the message ID")
    }

    // Emptiness is checked by the message decoder, which reports it as its own reason.
    fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageId, E> {
        Ok(MessageId::Text(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageId, E> {
        Self::number(v.into())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageId, E> {
        Self::number(v.into())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<MessageId, E> {
        serde_json::Number::from_f64(v)
            .ok_or_else(|| E::custom("the message ID is not a finite number"))
            .and_then(Self::number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuid_v7_ids_carry_a_time() {
        let id = MessageId::from(uuid::Uuid::now_v7());
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let stamped = id.timestamp_ms().expect("a UUIDv7 carries its time");
        assert!(now_ms.abs_diff(stamped) < 5_000, "{stamped} vs {now_ms}");
        for timeless in [
            MessageId::Text("9b2e4b0c-3f1a-4c7e-8a3b-2d1f0e9c8b7a".into()), // v4
            MessageId::Text("order-17".into()),
            MessageId::Number("1718000000.25".into()),
        ] {
            assert_eq!(timeless.timestamp_ms(), None, "{timeless}");
        }
    }
}
