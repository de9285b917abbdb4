//! The two-sample Kolmogorov–Smirnov test.

/// The KS statistic `D = sup |F_a(x) - F_b(x)|` of two sorted samples (ties handled: both
/// empirical CDFs step past every copy of a value before they are compared). 0 when either
/// sample is empty.
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

    #[test]
    fn identical_and_disjoint_samples() {
        let a = [1.0, 2.0, 2.0, 3.0];
        assert_eq!(ks_statistic(&a, &a), 0.0);
        assert_eq!(ks_statistic(&a, &[4.0, 5.0]), 1.0);
        assert_eq!(ks_statistic(&[0.0, 1.0], &[0.0, 0.0, 1.0, 1.0]), 0.0);
        assert!(ks_p_value(0.0, 500, 442) > 0.999);
        assert!(ks_p_value(1.0, 500, 442) < 1e-100);
    }

    proptest! {
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
