//! The statistics nnmon keeps about the model it watches: regression errors and drift.
//!
//! Pure computation: no I/O and no clock, so everything here is deterministic under test.
//!
//! # Layout
//! - [`ErrorStats`]: `(y_true, y_pred)` rows in, [`RegressionStats`] out — exact over the
//!   last `window` rows (a ring buffer), and since start from running sums and a
//!   [`QuantileSketch`], so memory does not grow with the rows. Totals merge.
//! - [`QuantileSketch`]: HdrHistogram over non-negative values (absolute errors,
//!   latencies): quantiles within 0.1 % relative error, mergeable, and binned into a
//!   [`Histogram`] for the chart by iterating its buckets.
//! - [`Histogram`]: equal-width bins from 0 with round widths ([`nice_step`]).
//! - [`FeatureDrift`]: input drift, a two-sample Kolmogorov–Smirnov test ([`ks`]) of each
//!   feature of the recent items against the training reference, with hysteresis.
//! - [`ErrorDrift`]: performance drift, a CUSUM on the standardised absolute error against
//!   a reference learnt in a warm-up (or given), with hysteresis.
//! - [`status`]: the JSON status files the services write for `plot` — the
//!   [`FeatureDriftReport`] and the [`MetricStatus`] — and the [`DriftFlip`] and
//!   [`FeatureScore`] the detectors answer.
//!
//! Data flows rows → `ErrorStats::push` → `window()`/`total()`/`histogram()`;
//! features → `FeatureDrift::push` → flips and `scores()`; absolute errors →
//! `ErrorDrift::push` → flips, `alarm()` and `score()`.
//!
//! The detectors' defaults are calibrated on the diabetes data set and its OLS model by
//! `tests/calibration.rs`, which states its figures.

mod error_drift;
mod feature_drift;
mod histogram;
pub mod ks;
mod regression;
mod sketch;
pub mod status;

pub use error_drift::{ERROR_SUBJECT, ErrorDrift, ErrorDriftConfig, ErrorReference};
pub use feature_drift::{DIABETES_FEATURE_NAMES, FEATURES, FeatureDrift, FeatureDriftConfig};
pub use histogram::{Histogram, nice_step};
pub use regression::{ErrorStats, RegressionStats, nearest_rank};
pub use sketch::QuantileSketch;
pub use status::{
    DriftFlip, ErrorDriftScore, FEATURE_DRIFT_FILE, FeatureDriftReport, FeatureScore,
    METRIC_STATUS_FILE, MetricStatus,
};
