//! A quantile sketch of non-negative values (absolute errors, latencies) in bounded memory.

use crate::Histogram;

/// Values are recorded in units of 1/`SCALE` (millionths), because HdrHistogram counts
/// integers.
const SCALE: f64 = 1e6;
/// Recorded values are clamped here (about 9e9 in the caller's units): HdrHistogram grows its
/// buckets with the largest value, and a wild error must not make it allocate without bound.
const MAX_SCALED: f64 = (1u64 << 53) as f64;
/// HdrHistogram keeps this many significant decimal digits of every value.
const SIGNIFICANT_DIGITS: u8 = 3;

/// A mergeable quantile sketch over non-negative values, backed by HdrHistogram.
///
/// Memory depends on the range of the values, never on how many were recorded: at most
/// about 350 KiB, and about 150 KiB for values between 1e-6 and 1e3.
///
/// Accuracy: a quantile is within [`QuantileSketch::RELATIVE_ERROR`] of the exact
/// nearest-rank quantile, relatively, plus [`QuantileSketch::ABSOLUTE_ERROR`].
#[derive(Clone, Debug)]
pub struct QuantileSketch {
    histogram: hdrhistogram::Histogram<u64>,
}

impl Default for QuantileSketch {
    fn default() -> Self {
        Self::new()
    }
}

impl QuantileSketch {
    /// Relative error of a quantile: HdrHistogram with 3 significant digits keeps buckets
    /// at most 1/1024 of their value wide, and the sketch answers with a bucket's midpoint.
    pub const RELATIVE_ERROR: f64 = 1e-3;
    /// Absolute error of a quantile, from recording values as whole millionths.
    pub const ABSOLUTE_ERROR: f64 = 1e-6;

    pub fn new() -> Self {
        let histogram = hdrhistogram::Histogram::new(SIGNIFICANT_DIGITS)
            .unwrap_or_else(|_| unreachable!("3 significant digits is a valid precision"));
        Self { histogram }
    }

    /// Records one value. Negative values count as 0 and values above about 9e9 as 9e9;
    /// non-finite values are not recorded (the return value says whether it was).
    pub fn record(&mut self, value: f64) -> bool {
        if !value.is_finite() {
            return false;
        }
        let scaled = (value * SCALE).round().clamp(0.0, MAX_SCALED) as u64;
        // An auto-resizing histogram grows to any value up to i64::MAX / 2, far above the
        // clamp. (`saturating_record` would clamp to the current size instead of growing.)
        self.histogram.record(scaled).is_ok()
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The nearest-rank `q`-quantile (`q` in [0, 1]), or `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.histogram.is_empty() {
            return None;
        }
        // value_at_quantile answers the bucket's highest value; its midpoint halves the error.
        let top = self.histogram.value_at_quantile(q.clamp(0.0, 1.0));
        Some(self.unscale(self.histogram.median_equivalent(top)))
    }

    /// Adds every value recorded in `other`.
    pub fn merge(&mut self, other: &QuantileSketch) {
        // Both sides auto-resize with the same precision, which is all `add` needs.
        if let Err(error) = self.histogram.add(&other.histogram) {
            unreachable!("sketches of equal precision always merge: {error}");
        }
    }

    /// Recorded values binned into [`Histogram::covering`] the largest, from 0.
    pub fn histogram(&self, max_bins: usize) -> Histogram {
        let top = if self.histogram.is_empty() {
            0.0
        } else {
            self.unscale(self.histogram.highest_equivalent(self.histogram.max()))
        };
        let mut histogram = Histogram::covering(top, max_bins);
        for bucket in self.histogram.iter_recorded() {
            let value = self.unscale(self.histogram.median_equivalent(bucket.value_iterated_to()));
            histogram.add_count(value, bucket.count_at_value());
        }
        histogram
    }

    fn unscale(&self, scaled: u64) -> f64 {
        scaled as f64 / SCALE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn nearest_rank(sorted: &[f64], q: f64) -> f64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        sorted[rank - 1]
    }

    #[test]
    fn empty_and_degenerate_values() {
        let mut sketch = QuantileSketch::new();
        assert_eq!(sketch.quantile(0.5), None);
        assert!(!sketch.record(f64::NAN));
        assert!(!sketch.record(f64::INFINITY));
        assert!(sketch.record(-3.0));
        assert!(sketch.record(1e300));
        assert_eq!(sketch.count(), 2);
        assert_eq!(sketch.quantile(0.0), Some(0.0));
        assert!(sketch.quantile(1.0).is_some_and(|v| v > 9e9 && v < 1e10));
    }

    proptest! {
        #[test]
        fn quantiles_are_within_the_stated_error_of_exact_ones(
            values in proptest::collection::vec(0.0f64..1e4, 1..400),
            q in 0.0f64..=1.0,
        ) {
            let mut sketch = QuantileSketch::new();
            for &v in &values {
                sketch.record(v);
            }
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let exact = nearest_rank(&sorted, q);
            let estimate = sketch.quantile(q).unwrap_or(f64::NAN);
            let bound = exact * QuantileSketch::RELATIVE_ERROR + QuantileSketch::ABSOLUTE_ERROR;
            prop_assert!((estimate - exact).abs() <= bound, "{estimate} vs {exact}");
        }

        #[test]
        fn merging_equals_recording_everything_in_one(
            a in proptest::collection::vec(0.0f64..1e3, 0..200),
            b in proptest::collection::vec(0.0f64..1e6, 0..200),
        ) {
            let (mut left, mut right, mut both) =
                (QuantileSketch::new(), QuantileSketch::new(), QuantileSketch::new());
            a.iter().for_each(|&v| { left.record(v); both.record(v); });
            b.iter().for_each(|&v| { right.record(v); both.record(v); });
            left.merge(&right);
            prop_assert_eq!(left.count(), both.count());
            for q in [0.0, 0.1, 0.5, 0.9, 0.99, 1.0] {
                prop_assert_eq!(left.quantile(q), both.quantile(q));
            }
            prop_assert_eq!(left.histogram(30), both.histogram(30));
        }
    }
}
