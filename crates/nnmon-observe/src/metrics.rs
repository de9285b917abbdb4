use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A queue, without its prefix's uniqueness mattering: one label value per pipeline queue.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeadLetterLabels {
    pub queue: String,
    /// A `DecodeError::reason`: a handful of fixed values.
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrphanLabels {
    /// `y_true` or `y_pred`.
    pub side: String,
    /// `expired`, `capacity` or `late_partner`.
    pub cause: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SideLabels {
    pub side: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FeatureLabels {
    /// One of the data set's ten feature names.
    pub feature: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Which service is exporting: each registers only the metrics it updates, so that no
/// scrape shows, say, a window MAE of 0 from a service that computes none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Features,
    Model,
    Metric,
    Plot,
}

/// Every metric nnmon exports; a service's registry holds those it updates (see
/// [`Service`]). Gauges without a value yet (a window with no rows) read NaN.
pub struct Metrics {
    registry: Registry,
    pub messages_consumed: Family<QueueLabels, Counter>,
    pub messages_published: Family<QueueLabels, Counter>,
    pub dead_lettered: Family<DeadLetterLabels, Counter>,
    pub broker_reconnects: Counter,
    pub rows: Counter,
    pub duplicates: Counter,
    pub orphans: Family<OrphanLabels, Counter>,
    pub join_pending: Family<SideLabels, Gauge>,
    pub row_latency_seconds: Histogram,
    pub absolute_error: Histogram,
    pub window_mae: FloatGauge,
    pub window_rmse: FloatGauge,
    pub window_bias: FloatGauge,
    pub window_r2: FloatGauge,
    pub feature_drift_score: Family<FeatureLabels, FloatGauge>,
    pub feature_drift_alarm: Family<FeatureLabels, Gauge>,
    pub error_drift_alarm: Gauge,
}

/// The registry a service exports, and one for the metrics it does not update.
#[derive(Default)]
struct Registries {
    exported: Registry,
    unexported: Registry,
}

impl Registries {
    fn to(&mut self, exported: bool) -> &mut Registry {
        if exported {
            &mut self.exported
        } else {
            &mut self.unexported
        }
    }
}

impl Metrics {
    pub fn new(service: Service) -> Self {
        let broker = service != Service::Plot;
        let joins = service == Service::Metric;
        let drifts = service == Service::Model;
        let mut registries = Registries::default();
        // Counters are registered without `_total`: the encoder appends it.
        let messages_consumed = Family::default();
        registries.to(broker).register(
            "nnmon_messages_consumed",
            "Messages taken from a queue and settled (acked)",
            messages_consumed.clone(),
        );
        let messages_published = Family::default();
        registries.to(broker).register(
            "nnmon_messages_published",
            "Messages the broker confirmed, by destination queue",
            messages_published.clone(),
        );
        let dead_lettered = Family::default();
        registries.to(broker).register(
            "nnmon_dead_lettered",
            "Poison messages copied to the dead-letter queue, by source queue and reason",
            dead_lettered.clone(),
        );
        let broker_reconnects = Counter::default();
        registries.to(broker).register(
            "nnmon_broker_reconnects",
            "Times the broker connection was lost and rebuilt",
            broker_reconnects.clone(),
        );
        let rows = Counter::default();
        registries.to(joins).register(
            "nnmon_rows",
            "Rows written to metric_log.csv since start",
            rows.clone(),
        );
        let duplicates = Counter::default();
        registries.to(joins).register(
            "nnmon_duplicates",
            "Redelivered or republished halves dropped by the join",
            duplicates.clone(),
        );
        let orphans = Family::default();
        registries.to(joins).register(
            "nnmon_orphans",
            "Halves written to orphans.csv, by side and cause",
            orphans.clone(),
        );
        let join_pending = Family::default();
        registries.to(joins).register(
            "nnmon_join_pending",
            "Halves waiting for their partner, by side",
            join_pending.clone(),
        );
        // 1 ms to about 33 s, doubling.
        let row_latency_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registries.to(joins).register(
            "nnmon_row_latency_seconds",
            "Time from features publishing an item to its row being written",
            row_latency_seconds.clone(),
        );
        // 0.25 to about 8 000 (the target's units), doubling.
        let absolute_error = Histogram::new(exponential_buckets(0.25, 2.0, 16));
        registries.to(joins).register(
            "nnmon_absolute_error",
            "Absolute error |y_true - y_pred| of each row",
            absolute_error.clone(),
        );
        let mut window = |name: &str, help: &str| {
            let gauge = FloatGauge::default();
            gauge.set(f64::NAN);
            registries.to(joins).register(name, help, gauge.clone());
            gauge
        };
        let window_mae = window(
            "nnmon_window_mae",
            "Mean absolute error over the last --window rows",
        );
        let window_rmse = window(
            "nnmon_window_rmse",
            "Root mean squared error over the last --window rows",
        );
        let window_bias = window(
            "nnmon_window_bias",
            "Mean of y_pred - y_true over the last --window rows",
        );
        let window_r2 = window(
            "nnmon_window_r2",
            "Coefficient of determination over the last --window rows",
        );
        let feature_drift_score = Family::default();
        registries.to(drifts).register(
            "nnmon_feature_drift_score",
            "Two-sample Kolmogorov-Smirnov statistic of a feature's recent window against the training data",
            feature_drift_score.clone(),
        );
        let feature_drift_alarm = Family::default();
        registries.to(drifts).register(
            "nnmon_feature_drift_alarm",
            "1 while a feature's input drift alarm is raised",
            feature_drift_alarm.clone(),
        );
        let error_drift_alarm = Gauge::default();
        registries.to(joins).register(
            "nnmon_error_drift_alarm",
            "1 while the absolute error's change detector is raised",
            error_drift_alarm.clone(),
        );
        Self {
            registry: registries.exported,
            messages_consumed,
            messages_published,
            dead_lettered,
            broker_reconnects,
            rows,
            duplicates,
            orphans,
            join_pending,
            row_latency_seconds,
            absolute_error,
            window_mae,
            window_rmse,
            window_bias,
            window_r2,
            feature_drift_score,
            feature_drift_alarm,
            error_drift_alarm,
        }
    }

    /// The metrics in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    /// The counter of messages consumed from `queue`.
    pub fn consumed(&self, queue: &str) -> Counter {
        self.messages_consumed
            .get_or_create(&QueueLabels {
                queue: queue.to_owned(),
            })
            .clone()
    }

    /// The counter of messages confirmed into `queue`.
    pub fn published(&self, queue: &str) -> Counter {
        self.messages_published
            .get_or_create(&QueueLabels {
                queue: queue.to_owned(),
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_documented_ones() {
        let metrics = Metrics::new(Service::Metric);
        metrics.consumed("features").inc();
        metrics.rows.inc_by(3);
        metrics.absolute_error.observe(12.5);
        metrics.window_mae.set(43.2);
        metrics
            .orphans
            .get_or_create(&OrphanLabels {
                side: "y_true".into(),
                cause: "expired".into(),
            })
            .inc();
        let text = metrics.encode();
        for line in [
            "nnmon_messages_consumed_total{queue=\"features\"} 1",
            "nnmon_rows_total 3",
            "nnmon_window_mae 43.2",
            "nnmon_absolute_error_count 1",
            "nnmon_orphans_total{side=\"y_true\",cause=\"expired\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
    }

    #[test]
    fn each_service_exports_only_what_it_updates() {
        let features = Metrics::new(Service::Features);
        features.published("features").inc();
        let features = features.encode();
        assert!(
            features.contains("nnmon_broker_reconnects_total 0"),
            "{features}"
        );
        assert!(
            features.contains("nnmon_messages_published_total"),
            "{features}"
        );
        assert!(!features.contains("nnmon_window_mae"), "{features}");
        let metric = Metrics::new(Service::Metric).encode();
        assert!(
            metric.contains("nnmon_window_mae NaN"),
            "no rows yet: {metric}"
        );
        assert!(!metric.contains("nnmon_feature_drift"), "{metric}");
    }
}
