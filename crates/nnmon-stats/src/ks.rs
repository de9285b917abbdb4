//! The two-sample Kolmogorov–Smirnov test: of two sorted samples ([`ks_statistic`]), or
//! of a sample that changes value by value against a fixed one ([`Reference`] and
//! [`Tally`]), as a sliding window against training data is.

/// The KS statistic `D = sup |F_a(x) - F_b(x)|` of two sorted samples (ties handled: both
/// empirical CDFs step past every copy of a value before they are compared). 0 when either
/// sample is empty. The definition [`Tally::ks_statistic`] is tested against.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return 0.0;
    }
    let (mut i, mut j, mut d) = (0, 0, 0.0f64);
    while i < n && j < m {
        let x = if a[i].total_cmp(&b[j]).is_le() {
            a[i]
        } else {
            b[j]
        };
        while i < n && a[i].total_cmp(&x).is_le() {
            i += 1;
        }
        while j < m && b[j].total_cmp(&x).is_le() {
            j += 1;
        }
        d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
    }
    d
}

/// A fixed sample (the training data of one feature) to test others against. A value is
/// placed by where it falls among the reference's `k` distinct values (its *slot*): on the
/// `p`-th one is slot `2p + 1`, between the `p - 1`-th and the `p`-th slot `2p`; slot 0 is
/// below them all and slot `2k` above them all. Within a slot the reference's CDF does not
/// change, so a sample known only by how many of its values fall in each slot ([`Tally`])
/// has the same KS statistic as the sample itself.
#[derive(Clone, Debug)]
pub struct Reference {
    /// The distinct values, ascending (`f64::total_cmp`, as [`ks_statistic`] orders them).
    distinct: Vec<f64>,
    /// How many reference values are at or below each distinct value.
    at_or_below: Vec<usize>,
}

impl Reference {
    /// The reference of `values` (any order; non-finite values are left out).
    pub fn new(values: impl IntoIterator<Item = f64>) -> Self {
        let mut sorted: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        sorted.sort_unstable_by(f64::total_cmp);
        let mut distinct: Vec<f64> = Vec::new();
        let mut at_or_below: Vec<usize> = Vec::new();
        for (seen, value) in (1..).zip(sorted) {
            match (distinct.last(), at_or_below.last_mut()) {
                (Some(last), Some(count)) if last.total_cmp(&value).is_eq() => *count = seen,
                _ => {
                    distinct.push(value);
                    at_or_below.push(seen);
                }
            }
        }
        Self {
            distinct,
            at_or_below,
        }
    }

    /// The number of reference values.
    pub fn len(&self) -> usize {
        self.at_or_below.last().copied().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.distinct.is_empty()
    }

    /// The slot of `value`: a binary search among the distinct values.
    pub fn slot(&self, value: f64) -> usize {
        let below = self
            .distinct
            .partition_point(|d| d.total_cmp(&value).is_lt());
        let on = self
            .distinct
            .get(below)
            .is_some_and(|d| d.total_cmp(&value).is_eq());
        2 * below + usize::from(on)
    }

    /// The number of slots, so slots run from 0 to `slots() - 1`.
    pub fn slots(&self) -> usize {
        2 * self.distinct.len() + 1
    }
}

/// A sample kept as its count of values in each slot of a [`Reference`], so that values
/// come and go in any order at the cost of a counter each, and the KS statistic against
/// the reference takes one pass over its slots instead of a sort of the sample.
#[derive(Clone, Debug)]
pub struct Tally {
    /// Values in each slot.
    counts: Vec<usize>,
    len: usize,
}

impl Tally {
    /// An empty sample with the slots of `reference`.
    pub fn new(reference: &Reference) -> Self {
        Self {
            counts: vec![0; reference.slots()],
            len: 0,
        }
    }

    /// Adds a value by its slot ([`Reference::slot`]).
    pub fn add(&mut self, slot: usize) {
        self.counts[slot] += 1;
        self.len += 1;
    }

    /// Removes a value added before, by its slot.
    pub fn remove(&mut self, slot: usize) {
        debug_assert!(self.counts[slot] > 0, "removing a value never added");
        self.counts[slot] -= 1;
        self.len -= 1;
    }

    /// The number of values in the sample.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The KS statistic of this sample against `reference`, the one it was made for (slots
    /// of another reference mean other values; a debug build checks their number): the
    /// same value, bit for bit, as [`ks_statistic`] of the sample and the reference sorted.
    ///
    /// Both CDFs are compared at the top of every slot: on a distinct reference value, and,
    /// between two, at the largest sample value there (or where the slot below ended, if
    /// none is). Those are points [`ks_statistic`] compares at, with the same counts `i`
    /// and `j` in the same expression, so the values are the same floats. The points it
    /// compares at and this does not lie inside a slot, below its top: there the reference's
    /// CDF is flat and the sample's lower, so the gap is no wider than at the slot's top or
    /// at the top of the slot below.
    pub fn ks_statistic(&self, reference: &Reference) -> f64 {
        debug_assert_eq!(self.counts.len(), reference.slots(), "another reference");
        let (n, m) = (self.len, reference.len());
        if n == 0 || m == 0 {
            return 0.0;
        }
        // `i` sample and `j` reference values at or below the slot's top.
        let (mut i, mut d) = (0usize, 0.0f64);
        for (slot, &count) in self.counts.iter().enumerate() {
            i += count;
            let j = match (slot / 2, slot % 2) {
                (p, 1) => reference.at_or_below[p],
                (0, _) => 0,
                (p, _) => reference.at_or_below[p - 1],
            };
            d = d.max((i as f64 / n as f64 - j as f64 / m as f64).abs());
        }
        d
    }
}

/// The asymptotic p-value of a two-sample KS statistic `d` for samples of `n` and `m`
/// values: the Kolmogorov distribution's tail at `λ = (√nₑ + 0.12 + 0.11/√nₑ)·d`, with
/// `nₑ = nm/(n+m)` and Stephens' small-sample correction. Conservative (too large) when the
/// values have ties, as discrete features do.
pub fn ks_p_value(d: f64, n: usize, m: usize) -> f64 {
    if n == 0 || m == 0 {
        return 1.0;
    }
    let en = ((n * m) as f64 / (n + m) as f64).sqrt();
    kolmogorov_tail((en + 0.12 + 0.11 / en) * d)
}

/// `Q(λ) = P(K > λ) = 2 Σ_{k≥1} (-1)^{k-1} e^{-2k²λ²}`, the Kolmogorov distribution's tail.
pub fn kolmogorov_tail(lambda: f64) -> f64 {
    if !lambda.is_finite() {
        return if lambda > 0.0 { 0.0 } else { 1.0 };
    }
    if lambda <= 0.0 {
        return 1.0;
    }
    if lambda < 1.18 {
        // The alternating series converges slowly for small λ; the theta-function form
        // `1 - √(2π)/λ Σ e^{-(2k-1)²π²/(8λ²)}` converges in a few terms there.
        let factor = -std::f64::consts::PI.powi(2) / (8.0 * lambda * lambda);
        let sum: f64 = (1..=6)
            .map(|k| ((2 * k - 1) as f64).powi(2))
            .map(|odd_squared| (factor * odd_squared).exp())
            .sum();
        return (1.0 - (2.0 * std::f64::consts::PI).sqrt() / lambda * sum).clamp(0.0, 1.0);
    }
    let sum: f64 = (1..=100)
        .map(|k| {
            let sign = if k % 2 == 1 { 1.0 } else { -1.0 };
            sign * (-2.0 * (k * k) as f64 * lambda * lambda).exp()
        })
        .sum();
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `D` from its definition: the largest CDF gap at any value of either sample.
    fn naive_statistic(a: &[f64], b: &[f64]) -> f64 {
        let cdf = |s: &[f64], x: f64| s.iter().filter(|&&v| v <= x).count() as f64 / s.len() as f64;
        a.iter()
            .chain(b)
            .map(|&x| (cdf(a, x) - cdf(b, x)).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn known_values_of_the_kolmogorov_tail() {
        // Tabulated critical values of the Kolmogorov distribution.
        for (lambda, p) in [
            (1.2238, 0.10),
            (1.3581, 0.05),
            (1.6276, 0.01),
            (1.9495, 0.001),
        ] {
            assert!((kolmogorov_tail(lambda) - p).abs() < 2e-4, "Q({lambda})");
        }
        // Both forms agree where they meet.
        let lambda = 1.1799999f64;
        let series = 2.0
            * (1..100)
                .map(|k: i32| {
                    (-1f64).powi(k - 1) * (-2.0 * f64::from(k * k) * lambda * lambda).exp()
                })
                .sum::<f64>();
        assert!((kolmogorov_tail(lambda) - series).abs() < 1e-12);
        assert_eq!(kolmogorov_tail(0.0), 1.0);
        assert!(kolmogorov_tail(10.0) < 1e-80);
    }

    /// [`Tally::ks_statistic`] of `sample` against `reference`.
    fn tallied(sample: &[f64], reference: &[f64]) -> f64 {
        let reference = Reference::new(reference.iter().copied());
        let mut tally = Tally::new(&reference);
        for &v in sample {
            tally.add(reference.slot(v));
        }
        tally.ks_statistic(&reference)
    }

    #[test]
    fn identical_and_disjoint_samples() {
        let a = [1.0, 2.0, 2.0, 3.0];
        for statistic in [ks_statistic, tallied] {
            assert_eq!(statistic(&a, &a), 0.0);
            assert_eq!(statistic(&a, &[4.0, 5.0]), 1.0);
            assert_eq!(statistic(&[4.0, 5.0], &a), 1.0);
            assert_eq!(statistic(&[0.0, 1.0], &[0.0, 0.0, 1.0, 1.0]), 0.0);
        }
        assert!(ks_p_value(0.0, 500, 442) > 0.999);
        assert!(ks_p_value(1.0, 500, 442) < 1e-100);
    }

    #[test]
    fn a_reference_places_values_on_and_between_its_distinct_values() {
        let reference = Reference::new([2.0, 1.0, 2.0, f64::NAN, 3.0]);
        assert_eq!(reference.len(), 4);
        assert_eq!(reference.slots(), 7);
        let slots: Vec<usize> = [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 9.0]
            .into_iter()
            .map(|v| reference.slot(v))
            .collect();
        assert_eq!(slots, [0, 1, 2, 3, 4, 5, 6]);
        // Ordered as the sorted statistic orders them: -0 below +0.
        let zeros = Reference::new([0.0]);
        assert_eq!((zeros.slot(-0.0), zeros.slot(0.0)), (0, 1));
        let none = Reference::new([f64::INFINITY]);
        assert!(none.is_empty());
        let mut tally = Tally::new(&none);
        tally.add(none.slot(1.0));
        assert_eq!(tally.ks_statistic(&none), 0.0);
    }

    proptest! {
        #[test]
        fn a_tally_has_the_statistic_of_its_sorted_sample(
            reference in proptest::collection::vec(-8i32..8, 0..60),
            sample in proptest::collection::vec(-8i32..8, 0..80),
            removed in proptest::collection::vec(any::<proptest::sample::Index>(), 0..40),
        ) {
            // Ties, halves (values between others) and both zeros, which `total_cmp`
            // keeps apart: -8 stands for -0.
            let value = |v: i32| if v == -8 { -0.0 } else { f64::from(v) / 2.0 };
            let reference_values: Vec<f64> = reference.iter().map(|&v| value(v)).collect();
            let mut sample: Vec<f64> = sample.iter().map(|&v| value(v)).collect();
            let reference = Reference::new(reference_values.iter().copied());
            let mut tally = Tally::new(&reference);
            for &v in &sample {
                tally.add(reference.slot(v));
            }
            for index in removed {
                if sample.is_empty() {
                    break;
                }
                let v = sample.swap_remove(index.index(sample.len()));
                tally.remove(reference.slot(v));
            }
            let mut sorted_reference = reference_values;
            sorted_reference.sort_unstable_by(f64::total_cmp);
            sample.sort_unstable_by(f64::total_cmp);
            prop_assert_eq!(tally.len(), sample.len());
            prop_assert_eq!(
                tally.ks_statistic(&reference).to_bits(),
                ks_statistic(&sample, &sorted_reference).to_bits()
            );
        }

        #[test]
        fn statistic_matches_its_definition(
            mut a in proptest::collection::vec(-5i32..5, 1..60),
            mut b in proptest::collection::vec(-5i32..5, 1..60),
        ) {
            a.sort_unstable();
            b.sort_unstable();
            let a: Vec<f64> = a.into_iter().map(f64::from).collect();
            let b: Vec<f64> = b.into_iter().map(f64::from).collect();
            let d = ks_statistic(&a, &b);
            prop_assert!((d - naive_statistic(&a, &b)).abs() < 1e-12);
            let p = ks_p_value(d, a.len(), b.len());
            prop_assert!((0.0..=1.0).contains(&p));
        }
    }
}
