//! Performance drift: a CUSUM change detector on the absolute-error stream.

use crate::DriftFlip;

/// The subject of the error alarm in a [`DriftFlip`].
pub const ERROR_SUBJECT: &str = "absolute_error";

/// What "normal" absolute errors look like: their mean and standard deviation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ErrorReference {
    /// Estimated from the first `rows` errors, so the detector works for any model; a model
    /// that is worse from its first row is then its own reference and raises nothing.
    WarmUp { rows: u64 },
    /// Known in advance, e.g. from the model's errors on its validation data
    /// ([`ErrorReference::from_errors`]).
    Known { mean: f64, sd: f64 },
}

impl ErrorReference {
    /// The mean and sample standard deviation of `absolute_errors` (non-finite ones left
    /// out); `None` with fewer than two or no spread.
    pub fn from_errors(absolute_errors: &[f64]) -> Option<Self> {
        let mut moments = Moments::default();
        absolute_errors
            .iter()
            .filter(|e| e.is_finite())
            .for_each(|&e| moments.push(e));
        moments.reference()
    }
}

/// How [`ErrorDrift`] standardises errors and when it raises and clears its alarm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ErrorDriftConfig {
    pub reference: ErrorReference,
    /// Slack `k`, in reference standard deviations: the CUSUM grows only while errors run
    /// more than `k` above the reference mean. About half the smallest shift worth finding.
    pub slack: f64,
    /// The alarm is raised when the CUSUM reaches `threshold` (in standard deviations)…
    pub threshold: f64,
    /// …and cleared once it is back down to `clear_fraction × threshold` (hysteresis).
    pub clear_fraction: f64,
    /// The CUSUM is capped at `cap_fraction × threshold`, so that after a long drift the
    /// alarm clears within about `threshold / slack` rows of the errors being normal again.
    pub cap_fraction: f64,
}

impl Default for ErrorDriftConfig {
    /// Calibrated by `tests/calibration.rs` (see there for the figures). The warm-up is
    /// long because a reference mean estimated from fewer rows is off by enough to cause
    /// false alarms (estimated too low) or late ones (too high).
    fn default() -> Self {
        Self {
            reference: ErrorReference::WarmUp { rows: 10_000 },
            slack: 0.08,
            threshold: 100.0,
            clear_fraction: 0.5,
            cap_fraction: 1.5,
        }
    }
}

/// Running mean and squared deviations (Welford).
#[derive(Clone, Copy, Debug, Default)]
struct Moments {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Moments {
    fn push(&mut self, value: f64) {
        self.count += 1;
        let delta = value - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (value - self.mean);
    }

    fn reference(&self) -> Option<ErrorReference> {
        let sd = (self.m2 / self.count.saturating_sub(1).max(1) as f64).sqrt();
        (self.count >= 2 && sd > 0.0).then_some(ErrorReference::Known {
            mean: self.mean,
            sd,
        })
    }
}

/// One-sided (upper) CUSUM of standardised absolute errors: raises an alarm when errors
/// have run persistently above the reference.
#[derive(Clone, Debug)]
pub struct ErrorDrift {
    config: ErrorDriftConfig,
    /// `(mean, sd)` once known.
    reference: Option<(f64, f64)>,
    warm_up: Moments,
    cusum: f64,
    alarm: bool,
    rows: u64,
}

impl ErrorDrift {
    pub fn new(config: ErrorDriftConfig) -> Self {
        let reference = match config.reference {
            ErrorReference::Known { mean, sd }
                if mean.is_finite() && sd.is_finite() && sd > 0.0 =>
            {
                Some((mean, sd))
            }
            _ => None,
        };
        Self {
            config,
            reference,
            warm_up: Moments::default(),
            cusum: 0.0,
            alarm: false,
            rows: 0,
        }
    }

    pub fn config(&self) -> &ErrorDriftConfig {
        &self.config
    }

    /// Adds one absolute error (non-finite ones are ignored); answers the flip of the
    /// alarm this row caused, if any.
    pub fn push(&mut self, absolute_error: f64) -> Option<DriftFlip> {
        if !absolute_error.is_finite() {
            return None;
        }
        self.rows += 1;
        let Some((mean, sd)) = self.reference else {
            self.warm_up.push(absolute_error);
            let rows = match self.config.reference {
                ErrorReference::WarmUp { rows } => rows.max(2),
                // A known reference without spread: learn one instead.
                ErrorReference::Known { .. } => 1000,
            };
            if self.warm_up.count >= rows
                && let Some(ErrorReference::Known { mean, sd }) = self.warm_up.reference()
            {
                self.reference = Some((mean, sd));
            }
            return None;
        };
        let z = (absolute_error - mean) / sd;
        let threshold = self.config.threshold;
        self.cusum = (self.cusum + z - self.config.slack)
            .clamp(0.0, threshold * self.config.cap_fraction.max(1.0));
        let alarm = if self.alarm {
            self.cusum > threshold * self.config.clear_fraction
        } else {
            self.cusum >= threshold
        };
        (alarm != self.alarm).then(|| {
            self.alarm = alarm;
            DriftFlip {
                subject: ERROR_SUBJECT.to_owned(),
                alarm,
                item: self.rows,
            }
        })
    }

    pub fn alarm(&self) -> bool {
        self.alarm
    }

    /// The CUSUM as a fraction of the alarm threshold: 0 when errors are as usual (and
    /// during warm-up), 1 at the alarm, at most `cap_fraction`.
    pub fn score(&self) -> f64 {
        self.cusum / self.config.threshold
    }

    /// The reference `(mean, sd)` in use; `None` during warm-up.
    pub fn reference(&self) -> Option<(f64, f64)> {
        self.reference
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(reference: ErrorReference) -> ErrorDriftConfig {
        ErrorDriftConfig {
            reference,
            slack: 0.5,
            threshold: 5.0,
            ..ErrorDriftConfig::default()
        }
    }

    #[test]
    fn warms_up_then_raises_and_clears_once() {
        let mut drift = ErrorDrift::new(config(ErrorReference::WarmUp { rows: 4 }));
        let warm = [1.0, 3.0, 1.0, 3.0];
        assert!(warm.iter().all(|&e| drift.push(e).is_none()));
        let (mean, sd) = drift.reference().unwrap_or_default();
        assert!((mean - 2.0).abs() < 1e-12 && (sd - (4.0f64 / 3.0).sqrt()).abs() < 1e-12);
        let mut flips = Vec::new();
        for i in 0..200 {
            let e = if (50..100).contains(&i) {
                6.0
            } else {
                warm[i % 4]
            };
            flips.extend(drift.push(e));
        }
        let summary: Vec<_> = flips.iter().map(|f| (f.alarm, f.item)).collect();
        assert_eq!(summary.len(), 2, "{summary:?}");
        assert!(summary[0].0 && summary[0].1 > 54 && summary[0].1 < 60);
        assert!(!summary[1].0 && summary[1].1 > 104);
        assert!(!drift.alarm() && drift.score() < 0.5);
        assert!(drift.push(f64::NAN).is_none());
    }

    #[test]
    fn a_known_reference_needs_no_warm_up() {
        let reference = ErrorReference::from_errors(&[1.0, 3.0, f64::NAN]);
        assert_eq!(
            reference,
            Some(ErrorReference::Known {
                mean: 2.0,
                sd: 2f64.sqrt()
            })
        );
        let mut drift = ErrorDrift::new(config(
            reference.unwrap_or(ErrorReference::WarmUp { rows: 1 }),
        ));
        let flips: Vec<_> = (0..10).filter_map(|_| drift.push(10.0)).collect();
        assert_eq!(flips.len(), 1);
        assert_eq!(flips[0].subject, "absolute_error");
        assert_eq!(flips[0].item, 1);
        assert!(drift.score() >= 1.0);
    }
}
