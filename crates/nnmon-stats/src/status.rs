//! The status files the services write beside the metric log and `plot` reads.

use serde::{Deserialize, Serialize};

/// `model` writes [`FeatureDriftReport`] here, in the log folder.
pub const FEATURE_DRIFT_FILE: &str = "feature_drift.json";
/// `metric` writes [`MetricStatus`] here, in the log folder.
pub const METRIC_STATUS_FILE: &str = "metric_status.json";

/// An alarm of a drift detector raised or cleared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftFlip {
    /// The feature's name, or `"absolute_error"` for the error alarm.
    pub subject: String,
    /// `true`: raised; `false`: cleared.
    pub alarm: bool,
    /// The item (1-based, counting every item pushed) at which it happened.
    pub item: u64,
}

/// One feature's drift test at the last evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureScore {
    pub name: String,
    /// The two-sample Kolmogorov–Smirnov statistic (0 = same distribution, 1 = disjoint).
    pub statistic: f64,
    pub p_value: f64,
    pub alarm: bool,
}

/// Input drift as `model` last evaluated it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureDriftReport {
    /// When it was written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// Items seen.
    pub items: u64,
    /// Recent items each test compares with the reference.
    pub window: usize,
    /// Empty until the window has filled once.
    pub features: Vec<FeatureScore>,
}

/// The error detector's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDriftScore {
    pub alarm: bool,
    /// The CUSUM as a fraction of its alarm threshold ([`crate::ErrorDrift::score`]).
    pub score: f64,
}

/// The join's health and the error alarm as `metric` last reported them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricStatus {
    /// When it was written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    pub rows: u64,
    pub duplicates: u64,
    pub orphans: u64,
    pub waiting_truths: u64,
    pub waiting_predictions: u64,
    pub dead_lettered: u64,
    pub error_drift: ErrorDriftScore,
}
