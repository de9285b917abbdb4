/// Running statistics of absolute errors.
///
/// Keeps every value (8 bytes a row) because the median and the histogram's range need them;
/// the sums make MAE and RMSE O(1) however many rows were logged.
#[derive(Clone, Debug, Default)]
pub struct ErrorSummary {
    errors: Vec<f64>,
    sum: f64,
    sum_of_squares: f64,
}

impl ErrorSummary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one absolute error. Non-finite values are ignored: they cannot be binned.
    pub fn push(&mut self, error: f64) {
        if error.is_finite() {
            self.errors.push(error);
            self.sum += error;
            self.sum_of_squares += error * error;
        }
    }

    pub fn count(&self) -> usize {
        self.errors.len()
    }

    pub fn errors(&self) -> &[f64] {
        &self.errors
    }

    /// Mean absolute error (the mean of the logged absolute errors).
    pub fn mae(&self) -> Option<f64> {
        (!self.errors.is_empty()).then(|| self.sum / self.errors.len() as f64)
    }

    /// Root mean squared error.
    pub fn rmse(&self) -> Option<f64> {
        (!self.errors.is_empty()).then(|| (self.sum_of_squares / self.errors.len() as f64).sqrt())
    }

    /// The median absolute error, in O(n) by selection on a copy.
    pub fn median(&self) -> Option<f64> {
        let n = self.errors.len();
        if n == 0 {
            return None;
        }
        let mut values = self.errors.clone();
        let (_, &mut upper, _) = values.select_nth_unstable_by(n / 2, f64::total_cmp);
        if n % 2 == 1 {
            return Some(upper);
        }
        // The lower middle is the largest value left of the upper one.
        let lower = values[..n / 2]
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        Some((lower + upper) / 2.0)
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
        let summary = ErrorSummary::new();
        assert_eq!(
            (summary.mae(), summary.rmse(), summary.median()),
            (None, None, None)
        );
    }

    #[test]
    fn statistics_of_a_small_sample() {
        let mut summary = ErrorSummary::new();
        summary.extend([3.0, 1.0, 4.0, 2.0, f64::NAN]);
        assert_eq!(summary.count(), 4);
        assert_eq!(summary.mae(), Some(2.5));
        assert_eq!(summary.median(), Some(2.5));
        assert_eq!(summary.rmse(), Some((30.0f64 / 4.0).sqrt()));
    }

    proptest! {
        #[test]
        fn median_matches_a_full_sort(values in proptest::collection::vec(0.0f64..1e6, 1..200)) {
            let mut summary = ErrorSummary::new();
            summary.extend(values.iter().copied());
            let mut sorted = values.clone();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let want = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
            prop_assert_eq!(summary.median(), Some(want));
        }
    }
}
