/// The queue names of one pipeline.
///
/// Every name is the seed's name with the pipeline's prefix in front, so that several
/// pipelines (or test runs) can share one broker without seeing each other's messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueNames {
    /// Feature vectors, from `features` to `model`.
    pub features: String,
    /// True values, from `features` to `metric`.
    pub y_true: String,
    /// Predictions, from `model` to `metric`.
    pub y_pred: String,
    /// Messages that could not be processed, with the reason in a header.
    pub dead_letter: String,
}

impl QueueNames {
    /// The names for a pipeline whose queues start with `prefix` (may be empty).
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            features: format!("{prefix}features"),
            y_true: format!("{prefix}y_true"),
            y_pred: format!("{prefix}y_pred"),
            dead_letter: format!("{prefix}dead_letter"),
        }
    }

    /// All four names, for declaring or deleting the whole topology.
    pub fn all(&self) -> [&str; 4] {
        [
            &self.features,
            &self.y_true,
            &self.y_pred,
            &self.dead_letter,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_prefix_gives_the_seed_names() {
        let names = QueueNames::with_prefix("");
        assert_eq!(names.all(), ["features", "y_true", "y_pred", "dead_letter"]);
    }

    #[test]
    fn prefix_is_prepended_to_every_name() {
        let names = QueueNames::with_prefix("run42.");
        assert!(names.all().iter().all(|n| n.starts_with("run42.")));
    }
}
