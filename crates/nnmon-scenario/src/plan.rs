//! The load's schedule: when each item is due (open loop: the schedule never waits for the
//! pipeline), and what the drift injections do to an item.

use crate::schema::{Change, Drift};
use nnmon_model::Sample;
use nnmon_stats::FEATURES;
use std::time::Duration;

/// A run of items at one rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// Items per second.
    pub rate: f64,
    /// Items in the step (`u64::MAX`: forever).
    pub items: u64,
}

/// Steps one after another; item `i` (0-based) is due at its step's start plus its place
/// in the step over the step's rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    steps: Vec<Step>,
}

impl Plan {
    pub fn new(steps: Vec<Step>) -> Self {
        Self { steps }
    }

    /// `rate` items per second, `count` of them (`None`: forever).
    pub fn constant(rate: f64, count: Option<u64>) -> Self {
        Self::new(vec![Step {
            rate,
            items: count.unwrap_or(u64::MAX),
        }])
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Items in all (`u64::MAX` or more: forever).
    pub fn items(&self) -> u64 {
        self.steps
            .iter()
            .fold(0u64, |sum, step| sum.saturating_add(step.items))
    }

    /// Each step's first item and start time, in seconds.
    fn starts(&self) -> impl Iterator<Item = (&Step, u64, f64)> {
        let (mut item, mut time) = (0u64, 0.0f64);
        self.steps.iter().map(move |step| {
            let start = (step, item, time);
            item = item.saturating_add(step.items);
            time += step.items as f64 / step.rate;
            start
        })
    }

    /// How long the whole load takes to be sent on schedule.
    pub fn duration(&self) -> Duration {
        let seconds: f64 = self
            .steps
            .iter()
            .map(|step| step.items as f64 / step.rate)
            .sum();
        Duration::try_from_secs_f64(seconds).unwrap_or(Duration::MAX)
    }

    /// When item `index` is due, after the load's start.
    pub fn due(&self, index: u64) -> Duration {
        let mut last = None;
        for (step, first, start) in self.starts() {
            if index < first.saturating_add(step.items) {
                let seconds = start + (index - first) as f64 / step.rate;
                return Duration::from_secs_f64(seconds);
            }
            last = Some((step, first, start));
        }
        // Past the end: as if the last step went on. A plan without steps sends nothing:
        // no item is ever due (`Duration::MAX`: adding it to an instant would panic, so
        // callers saturate, as features' clock does).
        let Some((step, first, start)) = last else {
            return Duration::MAX;
        };
        Duration::try_from_secs_f64(start + (index - first) as f64 / step.rate)
            .unwrap_or(Duration::MAX)
    }

    /// Items due strictly before `at` (so also the index of the first item due at or after).
    pub fn due_before(&self, at: Duration) -> u64 {
        let seconds = at.as_secs_f64();
        let mut due = 0;
        for (step, first, start) in self.starts() {
            if seconds <= start {
                break;
            }
            // An estimate, then settled against `due` itself so that the two agree
            // whatever the rounding.
            let mut within = (((seconds - start) * step.rate).ceil() as u64).min(step.items);
            while within > 0 && self.due(first + within - 1) >= at {
                within -= 1;
            }
            while within < step.items && self.due(first + within) < at {
                within += 1;
            }
            due = first.saturating_add(within);
        }
        due
    }

    /// The first item due at or after `at`.
    pub fn item_at(&self, at: Duration) -> u64 {
        self.due_before(at)
    }

    /// The step item `index` belongs to (the last one past the end). A plan without steps
    /// has none: 0 then names no step, and callers must not index with it (the schema
    /// refuses such a plan; only tests build one).
    pub fn step_of(&self, index: u64) -> usize {
        self.starts()
            .position(|(step, first, _)| index < first.saturating_add(step.items))
            .unwrap_or(self.steps.len().saturating_sub(1))
    }

    /// Each step's start and end, after the load's start.
    pub fn step_times(&self) -> Vec<(Duration, Duration)> {
        self.starts()
            .map(|(step, _, start)| {
                let end = start + step.items as f64 / step.rate;
                (Duration::from_secs_f64(start), Duration::from_secs_f64(end))
            })
            .collect()
    }
}

/// Means and standard deviations of the data set, which injections are measured in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataStats {
    pub feature_mean: [f64; FEATURES],
    pub feature_sd: [f64; FEATURES],
    pub target_sd: f64,
}

fn mean_sd(values: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = values.clone().count().max(1) as f64;
    let mean = values.clone().sum::<f64>() / n;
    let variance = values.map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    (mean, variance.sqrt())
}

impl DataStats {
    pub fn of(samples: &[Sample]) -> Self {
        let mut feature_mean = [0.0; FEATURES];
        let mut feature_sd = [0.0; FEATURES];
        for feature in 0..FEATURES {
            (feature_mean[feature], feature_sd[feature]) =
                mean_sd(samples.iter().map(|s| s.features[feature]));
        }
        let (_, target_sd) = mean_sd(samples.iter().map(|s| s.target));
        Self {
            feature_mean,
            feature_sd,
            target_sd,
        }
    }
}

/// The injections `features` applies: those that change items (a model swap is the
/// runner's), in item order.
#[derive(Clone, Debug, PartialEq)]
pub struct Injector {
    drifts: Vec<Drift>,
    stats: DataStats,
}

impl Injector {
    pub fn new(drifts: &[Drift], stats: DataStats) -> Self {
        let drifts = drifts
            .iter()
            .filter(|d| !matches!(d.change, Change::Model { .. }))
            .cloned()
            .collect();
        Self { drifts, stats }
    }

    /// Item `index` made from `sample`, with every injection due by then applied.
    pub fn apply(&self, index: u64, sample: &Sample) -> Sample {
        let mut item = *sample;
        let stats = &self.stats;
        for drift in self.drifts.iter().take_while(|d| d.item <= index) {
            match drift.change {
                Change::Shift { feature, sd } => {
                    item.features[feature] += sd * stats.feature_sd[feature];
                }
                Change::Scale { feature, factor } => {
                    let mean = stats.feature_mean[feature];
                    item.features[feature] = mean + factor * (item.features[feature] - mean);
                }
                Change::Label { sd } => item.target += sd * stats.target_sd,
                Change::Model { .. } => {}
            }
        }
        item
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn two_steps() -> Plan {
        Plan::new(vec![
            Step {
                rate: 10.0,
                items: 20,
            },
            Step {
                rate: 100.0,
                items: 100,
            },
        ])
    }

    #[test]
    fn items_are_due_on_their_steps_schedule() {
        let plan = two_steps();
        assert_eq!(plan.items(), 120);
        assert_eq!(plan.duration(), Duration::from_secs(3));
        assert_eq!(plan.due(0), Duration::ZERO);
        assert_eq!(plan.due(19), Duration::from_millis(1900));
        assert_eq!(plan.due(20), Duration::from_secs(2));
        assert_eq!(plan.due(70), Duration::from_millis(2500));
        assert_eq!(plan.step_of(19), 0);
        assert_eq!(plan.step_of(20), 1);
        assert_eq!(plan.due_before(Duration::from_secs(2)), 20);
        assert_eq!(plan.due_before(Duration::from_secs(60)), 120);
        assert_eq!(plan.due_before(Duration::ZERO), 0);
    }

    proptest! {
        #[test]
        fn the_item_at_a_time_is_the_first_due_then(millis in 0u64..3000) {
            let plan = two_steps();
            let at = Duration::from_millis(millis);
            let item = plan.item_at(at);
            prop_assert!(plan.due(item) >= at);
            if item > 0 {
                prop_assert!(plan.due(item - 1) < at);
            }
        }

        #[test]
        fn due_times_never_go_back(index in 0u64..200) {
            let plan = two_steps();
            prop_assert!(plan.due(index) <= plan.due(index + 1));
        }
    }

    #[test]
    fn an_empty_plan_has_nothing_due() {
        let plan = Plan::new(vec![]);
        assert_eq!(plan.items(), 0);
        assert_eq!(plan.due(0), Duration::MAX);
        assert_eq!(plan.due_before(Duration::from_secs(5)), 0);
        assert_eq!(plan.duration(), Duration::ZERO);
        assert_eq!(plan.step_of(3), 0);
    }

    #[test]
    fn injections_apply_from_their_item_on() {
        let samples = nnmon_model::diabetes();
        let stats = DataStats::of(samples);
        let drifts = [
            Drift {
                item: 10,
                change: Change::Shift {
                    feature: 2,
                    sd: 2.0,
                },
            },
            Drift {
                item: 20,
                change: Change::Label { sd: -1.0 },
            },
        ];
        let injector = Injector::new(&drifts, stats);
        let sample = samples[0];
        assert_eq!(injector.apply(9, &sample), sample);
        let shifted = injector.apply(10, &sample);
        assert!(
            (shifted.features[2] - sample.features[2] - 2.0 * stats.feature_sd[2]).abs() < 1e-12
        );
        assert_eq!(shifted.target, sample.target);
        let both = injector.apply(25, &sample);
        assert!((both.target - sample.target + stats.target_sd).abs() < 1e-9);
        // The data set is scaled: every feature has the same spread.
        assert!((stats.feature_sd[0] - stats.feature_sd[9]).abs() < 1e-6);
    }

    #[test]
    fn scaling_keeps_the_mean() {
        let samples = nnmon_model::diabetes();
        let stats = DataStats::of(samples);
        let injector = Injector::new(
            &[Drift {
                item: 0,
                change: Change::Scale {
                    feature: 3,
                    factor: 3.0,
                },
            }],
            stats,
        );
        let scaled: Vec<Sample> = samples.iter().map(|s| injector.apply(0, s)).collect();
        let after = DataStats::of(&scaled);
        assert!((after.feature_mean[3] - stats.feature_mean[3]).abs() < 1e-9);
        assert!((after.feature_sd[3] - 3.0 * stats.feature_sd[3]).abs() < 1e-9);
    }
}
