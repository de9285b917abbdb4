//! Fitting the linear model (`nnmon train`).

use crate::{LinearModel, Sample};
use linfa::prelude::*;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use nnmon_proto::FEATURE_COUNT;

/// Why a fit failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("cannot fit a model on {0} samples; at least {min} are needed", min = FEATURE_COUNT + 1)]
    TooFewSamples(usize),
    #[error("least squares failed: {0}")]
    Solver(String),
}

/// Ordinary least squares with an intercept, as scikit-learn's `LinearRegression`.
pub fn fit_ols(samples: &[Sample]) -> Result<LinearModel, TrainError> {
    if samples.len() <= FEATURE_COUNT {
        return Err(TrainError::TooFewSamples(samples.len()));
    }
    let records = Array2::from_shape_fn((samples.len(), FEATURE_COUNT), |(row, col)| {
        samples[row].features[col]
    });
    let targets: Array1<f64> = samples.iter().map(|s| s.target).collect();
    let fitted = LinearRegression::new()
        .fit(&Dataset::new(records, targets))
        .map_err(|e| TrainError::Solver(e.to_string()))?;
    let mut coefficients = [0.0; FEATURE_COUNT];
    for (slot, value) in coefficients.iter_mut().zip(fitted.params()) {
        *slot = *value;
    }
    Ok(LinearModel {
        intercept: fitted.intercept(),
        coefficients,
        fitted_by: Some("ordinary least squares (linfa-linear), nnmon train".into()),
        training_rows: Some(samples.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diabetes;

    #[test]
    fn fit_on_all_rows_reproduces_the_shipped_artifact() {
        let fitted = fit_ols(diabetes()).expect("fit");
        let shipped = LinearModel::default_ols().expect("valid");
        assert!((fitted.intercept - shipped.intercept).abs() < 1e-9);
        for (a, b) in fitted.coefficients.iter().zip(shipped.coefficients) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn fit_on_441_rows_is_told_apart() {
        // The linfa-datasets loader's row loss shows up as this intercept (NOTES.md).
        let fitted = fit_ols(&diabetes()[1..]).expect("fit");
        assert!((fitted.intercept - 152.2604).abs() < 1e-3);
    }

    #[test]
    fn refuses_too_few_samples() {
        assert!(matches!(
            fit_ols(&diabetes()[..5]),
            Err(TrainError::TooFewSamples(5))
        ));
    }
}
