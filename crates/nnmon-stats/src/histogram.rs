//! Equal-width bins from 0, with round bin widths so that a chart's ticks fall on them.

use serde::{Deserialize, Serialize};

/// Equal-width bins from 0: bin `i` holds values in `[i * width, (i + 1) * width)`, and the
/// last bin also everything above.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// Width of every bin: 1, 2, 2.5 or 5 times a power of ten.
    pub width: f64,
    /// Values per bin.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// Empty bins of a round width, as few as cover `[0, max]` in at most `max_bins` bins.
    /// With `max` ≤ 0 (or not finite) there is one bin of width 1.
    pub fn covering(max: f64, max_bins: usize) -> Self {
        let max_bins = max_bins.max(1);
        if !(max.is_finite() && max > 0.0) {
            return Self {
                width: 1.0,
                counts: vec![0],
            };
        }
        let width = nice_step(max / max_bins as f64);
        // A value equal to the top edge would need one bin more: it goes in the last one.
        let bins = ((max / width).ceil() as usize).clamp(1, max_bins);
        Self {
            width,
            counts: vec![0; bins],
        }
    }

    /// Counts `count` values equal to `value` (negative values in the first bin, values past
    /// the end in the last).
    pub fn add_count(&mut self, value: f64, count: u64) {
        let last = self.counts.len().saturating_sub(1);
        // `as usize` saturates: negative offsets and NaN land in bin 0.
        let index = ((value / self.width) as usize).min(last);
        if let Some(bin) = self.counts.get_mut(index) {
            *bin += count;
        }
    }

    /// Right edge of the last bin.
    pub fn end(&self) -> f64 {
        self.width * self.counts.len() as f64
    }

    /// The bins as `(left edge, right edge, count)`.
    pub fn bins(&self) -> impl Iterator<Item = (f64, f64, u64)> + '_ {
        self.counts.iter().enumerate().map(|(i, &count)| {
            let left = self.width * i as f64;
            (left, left + self.width, count)
        })
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    pub fn max_count(&self) -> u64 {
        self.counts.iter().copied().max().unwrap_or(0)
    }
}

/// The smallest of 1, 2, 2.5, 5 times a power of ten that is at least `raw` (> 0).
pub fn nice_step(raw: f64) -> f64 {
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        // log10 rounding can leave `magnitude` a hair off; the tolerance keeps 20 from
        // becoming 25 when raw is exactly 20.
        .find(|&step| step >= raw * (1.0 - 1e-12))
        .unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn widths_are_round() {
        assert_eq!(nice_step(0.7), 1.0);
        assert_eq!(nice_step(1.0), 1.0);
        assert_eq!(nice_step(1.2), 2.0);
        assert_eq!(nice_step(2.2), 2.5);
        assert_eq!(nice_step(20.0), 20.0);
        assert_eq!(nice_step(31.0), 50.0);
        assert_eq!(nice_step(0.003), 0.005);
        let h = Histogram::covering(287.0, 30);
        assert_eq!((h.width, h.counts.len()), (10.0, 29));
    }

    #[test]
    fn nothing_yet_is_one_bin() {
        assert_eq!(Histogram::covering(0.0, 30).counts, vec![0]);
        assert_eq!(Histogram::covering(f64::NAN, 30).counts, vec![0]);
    }

    proptest! {
        #[test]
        fn every_value_up_to_max_has_a_bin_that_contains_it(
            values in proptest::collection::vec(0.0f64..1e9, 1..300),
            max_bins in 1usize..60,
        ) {
            let max = values.iter().copied().fold(0.0, f64::max);
            let mut h = Histogram::covering(max, max_bins);
            prop_assert!(h.counts.len() <= max_bins);
            prop_assert!(h.end() >= max);
            for &v in &values {
                h.add_count(v, 1);
                let index = ((v / h.width) as usize).min(h.counts.len() - 1);
                let (left, right, _) = h.bins().nth(index).unwrap_or_default();
                prop_assert!(left <= v && (v < right || index == h.counts.len() - 1));
            }
            prop_assert_eq!(h.total(), values.len() as u64);
        }
    }
}
