//! Input drift: each feature of the recent items against the training reference.

use crate::ks::{Reference, Tally, ks_p_value};
use crate::{DriftFlip, FeatureScore};
use std::collections::VecDeque;

/// Number of features of an item (the diabetes data set's ten).
pub const FEATURES: usize = 10;

/// The diabetes data set's feature names, in column order.
pub const DIABETES_FEATURE_NAMES: [&str; FEATURES] = [
    "age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6",
];

/// How [`FeatureDrift`] tests and when it raises and clears an alarm.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FeatureDriftConfig {
    /// Recent feature vectors compared with the reference.
    pub window: usize,
    /// Items between two evaluations (the first comes once the window is full).
    pub evaluate_every: u64,
    /// A feature's alarm is raised when its p-value falls below this…
    pub alarm_p_value: f64,
    /// …and cleared only once its p-value is back above this (hysteresis: a p-value
    /// wandering around the alarm level does not flap).
    pub clear_p_value: f64,
}

impl Default for FeatureDriftConfig {
    /// Calibrated by `tests/calibration.rs` (see there for the figures): the test is
    /// repeated every 50 items on overlapping windows, so the alarm level is far below the
    /// usual 0.05 to keep false alarms away over long runs.
    fn default() -> Self {
        Self {
            window: 500,
            evaluate_every: 50,
            alarm_p_value: 1e-6,
            clear_p_value: 1e-3,
        }
    }
}

/// Two-sample Kolmogorov–Smirnov test of each feature of the last `window` items against
/// the training reference, every `evaluate_every` items.
///
/// `model` runs it on every item, so the window is kept tallied against each feature's
/// reference ([`Tally`]): an item costs a binary search per feature, and an evaluation a
/// pass over the `2k + 1` slots of each feature's `k` distinct reference values (2 to 302
/// for the diabetes data's 442 rows), not a sort of the window per feature.
#[derive(Clone, Debug)]
pub struct FeatureDrift {
    config: FeatureDriftConfig,
    names: [&'static str; FEATURES],
    /// Each feature's training values.
    reference: Vec<Reference>,
    /// Each feature's recent values, tallied against its reference.
    window: Vec<Tally>,
    /// The recent items' slots (feature by feature), oldest first: what leaves the window.
    recent: VecDeque<[usize; FEATURES]>,
    items: u64,
    skipped: u64,
    alarms: [bool; FEATURES],
    scores: Vec<FeatureScore>,
}

impl FeatureDrift {
    /// A detector against `reference` rows (the training data), with the features' `names`.
    /// Non-finite reference values are left out of the reference.
    pub fn new(
        reference: &[[f64; FEATURES]],
        names: [&'static str; FEATURES],
        config: FeatureDriftConfig,
    ) -> Self {
        let config = FeatureDriftConfig {
            window: config.window.max(1),
            evaluate_every: config.evaluate_every.max(1),
            clear_p_value: config.clear_p_value.max(config.alarm_p_value),
            ..config
        };
        let reference: Vec<Reference> = (0..FEATURES)
            .map(|feature| Reference::new(reference.iter().map(|row| row[feature])))
            .collect();
        Self {
            config,
            names,
            window: reference.iter().map(Tally::new).collect(),
            reference,
            recent: VecDeque::with_capacity(config.window),
            items: 0,
            skipped: 0,
            alarms: [false; FEATURES],
            scores: Vec::new(),
        }
    }

    pub fn config(&self) -> &FeatureDriftConfig {
        &self.config
    }

    /// Adds one item's features; answers the alarms raised or cleared by this item (only
    /// on an evaluation). An item with a non-finite value is skipped (counted in
    /// [`skipped`](Self::skipped)).
    pub fn push(&mut self, features: &[f64; FEATURES]) -> Vec<DriftFlip> {
        if !features.iter().all(|v| v.is_finite()) {
            self.skipped += 1;
            return Vec::new();
        }
        self.items += 1;
        if self.recent.len() == self.config.window
            && let Some(oldest) = self.recent.pop_front()
        {
            for (tally, slot) in self.window.iter_mut().zip(oldest) {
                tally.remove(slot);
            }
        }
        let slots: [usize; FEATURES] =
            std::array::from_fn(|feature| self.reference[feature].slot(features[feature]));
        for (tally, &slot) in self.window.iter_mut().zip(&slots) {
            tally.add(slot);
        }
        self.recent.push_back(slots);
        if self.recent.len() == self.config.window
            && self.items.is_multiple_of(self.config.evaluate_every)
        {
            self.evaluate()
        } else {
            Vec::new()
        }
    }

    /// Items pushed so far (skipped ones excluded).
    pub fn items(&self) -> u64 {
        self.items
    }

    /// Items skipped for a non-finite value.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Each feature's score at the last evaluation; empty before the first one (the window
    /// is not full yet).
    pub fn scores(&self) -> Vec<FeatureScore> {
        self.scores.clone()
    }

    /// Whether any feature's alarm is up.
    pub fn any_alarm(&self) -> bool {
        self.alarms.iter().any(|&a| a)
    }

    fn evaluate(&mut self) -> Vec<DriftFlip> {
        let mut flips = Vec::new();
        self.scores.clear();
        for feature in 0..FEATURES {
            let (window, reference) = (&self.window[feature], &self.reference[feature]);
            let statistic = window.ks_statistic(reference);
            let p_value = ks_p_value(statistic, window.len(), reference.len());
            let was = self.alarms[feature];
            let alarm = if was {
                p_value <= self.config.clear_p_value
            } else {
                p_value < self.config.alarm_p_value
            };
            if alarm != was {
                self.alarms[feature] = alarm;
                flips.push(DriftFlip {
                    subject: self.names[feature].to_owned(),
                    alarm,
                    item: self.items,
                });
            }
            self.scores.push(FeatureScore {
                name: self.names[feature].to_owned(),
                statistic,
                p_value,
                alarm,
            });
        }
        flips
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ks::ks_statistic;
    use proptest::prelude::*;

    fn grid() -> Vec<[f64; FEATURES]> {
        (0..400).map(|i| [f64::from(i % 20); FEATURES]).collect()
    }

    /// A detector of windows of 100 items, evaluated every 10, against [`grid`].
    fn small_detector(reference: &[[f64; FEATURES]]) -> FeatureDrift {
        let config = FeatureDriftConfig {
            window: 100,
            evaluate_every: 10,
            ..FeatureDriftConfig::default()
        };
        FeatureDrift::new(reference, DIABETES_FEATURE_NAMES, config)
    }

    #[test]
    fn scores_come_once_the_window_is_full_and_every_n_items() {
        let reference = grid();
        let mut drift = small_detector(&reference);
        for row in reference.iter().take(99) {
            assert!(drift.push(row).is_empty());
        }
        assert!(drift.scores().is_empty());
        drift.push(&reference[99]);
        let scores = drift.scores();
        assert_eq!(scores.len(), FEATURES);
        assert_eq!(scores[2].name, "bmi");
        assert!(scores.iter().all(|s| s.statistic == 0.0 && !s.alarm));
    }

    #[test]
    fn a_shifted_feature_is_raised_then_cleared_once() {
        let reference = grid();
        let mut drift = small_detector(&reference);
        let mut flips = Vec::new();
        for (i, row) in reference.iter().cycle().take(3000).enumerate() {
            let mut row = *row;
            if (1000..2000).contains(&i) {
                row[3] += 100.0;
            }
            flips.extend(drift.push(&row));
        }
        let summary: Vec<_> = flips
            .iter()
            .map(|f| (f.subject.as_str(), f.alarm))
            .collect();
        assert_eq!(summary, [("bp", true), ("bp", false)]);
        assert!(flips[0].item > 1000 && flips[0].item <= 1100);
        assert!(flips[1].item > 2000 && flips[1].item <= 2100);
        assert!(!drift.any_alarm());
        assert!(drift.push(&[f64::NAN; FEATURES]).is_empty());
        assert_eq!(drift.skipped(), 1);
    }

    proptest! {
        /// The scores are those of the last `window` items sorted, whatever the window and
        /// however often it wrapped.
        #[test]
        fn scores_are_the_sorted_windows_statistics(
            window in 1usize..40,
            evaluate_every in 1u64..10,
            values in proptest::collection::vec(-6i32..6, 1..120),
        ) {
            // Few distinct values, so that ties and values between the reference's occur.
            let row = |v: i32, shift: usize| -> [f64; FEATURES] {
                std::array::from_fn(|f| f64::from(v + (f + shift) as i32 % 3) / 2.0)
            };
            let reference: Vec<_> = (-4..4).flat_map(|v| [row(v, 0), row(v, 1)]).collect();
            let config = FeatureDriftConfig {
                window,
                evaluate_every,
                ..FeatureDriftConfig::default()
            };
            let mut drift = FeatureDrift::new(&reference, DIABETES_FEATURE_NAMES, config);
            let pushed: Vec<_> = values.iter().enumerate().map(|(i, &v)| row(v, i)).collect();
            for (count, features) in (1u64..).zip(&pushed) {
                drift.push(features);
                if count < window as u64 || count % evaluate_every != 0 {
                    continue;
                }
                let recent = &pushed[count as usize - window..count as usize];
                for (feature, score) in drift.scores().iter().enumerate() {
                    let column = |rows: &[[f64; FEATURES]]| {
                        let mut column: Vec<f64> = rows.iter().map(|r| r[feature]).collect();
                        column.sort_unstable_by(f64::total_cmp);
                        column
                    };
                    let expected = ks_statistic(&column(recent), &column(&reference));
                    prop_assert_eq!(score.statistic.to_bits(), expected.to_bits());
                }
            }
        }
    }
}
