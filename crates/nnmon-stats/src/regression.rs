//! Regression statistics over the last rows (exact) and since start (sums and a sketch).

use crate::{Histogram, QuantileSketch};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// What the joined rows say about the model, in the target's units.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegressionStats {
    pub count: u64,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean signed error, `y_pred - y_true`: positive when the model predicts too high.
    pub bias: f64,
    /// Coefficient of determination, `1 - SSE / SST`; `None` with fewer than two rows or
    /// when every true value is the same (SST = 0).
    pub r2: Option<f64>,
    pub max_abs_error: f64,
    /// Nearest-rank quantiles of the absolute error (exact over a window; within
    /// [`QuantileSketch::RELATIVE_ERROR`] since start).
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    /// MAE of the dummy model that always predicts the reference mean: a model worth
    /// serving has `mae` well below it.
    pub baseline_mae: f64,
}

/// Running sums of one set of rows, from which every mean is read.
#[derive(Clone, Debug, Default)]
struct Sums {
    count: u64,
    abs: f64,
    squared: f64,
    signed: f64,
    baseline_abs: f64,
    max_abs: f64,
    /// Welford's running mean and sum of squared deviations of `y_true`, for R²'s SST
    /// without the cancellation of `Σy² - n·ȳ²`.
    true_mean: f64,
    true_m2: f64,
}

impl Sums {
    fn push(&mut self, y_true: f64, y_pred: f64, reference_mean: f64) {
        let error = y_pred - y_true;
        self.count += 1;
        self.abs += error.abs();
        self.squared += error * error;
        self.signed += error;
        self.baseline_abs += (y_true - reference_mean).abs();
        self.max_abs = self.max_abs.max(error.abs());
        let delta = y_true - self.true_mean;
        self.true_mean += delta / self.count as f64;
        self.true_m2 += delta * (y_true - self.true_mean);
    }

    fn merge(&mut self, other: &Sums) {
        if other.count == 0 {
            return;
        }
        let total = self.count + other.count;
        // Chan et al.'s pairwise update of the mean and squared deviations.
        let delta = other.true_mean - self.true_mean;
        self.true_m2 +=
            other.true_m2 + delta * delta * (self.count as f64 * other.count as f64 / total as f64);
        self.true_mean += delta * other.count as f64 / total as f64;
        self.count = total;
        self.abs += other.abs;
        self.squared += other.squared;
        self.signed += other.signed;
        self.baseline_abs += other.baseline_abs;
        self.max_abs = self.max_abs.max(other.max_abs);
    }

    /// The statistics, with the quantiles of the absolute error from `quantile`.
    fn stats(&self, quantile: impl Fn(f64) -> f64) -> Option<RegressionStats> {
        if self.count == 0 {
            return None;
        }
        let n = self.count as f64;
        let r2 = (self.count >= 2 && self.true_m2 > 0.0).then(|| 1.0 - self.squared / self.true_m2);
        Some(RegressionStats {
            count: self.count,
            mae: self.abs / n,
            rmse: (self.squared / n).sqrt(),
            bias: self.signed / n,
            r2,
            max_abs_error: self.max_abs,
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            baseline_mae: self.baseline_abs / n,
        })
    }
}

/// The nearest-rank `q`-quantile of sorted values: the smallest value with at least a
/// fraction `q` of the values at or below it.
pub fn nearest_rank(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = ((q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Regression statistics of a stream of `(y_true, y_pred)` rows: exact over the last
/// `window` rows, and since start in memory that does not grow with the rows.
#[derive(Clone, Debug)]
pub struct ErrorStats {
    window: usize,
    reference_mean: f64,
    /// The last `window` rows, oldest first.
    recent: VecDeque<(f64, f64)>,
    total: Sums,
    sketch: QuantileSketch,
    skipped: u64,
}

impl ErrorStats {
    /// Statistics over windows of `window` rows (at least 1), with the dummy baseline
    /// predicting `reference_mean` (the training targets' mean).
    pub fn new(window: usize, reference_mean: f64) -> Self {
        let window = window.max(1);
        Self {
            window,
            reference_mean,
            recent: VecDeque::with_capacity(window),
            total: Sums::default(),
            sketch: QuantileSketch::new(),
            skipped: 0,
        }
    }

    /// Adds one row. A row with a non-finite value is skipped (and counted in
    /// [`skipped`](Self::skipped)): it has no error to average.
    pub fn push(&mut self, y_true: f64, y_pred: f64) {
        if !(y_true.is_finite() && y_pred.is_finite()) {
            self.skipped += 1;
            return;
        }
        if self.recent.len() == self.window {
            self.recent.pop_front();
        }
        self.recent.push_back((y_true, y_pred));
        self.total.push(y_true, y_pred, self.reference_mean);
        self.sketch.record((y_pred - y_true).abs());
    }

    /// Rows pushed with a non-finite value.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Rows counted since start.
    pub fn count(&self) -> u64 {
        self.total.count
    }

    /// The window's size in rows.
    pub fn window_size(&self) -> usize {
        self.window
    }

    /// Exact statistics of the last `window` rows (fewer at the start); `None` before any.
    pub fn window(&self) -> Option<RegressionStats> {
        let mut sums = Sums::default();
        let mut abs_errors = Vec::with_capacity(self.recent.len());
        for &(y_true, y_pred) in &self.recent {
            sums.push(y_true, y_pred, self.reference_mean);
            abs_errors.push((y_pred - y_true).abs());
        }
        abs_errors.sort_unstable_by(f64::total_cmp);
        sums.stats(|q| nearest_rank(&abs_errors, q).unwrap_or(0.0))
    }

    /// Statistics of every row since start, quantiles from the sketch.
    pub fn total(&self) -> Option<RegressionStats> {
        self.total.stats(|q| self.sketch.quantile(q).unwrap_or(0.0))
    }

    /// The absolute errors since start, in at most `max_bins` round bins from 0, read off
    /// the sketch (so within its relative error of exact binning).
    pub fn histogram(&self, max_bins: usize) -> Histogram {
        self.sketch.histogram(max_bins)
    }

    /// The sketch of every absolute error since start.
    pub fn sketch(&self) -> &QuantileSketch {
        &self.sketch
    }

    /// Adds `other`'s totals (sums and sketch) to this one's; the window stays this one's,
    /// since two streams' last rows have no order between them.
    pub fn merge(&mut self, other: &ErrorStats) {
        self.total.merge(&other.total);
        self.sketch.merge(&other.sketch);
        self.skipped += other.skipped;
    }

    /// Continues this stream with `later`, rows that came after all of this one's: totals
    /// add up as with [`merge`](Self::merge), and the window holds the last rows of both.
    /// Lets a reader gather a batch in bounded memory before deciding where it belongs.
    pub fn append(&mut self, later: &ErrorStats) {
        self.merge(later);
        for &row in &later.recent {
            if self.recent.len() == self.window {
                self.recent.pop_front();
            }
            self.recent.push_back(row);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every statistic straight from its definition.
    fn naive(rows: &[(f64, f64)], reference_mean: f64) -> RegressionStats {
        let n = rows.len() as f64;
        let errors: Vec<f64> = rows.iter().map(|(t, p)| p - t).collect();
        let mut abs: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
        abs.sort_by(f64::total_cmp);
        let mean_true = rows.iter().map(|r| r.0).sum::<f64>() / n;
        let sst: f64 = rows.iter().map(|r| (r.0 - mean_true).powi(2)).sum();
        let sse: f64 = errors.iter().map(|e| e * e).sum();
        let quantile = |q: f64| abs[((q * n).ceil() as usize).max(1) - 1];
        RegressionStats {
            count: rows.len() as u64,
            mae: abs.iter().sum::<f64>() / n,
            rmse: (sse / n).sqrt(),
            bias: errors.iter().sum::<f64>() / n,
            r2: (rows.len() >= 2 && sst > 0.0).then(|| 1.0 - sse / sst),
            max_abs_error: abs[abs.len() - 1],
            p50: quantile(0.5),
            p90: quantile(0.9),
            p99: quantile(0.99),
            baseline_mae: rows
                .iter()
                .map(|r| (r.0 - reference_mean).abs())
                .sum::<f64>()
                / n,
        }
    }

    fn close(a: f64, b: f64, relative: f64, absolute: f64) -> bool {
        (a - b).abs() <= relative * a.abs().max(b.abs()) + absolute
    }

    /// `got` equals `want` up to float rounding, quantiles within `quantile_error`.
    fn assert_matches(got: &RegressionStats, want: &RegressionStats, quantile_error: f64) {
        let scale = want.max_abs_error.max(1.0);
        let eps = 1e-9 * scale;
        assert_eq!(got.count, want.count);
        for (name, a, b) in [
            ("mae", got.mae, want.mae),
            ("rmse", got.rmse, want.rmse),
            ("bias", got.bias, want.bias),
            ("max", got.max_abs_error, want.max_abs_error),
            ("baseline", got.baseline_mae, want.baseline_mae),
        ] {
            assert!(close(a, b, 1e-9, eps), "{name}: {a} vs {b}");
        }
        for (name, a, b) in [
            ("p50", got.p50, want.p50),
            ("p90", got.p90, want.p90),
            ("p99", got.p99, want.p99),
        ] {
            assert!(
                close(a, b, quantile_error, 1e-6 + eps),
                "{name}: {a} vs {b}"
            );
        }
        match (got.r2, want.r2) {
            (Some(a), Some(b)) => assert!(close(a, b, 1e-6, 1e-6), "r2: {a} vs {b}"),
            (None, None) => {}
            // SST within rounding of 0: either answer is right.
            (a, b) => assert!(
                a.or(b).is_some_and(|r| !r.is_finite() || r.abs() > 1e6),
                "r2: {a:?} vs {b:?}"
            ),
        }
    }

    fn rows() -> impl Strategy<Value = Vec<(f64, f64)>> {
        proptest::collection::vec((0.0f64..400.0, -100.0f64..500.0), 1..300)
    }

    proptest! {
        #[test]
        fn window_and_total_match_a_naive_recomputation(
            rows in rows(),
            window in 1usize..120,
            reference_mean in 0.0f64..300.0,
        ) {
            let mut stats = ErrorStats::new(window, reference_mean);
            for &(t, p) in &rows {
                stats.push(t, p);
            }
            let last = &rows[rows.len().saturating_sub(window)..];
            let window_stats = stats.window().unwrap_or_else(|| unreachable!());
            assert_matches(&window_stats, &naive(last, reference_mean), 0.0);
            let total = stats.total().unwrap_or_else(|| unreachable!());
            assert_matches(&total, &naive(&rows, reference_mean), QuantileSketch::RELATIVE_ERROR);
            prop_assert_eq!(stats.histogram(30).total(), rows.len() as u64);
        }

        #[test]
        fn merged_totals_equal_one_stream_of_both(
            a in rows(),
            b in rows(),
        ) {
            let (mut left, mut right, mut both) =
                (ErrorStats::new(10, 150.0), ErrorStats::new(10, 150.0), ErrorStats::new(10, 150.0));
            for &(t, p) in &a { left.push(t, p); both.push(t, p); }
            for &(t, p) in &b { right.push(t, p); both.push(t, p); }
            left.merge(&right);
            let all: Vec<_> = a.iter().chain(&b).copied().collect();
            let merged = left.total().unwrap_or_else(|| unreachable!());
            assert_matches(&merged, &naive(&all, 150.0), QuantileSketch::RELATIVE_ERROR);
            prop_assert_eq!(merged.p90, both.total().map(|s| s.p90).unwrap_or_default());
        }
    }

    proptest! {
        #[test]
        fn appending_a_later_batch_equals_one_stream(
            a in rows(),
            b in rows(),
            window in 1usize..50,
        ) {
            let (mut first, mut later, mut both) = (
                ErrorStats::new(window, 100.0),
                ErrorStats::new(window, 100.0),
                ErrorStats::new(window, 100.0),
            );
            for &(t, p) in &a { first.push(t, p); both.push(t, p); }
            for &(t, p) in &b { later.push(t, p); both.push(t, p); }
            first.append(&later);
            prop_assert_eq!(first.window(), both.window());
            let (merged, whole) = (first.total(), both.total());
            prop_assert_eq!(merged.as_ref().map(|s| s.count), whole.as_ref().map(|s| s.count));
            prop_assert_eq!(merged.map(|s| s.p99), whole.map(|s| s.p99));
        }
    }

    #[test]
    fn nothing_yet_and_non_finite_rows() {
        let mut stats = ErrorStats::new(5, 0.0);
        assert_eq!(stats.window(), None);
        assert_eq!(stats.total(), None);
        stats.push(f64::NAN, 1.0);
        stats.push(1.0, f64::INFINITY);
        assert_eq!((stats.count(), stats.skipped()), (0, 2));
        stats.push(3.0, 1.0);
        let one = stats.window().unwrap_or_else(|| unreachable!());
        assert_eq!((one.count, one.mae, one.bias, one.r2), (1, 2.0, -2.0, None));
    }
}
