//! Judging a run: which alarms the injections explain and how late they came, whether
//! every confirmed item is exactly one row, and whether the hypothesis held.

use crate::schema::{Drift, Hypothesis};
use crate::summary::Latency;
use nnmon_stats::DIABETES_FEATURE_NAMES;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};

/// Which detector raised an alarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmKind {
    /// `model`'s input-drift test of one feature.
    FeatureDrift,
    /// `metric`'s CUSUM on the absolute error.
    ErrorDrift,
}

/// An alarm raised, at the item count of the pipeline it was raised at (1-based: after
/// that many items).
#[derive(Clone, Debug, PartialEq)]
pub struct Alarm {
    pub kind: AlarmKind,
    /// The feature, for [`AlarmKind::FeatureDrift`].
    pub feature: Option<String>,
    pub item: u64,
}

/// An alarm as `summary.json` reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScoredAlarm {
    pub kind: AlarmKind,
    pub feature: Option<String>,
    pub item: u64,
    /// Items from the injection that explains it to the alarm; `None` for a false alarm.
    pub detection_delay_items: Option<u64>,
}

/// What became of one injection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InjectionOutcome {
    pub item: u64,
    pub change: String,
    /// The first explained alarm's delay, if one came.
    pub detection_delay_items: Option<u64>,
}

/// The alarms scored against the injections.
#[derive(Clone, Debug, PartialEq)]
pub struct AlarmScore {
    pub alarms: Vec<ScoredAlarm>,
    pub false_alarms: u64,
    pub injections: Vec<InjectionOutcome>,
}

/// Whether `drift` explains `alarm`: a moved feature explains its own input-drift alarm
/// and the error alarm (the model sees inputs it was not fitted on); a moved label or a
/// swapped model explains only the error alarm.
fn explains(drift: &Drift, alarm: &Alarm) -> bool {
    match alarm.kind {
        AlarmKind::ErrorDrift => true,
        AlarmKind::FeatureDrift => drift.change.feature().is_some_and(|feature| {
            alarm.feature.as_deref() == Some(DIABETES_FEATURE_NAMES[feature])
        }),
    }
}

/// Attributes each alarm to the latest injection at or before it that explains it; an
/// alarm none explains is false.
pub fn score_alarms(drifts: &[Drift], alarms: &[Alarm]) -> AlarmScore {
    let mut injections: Vec<InjectionOutcome> = drifts
        .iter()
        .map(|d| InjectionOutcome {
            item: d.item,
            change: d.change.describe(),
            detection_delay_items: None,
        })
        .collect();
    let mut scored = Vec::new();
    let mut false_alarms = 0;
    for alarm in alarms {
        let cause = drifts
            .iter()
            .enumerate()
            .rev()
            .find(|(_, d)| d.item < alarm.item && explains(d, alarm));
        let delay = cause.map(|(index, drift)| {
            let delay = alarm.item - drift.item;
            let first = &mut injections[index].detection_delay_items;
            if first.is_none_or(|earlier| delay < earlier) {
                *first = Some(delay);
            }
            delay
        });
        if delay.is_none() {
            false_alarms += 1;
        }
        scored.push(ScoredAlarm {
            kind: alarm.kind,
            feature: alarm.feature.clone(),
            item: alarm.item,
            detection_delay_items: delay,
        });
    }
    AlarmScore {
        alarms: scored,
        false_alarms,
        injections,
    }
}

/// Confirmed IDs against logged rows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Delivery {
    /// Confirmed items with no row.
    pub missing: u64,
    /// Rows beyond the first of their ID.
    pub duplicated: u64,
    /// Rows of IDs features never had confirmed.
    pub unexpected: u64,
}

impl Delivery {
    pub fn exactly_once(&self) -> bool {
        self.missing == 0 && self.duplicated == 0 && self.unexpected == 0
    }
}

/// Compares the IDs features had confirmed with the IDs of the rows.
pub fn check_delivery<'a>(
    confirmed: impl IntoIterator<Item = &'a str>,
    rows: impl IntoIterator<Item = &'a str>,
) -> Delivery {
    let confirmed: HashSet<&str> = confirmed.into_iter().collect();
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for id in rows {
        *seen.entry(id).or_default() += 1;
    }
    Delivery {
        missing: confirmed
            .iter()
            .filter(|id| !seen.contains_key(*id))
            .count() as u64,
        duplicated: seen.values().map(|n| n - 1).sum(),
        unexpected: seen.keys().filter(|id| !confirmed.contains(*id)).count() as u64,
    }
}

/// What the run measured that the hypothesis speaks about.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed<'a> {
    pub delivery: &'a Delivery,
    pub score: &'a AlarmScore,
    pub dead_lettered: u64,
    /// The whole run's latency; `None` when no row had one.
    pub latency: Option<Latency>,
    /// Each load step's latency, in step order; `None` for a step no row with a latency
    /// came from.
    pub step_latency: Vec<Option<Latency>>,
}

/// Every way the run broke the hypothesis, as sentences; empty when it held.
pub fn check_hypothesis(hypothesis: &Hypothesis, observed: &Observed) -> Vec<String> {
    let mut failures = Vec::new();
    let delivery = observed.delivery;
    if hypothesis.exactly_once && !delivery.exactly_once() {
        failures.push(format!(
            "exactly_once: {} confirmed items without a row, {} duplicate rows, {} rows of unconfirmed items",
            delivery.missing, delivery.duplicated, delivery.unexpected
        ));
    }
    if let Some(within) = hypothesis.alarm_within_items {
        for injection in &observed.score.injections {
            match injection.detection_delay_items {
                Some(delay) if delay <= within => {}
                Some(delay) => failures.push(format!(
                    "alarm_within_items: the injection at item {} ({}) was detected after {delay} items, more than {within}",
                    injection.item, injection.change
                )),
                None => failures.push(format!(
                    "alarm_within_items: no alarm followed the injection at item {} ({})",
                    injection.item, injection.change
                )),
            }
        }
    }
    if observed.score.false_alarms > hypothesis.max_false_alarms {
        failures.push(format!(
            "max_false_alarms: {} false alarms, at most {} allowed",
            observed.score.false_alarms, hypothesis.max_false_alarms
        ));
    }
    if let Some(expected) = hypothesis.dead_lettered
        && observed.dead_lettered != expected
    {
        failures.push(format!(
            "dead_lettered: {} messages dead-lettered, {expected} expected",
            observed.dead_lettered
        ));
    }
    let mut targets = vec![(
        "p99_latency_ms".to_owned(),
        hypothesis.p99_latency_ms,
        observed.latency,
    )];
    for (i, target) in hypothesis.step_p99_latency_ms.iter().enumerate() {
        let latency = observed.step_latency.get(i).copied().flatten();
        targets.push((format!("load.steps[{i}].p99_latency_ms"), *target, latency));
    }
    for (key, target, latency) in targets {
        let Some(target) = target else { continue };
        match latency {
            Some(latency) if latency.p99 <= target => {}
            Some(latency) => failures.push(format!(
                "{key}: p99 latency {:.1} ms, more than {target} ms",
                latency.p99
            )),
            None => failures.push(format!(
                "{key}: no row with a latency to hold to {target} ms"
            )),
        }
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Change;

    fn feature_alarm(feature: &str, item: u64) -> Alarm {
        Alarm {
            kind: AlarmKind::FeatureDrift,
            feature: Some(feature.into()),
            item,
        }
    }

    #[test]
    fn alarms_are_scored_against_the_injection_that_explains_them() {
        let drifts = [Drift {
            item: 1000,
            change: Change::Shift {
                feature: 2,
                sd: 2.0,
            },
        }];
        let alarms = [
            feature_alarm("bp", 400),
            feature_alarm("bmi", 1350),
            feature_alarm("s1", 1400),
            Alarm {
                kind: AlarmKind::ErrorDrift,
                feature: None,
                item: 1200,
            },
        ];
        let score = score_alarms(&drifts, &alarms);
        let delays: Vec<_> = score
            .alarms
            .iter()
            .map(|a| a.detection_delay_items)
            .collect();
        assert_eq!(delays, [None, Some(350), None, Some(200)]);
        assert_eq!(score.false_alarms, 2);
        assert_eq!(score.injections[0].detection_delay_items, Some(200));
    }

    #[test]
    fn an_alarm_before_the_injection_is_false() {
        let drifts = [Drift {
            item: 1000,
            change: Change::Label { sd: 1.0 },
        }];
        let alarm = Alarm {
            kind: AlarmKind::ErrorDrift,
            feature: None,
            item: 999,
        };
        let score = score_alarms(&drifts, &[alarm]);
        assert_eq!(score.false_alarms, 1);
        assert_eq!(score.injections[0].detection_delay_items, None);
        let hypothesis = Hypothesis {
            alarm_within_items: Some(500),
            ..Hypothesis::default()
        };
        let failures = check_hypothesis(
            &hypothesis,
            &Observed {
                delivery: &Delivery::default(),
                score: &score,
                dead_lettered: 0,
                latency: None,
                step_latency: Vec::new(),
            },
        );
        assert_eq!(failures.len(), 2, "{failures:?}");
    }

    #[test]
    fn the_p99_targets_are_checked_and_no_latency_fails_them() {
        let whole = Hypothesis {
            p99_latency_ms: Some(10.0),
            ..Hypothesis::default()
        };
        // Each step is held to its own target, the whole run to none.
        let per_step = Hypothesis {
            step_p99_latency_ms: vec![Some(10.0), None, Some(10.0)],
            ..Hypothesis::default()
        };
        let score = score_alarms(&[], &[]);
        let judge = |hypothesis, latency, step_latency| {
            check_hypothesis(
                hypothesis,
                &Observed {
                    delivery: &Delivery::default(),
                    score: &score,
                    dead_lettered: 0,
                    latency,
                    step_latency,
                },
            )
        };
        let at = |p99| Latency {
            p50: 1.0,
            p90: 2.0,
            p99,
            max: 200.0,
        };
        assert!(judge(&whole, Some(at(10.0)), Vec::new()).is_empty());
        assert_eq!(
            judge(&whole, Some(at(12.5)), Vec::new()),
            ["p99_latency_ms: p99 latency 12.5 ms, more than 10 ms"]
        );
        assert_eq!(
            judge(&whole, None, Vec::new()),
            ["p99_latency_ms: no row with a latency to hold to 10 ms"]
        );
        let steps = vec![Some(at(9.0)), Some(at(150.0)), Some(at(12.5))];
        assert_eq!(
            judge(&per_step, Some(at(150.0)), steps),
            ["load.steps[2].p99_latency_ms: p99 latency 12.5 ms, more than 10 ms"]
        );
        assert_eq!(
            judge(&per_step, None, vec![Some(at(9.0)), None, None]),
            ["load.steps[2].p99_latency_ms: no row with a latency to hold to 10 ms"]
        );
    }

    #[test]
    fn delivery_counts_missing_duplicated_and_unexpected_rows() {
        let delivery = check_delivery(["a", "b", "c"], ["a", "b", "b", "d"]);
        assert_eq!(
            delivery,
            Delivery {
                missing: 1,
                duplicated: 1,
                unexpected: 1
            }
        );
        assert!(!delivery.exactly_once());
        assert!(check_delivery(["a", "b"], ["b", "a"]).exactly_once());
    }
}
