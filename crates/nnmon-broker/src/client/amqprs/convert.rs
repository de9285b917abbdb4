//! nnmon's [`Properties`] and [`Headers`] to amqprs's types and back.

use crate::message::{HeaderValue, Headers, Properties};
use amqprs::{BasicProperties, FieldArray, FieldTable, FieldValue};

pub(super) fn properties_of(p: &BasicProperties) -> Properties {
    Properties {
        content_type: p.content_type().cloned(),
        content_encoding: p.content_encoding().cloned(),
        headers: p.headers().map(headers_of),
        delivery_mode: p.delivery_mode(),
        priority: p.priority(),
        correlation_id: p.correlation_id().cloned(),
        reply_to: p.reply_to().cloned(),
        expiration: p.expiration().cloned(),
        message_id: p.message_id().cloned(),
        timestamp: p.timestamp(),
        kind: p.message_type().cloned(),
        user_id: p.user_id().cloned(),
        app_id: p.app_id().cloned(),
    }
}

pub(super) fn basic_properties(p: &Properties) -> BasicProperties {
    let mut b = BasicProperties::default();
    if let Some(v) = &p.content_type {
        b.with_content_type(v);
    }
    if let Some(v) = &p.content_encoding {
        b.with_content_encoding(v);
    }
    if let Some(v) = &p.headers {
        b.with_headers(table(v));
    }
    if let Some(v) = p.delivery_mode {
        b.with_delivery_mode(v);
    }
    if let Some(v) = p.priority {
        b.with_priority(v);
    }
    if let Some(v) = &p.correlation_id {
        b.with_correlation_id(v);
    }
    if let Some(v) = &p.reply_to {
        b.with_reply_to(v);
    }
    if let Some(v) = &p.expiration {
        b.with_expiration(v);
    }
    if let Some(v) = &p.message_id {
        b.with_message_id(v);
    }
    if let Some(v) = p.timestamp {
        b.with_timestamp(v);
    }
    if let Some(v) = &p.kind {
        b.with_message_type(v);
    }
    if let Some(v) = &p.user_id {
        b.with_user_id(v);
    }
    if let Some(v) = &p.app_id {
        b.with_app_id(v);
    }
    b
}

fn headers_of(table: &FieldTable) -> Headers {
    let entries: &std::collections::HashMap<_, _> = table.as_ref();
    entries
        .iter()
        .map(|(name, value)| (name.to_string(), value_of(value)))
        .collect()
}

fn value_of(value: &FieldValue) -> HeaderValue {
    match value {
        FieldValue::t(v) => HeaderValue::Bool(*v),
        FieldValue::b(v) => HeaderValue::Int((*v).into()),
        FieldValue::B(v) => HeaderValue::Int((*v).into()),
        FieldValue::s(v) => HeaderValue::Int((*v).into()),
        FieldValue::u(v) => HeaderValue::Int((*v).into()),
        FieldValue::I(v) => HeaderValue::Int((*v).into()),
        FieldValue::i(v) => HeaderValue::Int((*v).into()),
        FieldValue::l(v) => HeaderValue::Int(*v),
        FieldValue::f(v) => HeaderValue::Float((*v).into()),
        FieldValue::d(v) => HeaderValue::Float(*v),
        FieldValue::S(v) => HeaderValue::Text(v.to_string()),
        FieldValue::x(v) => HeaderValue::Bytes(Vec::from(v.clone())),
        FieldValue::T(v) => HeaderValue::Timestamp(*v),
        FieldValue::A(v) => HeaderValue::Array(Vec::from(v.clone()).iter().map(value_of).collect()),
        FieldValue::F(v) => HeaderValue::Table(headers_of(v)),
        FieldValue::D(_) | FieldValue::V => HeaderValue::Void,
    }
}

/// `headers` as a field table. A name over 255 bytes cannot be sent and is left out.
pub(super) fn table(headers: &Headers) -> FieldTable {
    let mut table = FieldTable::new();
    for (name, value) in headers {
        if let Ok(name) = name.as_str().try_into() {
            table.insert(name, field_value(value));
        }
    }
    table
}

fn field_value(value: &HeaderValue) -> FieldValue {
    match value {
        HeaderValue::Bool(v) => FieldValue::t(*v),
        HeaderValue::Int(v) => FieldValue::l(*v),
        HeaderValue::Float(v) => FieldValue::d(*v),
        HeaderValue::Text(v) => v
            .clone()
            .try_into()
            .map(FieldValue::S)
            .unwrap_or(FieldValue::V),
        HeaderValue::Bytes(v) => v
            .clone()
            .try_into()
            .map(FieldValue::x)
            .unwrap_or(FieldValue::V),
        HeaderValue::Timestamp(v) => FieldValue::T(*v),
        HeaderValue::Array(v) => {
            FieldArray::try_from(v.iter().map(field_value).collect::<Vec<_>>())
                .map(FieldValue::A)
                .unwrap_or(FieldValue::V)
        }
        HeaderValue::Table(v) => FieldValue::F(table(v)),
        HeaderValue::Void => FieldValue::V,
    }
}

/// `properties` sent and read back (for the client-neutral test in `client`).
#[cfg(test)]
pub(crate) fn round_trip(properties: &Properties) -> Properties {
    properties_of(&basic_properties(properties))
}
