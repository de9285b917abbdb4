/// Equal-width bins over the range of the values.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Left edge of the first bin.
    pub start: f64,
    /// Width of every bin (positive).
    pub width: f64,
    /// Values per bin; the last bin includes its right edge.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Bins finite `values` into `bins` equal bins spanning their minimum to maximum.
    ///
    /// All-equal values get bins spanning 1 in all, centred on the value, so the chart
    /// still has an x-axis; with no values every count is zero over [0, 1).
    pub fn of(values: &[f64], bins: usize) -> Self {
        let (min, max) = values
            .iter()
            .filter(|v| v.is_finite())
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let mut histogram = Self::spanning(min, max, bins);
        for &v in values.iter().filter(|v| v.is_finite()) {
            histogram.add(v);
        }
        histogram
    }

    /// Empty bins for values from `min` to `max` (`min > max`: no values yet), as
    /// [`of`](Self::of) makes them.
    pub fn spanning(min: f64, max: f64, bins: usize) -> Self {
        let bins = bins.max(1);
        let (start, width) = if min > max {
            (0.0, 1.0 / bins as f64)
        } else if min == max {
            (min - 0.5, 1.0 / bins as f64)
        } else {
            (min, (max - min) / bins as f64)
        };
        Self {
            start,
            width,
            counts: vec![0u64; bins],
        }
    }

    /// Counts one more value in its bin. Within the minimum and maximum the bins were made
    /// from, this gives the same bins as binning everything again; outside, the value is
    /// clamped into the first or last bin.
    pub fn add(&mut self, value: f64) {
        // Truncation picks the bin (a negative offset saturates to 0); clamping puts the
        // maximum into the last bin.
        let last = self.counts.len() - 1;
        let index = (((value - self.start) / self.width) as usize).min(last);
        self.counts[index] += 1;
    }

    /// Right edge of the last bin.
    pub fn end(&self) -> f64 {
        self.start + self.width * self.counts.len() as f64
    }

    /// The bins as `(left edge, right edge, count)`.
    pub fn bins(&self) -> impl Iterator<Item = (f64, f64, u64)> + '_ {
        self.counts.iter().enumerate().map(|(i, &count)| {
            let left = self.start + self.width * i as f64;
            (left, left + self.width, count)
        })
    }

    pub fn max_count(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn maximum_lands_in_the_last_bin() {
        let h = Histogram::of(&[0.0, 1.0, 2.0, 3.0], 3);
        assert_eq!(
            (h.start, h.width, h.counts.clone()),
            (0.0, 1.0, vec![1, 1, 2])
        );
        assert_eq!(h.end(), 3.0);
    }

    #[test]
    fn degenerate_inputs_still_have_bins() {
        assert_eq!(Histogram::of(&[], 30).counts, vec![0; 30]);
        let h = Histogram::of(&[5.0, 5.0], 30);
        assert_eq!(h.counts.iter().sum::<u64>(), 2);
        assert!(h.start < 5.0 && 5.0 < h.end());
    }

    proptest! {
        #[test]
        fn every_value_falls_in_exactly_one_bin_that_contains_it(
            values in proptest::collection::vec(-1e9f64..1e9, 1..300),
            bins in 1usize..60,
        ) {
            let h = Histogram::of(&values, bins);
            prop_assert_eq!(h.counts.len(), bins);
            prop_assert_eq!(h.counts.iter().sum::<u64>(), values.len() as u64);
            let tolerance = h.width * 1e-9;
            for v in &values {
                prop_assert!(*v >= h.start - tolerance && *v <= h.end() + tolerance);
            }
        }
    }
}
