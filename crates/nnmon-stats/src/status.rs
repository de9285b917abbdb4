//! The status files the services write beside the metric log and `plot` reads.

use serde::{Deserialize, Serialize};

/// `model` writes [`FeatureDriftReport`] here, in the log folder.
pub const FEATURE_DRIFT_FILE: &str = "feature_drift.json";
/// `metric` writes [`MetricStatus`] here, in the log folder.
pub const METRIC_STATUS_FILE: &str = "metric_status.json";

/// An alarm of a drift detector raised or cleared.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DriftFlip {
    /// The feature's name, or `"absolute_error"` for the error alarm.
    pub subject: String,
    /// `true`: raised; `false`: cleared.
    pub alarm: bool,
    /// The item (1-based, counting every item pushed) at which it happened.
    pub item: u64,
}

/// One feature's drift test at the last evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureScore {
    pub name: String,
    /// The two-sample Kolmogorov–Smirnov statistic (0 = same distribution, 1 = disjoint).
    pub statistic: f64,
    pub p_value: f64,
    pub alarm: bool,
}

/// Input drift as `model` last evaluated it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureDriftReport {
    /// When it was written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    /// Items seen.
    pub items: u64,
    /// Recent items each test compares with the reference.
    pub window: usize,
    /// Empty until the window has filled once.
    pub features: Vec<FeatureScore>,
}

/// The error detector's state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDriftScore {
    pub alarm: bool,
    /// The CUSUM as a fraction of its alarm threshold ([`crate::ErrorDrift::score`]).
    pub score: f64,
}

/// The join's health and the error alarm as `metric` last reported them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricStatus {
    /// When it was written, in milliseconds since the Unix epoch.
    pub updated_ms: u64,
    pub rows: u64,
    pub duplicates: u64,
    pub orphans: u64,
    pub waiting_truths: u64,
    pub waiting_predictions: u64,
    pub dead_lettered: u64,
    pub error_drift: ErrorDriftScore,
}

impl MetricStatus {
    /// The status of a sharded pipeline from its shards' (`None` when none reported): the
    /// counts added up, the error alarm raised if any shard raised it (the score the
    /// highest), and the time the oldest one's, so that a stale shard shows.
    pub fn merge<'a>(shards: impl IntoIterator<Item = &'a MetricStatus>) -> Option<Self> {
        shards.into_iter().fold(None, |merged, shard| {
            Some(match merged {
                None => shard.clone(),
                Some(merged) => Self {
                    updated_ms: merged.updated_ms.min(shard.updated_ms),
                    rows: merged.rows + shard.rows,
                    duplicates: merged.duplicates + shard.duplicates,
                    orphans: merged.orphans + shard.orphans,
                    waiting_truths: merged.waiting_truths + shard.waiting_truths,
                    waiting_predictions: merged.waiting_predictions + shard.waiting_predictions,
                    dead_lettered: merged.dead_lettered + shard.dead_lettered,
                    error_drift: ErrorDriftScore {
                        alarm: merged.error_drift.alarm || shard.error_drift.alarm,
                        score: merged.error_drift.score.max(shard.error_drift.score),
                    },
                },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn status() -> impl Strategy<Value = MetricStatus> {
        (
            (0..1u64 << 40, 0..1u64 << 30, 0..1u64 << 20, 0..1u64 << 20),
            (0..1u64 << 20, 0..1u64 << 20, 0..1u64 << 20),
            (any::<bool>(), 0.0..2.0f64),
        )
            .prop_map(
                |((updated_ms, rows, duplicates, orphans), waiting, drift)| MetricStatus {
                    updated_ms,
                    rows,
                    duplicates,
                    orphans,
                    waiting_truths: waiting.0,
                    waiting_predictions: waiting.1,
                    dead_lettered: waiting.2,
                    error_drift: ErrorDriftScore {
                        alarm: drift.0,
                        score: drift.1,
                    },
                },
            )
    }

    #[test]
    fn no_shard_no_status() {
        assert_eq!(MetricStatus::merge([]), None);
    }

    proptest! {
        /// Merging is the same in any order and in any grouping, one shard is itself,
        /// and the counts are the shards' sums.
        #[test]
        fn merging_shards_adds_their_counts_in_any_order(
            shards in proptest::collection::vec(status(), 1..6),
            split in 0..6usize,
        ) {
            let merged = MetricStatus::merge(&shards).expect("some");
            prop_assert_eq!(MetricStatus::merge(&shards[..1]).expect("one"), shards[0].clone());
            let reversed: Vec<_> = shards.iter().rev().cloned().collect();
            prop_assert_eq!(MetricStatus::merge(&reversed).expect("some"), merged.clone());
            let split = split.min(shards.len() - 1).max(1).min(shards.len());
            let parts: Vec<MetricStatus> = [&shards[..split], &shards[split..]]
                .into_iter()
                .filter_map(MetricStatus::merge)
                .collect();
            prop_assert_eq!(MetricStatus::merge(&parts).expect("some"), merged.clone());
            prop_assert_eq!(merged.rows, shards.iter().map(|s| s.rows).sum::<u64>());
            prop_assert_eq!(
                merged.error_drift.alarm,
                shards.iter().any(|s| s.error_drift.alarm)
            );
            prop_assert_eq!(
                merged.updated_ms,
                shards.iter().map(|s| s.updated_ms).min().expect("some")
            );
        }
    }
}
