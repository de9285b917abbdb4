//! What a person or a scraper can ask a running nnmon service: Prometheus metrics and
//! whether it is healthy, over HTTP.
//!
//! # Layout
//! - [`Metrics`]: every metric family nnmon exports, registered once in a
//!   `prometheus-client` registry. Services update them with atomic operations whether or
//!   not anyone scrapes; labels are low-cardinality (queues, sides, reasons, features),
//!   never an ID.
//! - [`Health`]: whether the service is connected to the broker and consuming (or
//!   publishing), set by the service as it connects and loses the broker.
//! - [`serve`]: binds `--metrics-addr` and answers `GET /metrics` (OpenMetrics text) and
//!   `GET /healthz` (200 when healthy, 503 otherwise) until shutdown.
//! - [`LimitedListener`]: a TCP listener serving at most [`MAX_CONNECTIONS`] connections
//!   at once, so that idle clients cannot exhaust a service's file descriptors (used by
//!   every nnmon HTTP endpoint).
//!
//! Data flows service → `Metrics` (atomics) → `GET /metrics` → encoded text.

mod health;
mod listener;
mod metrics;
mod server;

pub use health::Health;
pub use listener::{LimitedListener, MAX_CONNECTIONS};
pub use metrics::{
    DeadLetterLabels, FeatureLabels, Metrics, OrphanLabels, QueueLabels, Service, SideLabels,
};
pub use prometheus_client::metrics::counter::Counter;
pub use server::{ServeError, serve};
