use crate::Histogram;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// An absolute error ordered by `f64::total_cmp`, so it can live in a heap.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Error(f64);

impl Eq for Error {}

impl PartialOrd for Error {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Error {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Running statistics of absolute errors, each new row costing O(log n).
///
/// Every value is kept once (8 bytes a row), split between two heaps around the median, so
/// the median is read off the heaps' tops. MAE and RMSE come from running sums. The
/// histogram is kept equal to [`Histogram::of`] all values: a row inside the current range
/// lands in its bin directly; only a new minimum or maximum (rare once the log is long)
/// makes the next [`histogram`](Self::histogram) call re-bin everything.
#[derive(Clone, Debug)]
pub struct ErrorSummary {
    /// The smaller half of the values (max-heap); holds the extra one when the count is odd.
    lower: BinaryHeap<Error>,
    /// The larger half (min-heap).
    upper: BinaryHeap<Reverse<Error>>,
    sum: f64,
    sum_of_squares: f64,
    /// Smallest and largest value so far: the range the histogram's bins span.
    min: f64,
    max: f64,
    histogram: Histogram,
    /// The histogram must be rebuilt from all values before it is read.
    histogram_stale: bool,
}

impl ErrorSummary {
    /// An empty summary whose histogram has `bins` bins.
    pub fn new(bins: usize) -> Self {
        Self {
            lower: BinaryHeap::new(),
            upper: BinaryHeap::new(),
            sum: 0.0,
            sum_of_squares: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            histogram: Histogram::of(&[], bins),
            histogram_stale: false,
        }
    }

    /// Adds one absolute error. Non-finite values are ignored: they cannot be binned.
    pub fn push(&mut self, error: f64) {
        if !error.is_finite() {
            return;
        }
        if self.min <= error && error <= self.max {
            if !self.histogram_stale {
                self.histogram.add(error);
            }
        } else {
            self.min = self.min.min(error);
            self.max = self.max.max(error);
            self.histogram_stale = true;
        }
        self.sum += error;
        self.sum_of_squares += error * error;
        match self.lower.peek() {
            Some(&top) if Error(error) > top => self.upper.push(Reverse(Error(error))),
            _ => self.lower.push(Error(error)),
        }
        // Rebalance so that `lower` has as many values as `upper`, or one more.
        if self.lower.len() > self.upper.len() + 1 {
            if let Some(moved) = self.lower.pop() {
                self.upper.push(Reverse(moved));
            }
        } else if self.upper.len() > self.lower.len()
            && let Some(Reverse(moved)) = self.upper.pop()
        {
            self.lower.push(moved);
        }
    }

    pub fn count(&self) -> usize {
        self.lower.len() + self.upper.len()
    }

    /// Mean absolute error (the mean of the logged absolute errors).
    pub fn mae(&self) -> Option<f64> {
        (self.count() > 0).then(|| self.sum / self.count() as f64)
    }

    /// Root mean squared error.
    pub fn rmse(&self) -> Option<f64> {
        (self.count() > 0).then(|| (self.sum_of_squares / self.count() as f64).sqrt())
    }

    /// The median absolute error, in O(1).
    pub fn median(&self) -> Option<f64> {
        let lower = self.lower.peek()?.0;
        if self.lower.len() > self.upper.len() {
            return Some(lower);
        }
        let upper = self.upper.peek()?.0.0;
        Some((lower + upper) / 2.0)
    }

    /// The histogram of every value so far, equal to [`Histogram::of`] them.
    pub fn histogram(&mut self) -> &Histogram {
        if self.histogram_stale {
            let mut histogram =
                Histogram::spanning(self.min, self.max, self.histogram.counts.len());
            for value in self
                .lower
                .iter()
                .map(|e| e.0)
                .chain(self.upper.iter().map(|e| e.0.0))
            {
                histogram.add(value);
            }
            self.histogram = histogram;
            self.histogram_stale = false;
        }
        &self.histogram
    }
}

impl Extend<f64> for ErrorSummary {
    fn extend<I: IntoIterator<Item = f64>>(&mut self, iter: I) {
        for error in iter {
            self.push(error);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_summary_has_no_statistics() {
        let summary = ErrorSummary::new(30);
        assert_eq!(
            (summary.mae(), summary.rmse(), summary.median()),
            (None, None, None)
        );
    }

    #[test]
    fn statistics_of_a_small_sample() {
        let mut summary = ErrorSummary::new(30);
        summary.extend([3.0, 1.0, 4.0, 2.0, f64::NAN]);
        assert_eq!(summary.count(), 4);
        assert_eq!(summary.mae(), Some(2.5));
        assert_eq!(summary.median(), Some(2.5));
        assert_eq!(summary.rmse(), Some((30.0f64 / 4.0).sqrt()));
    }

    proptest! {
        #[test]
        fn median_matches_a_full_sort(values in proptest::collection::vec(0.0f64..1e6, 1..200)) {
            let mut summary = ErrorSummary::new(30);
            summary.extend(values.iter().copied());
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let want = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
            prop_assert_eq!(summary.median(), Some(want));
        }

        #[test]
        fn the_running_histogram_equals_binning_everything_at_once(
            batches in proptest::collection::vec(proptest::collection::vec(0.0f64..1e4, 0..50), 1..10),
            bins in 1usize..40,
        ) {
            // Read between batches, as `plot` does between refreshes.
            let mut summary = ErrorSummary::new(bins);
            let mut all = Vec::new();
            for batch in batches {
                summary.extend(batch.iter().copied());
                all.extend(batch);
                prop_assert_eq!(summary.histogram(), &Histogram::of(&all, bins));
            }
        }
    }
}
