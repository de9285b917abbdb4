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
//!
//! Data flows service → `Metrics` (atomics) → `GET /metrics` → encoded text.

mod health;
mod metrics;
mod server;

pub use health::Health;
pub use metrics::{
    DeadLetterLabels, FeatureLabels, Metrics, OrphanLabels, QueueLabels, Service, SideLabels,
};
pub use prometheus_client::metrics::counter::Counter;
pub use server::{ServeError, serve};
