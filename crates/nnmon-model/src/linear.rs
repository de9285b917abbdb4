use nnmon_proto::FEATURE_COUNT;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The default model: OLS on all 442 diabetes rows, produced by `nnmon train`.
const DEFAULT_OLS_JSON: &str = include_str!("../../../models/ols.json");

/// Why a model artifact could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read model file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write model file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid model JSON")]
    Json(#[from] serde_json::Error),
    #[error("the model has a non-finite parameter")]
    NonFinite,
}

/// A linear model: `prediction = intercept + coefficients · features`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinearModel {
    pub intercept: f64,
    pub coefficients: [f64; FEATURE_COUNT],
    /// How the model was fitted (documentation for whoever reads the artifact).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fitted_by: Option<String>,
    /// How many rows the model was fitted on: 442 for the full diabetes data set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training_rows: Option<usize>,
}

impl LinearModel {
    /// The model embedded in the binary (`models/ols.json`).
    pub fn default_ols() -> Result<Self, ModelError> {
        Self::from_json(DEFAULT_OLS_JSON)
    }

    /// Parses and validates an artifact.
    pub fn from_json(json: &str) -> Result<Self, ModelError> {
        let model: Self = serde_json::from_str(json)?;
        let finite =
            model.intercept.is_finite() && model.coefficients.iter().all(|c| c.is_finite());
        if !finite {
            return Err(ModelError::NonFinite);
        }
        Ok(model)
    }

    /// Loads an artifact from a file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let json = std::fs::read_to_string(path).map_err(|source| ModelError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_json(&json)
    }

    /// The artifact as pretty JSON (floats in shortest round-trip form).
    pub fn to_json(&self) -> String {
        // A struct of finite floats and strings always serialises.
        serde_json::to_string_pretty(self).unwrap_or_default() + "\n"
    }

    /// Writes the artifact to a file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        std::fs::write(path, self.to_json()).map_err(|source| ModelError::Write {
            path: path.display().to_string(),
            source,
        })
    }

    /// The prediction for one feature vector.
    #[inline]
    pub fn predict(&self, features: &[f64; FEATURE_COUNT]) -> f64 {
        self.coefficients
            .iter()
            .zip(features)
            .fold(self.intercept, |acc, (c, x)| c.mul_add(*x, acc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diabetes;

    /// Reference OLS fit on all 442 rows (scikit-learn's `LinearRegression`), from NOTES.md.
    const REFERENCE_INTERCEPT: f64 = 152.1334841628966;
    const REFERENCE_COEFFICIENTS: [f64; FEATURE_COUNT] = [
        -10.009866299810652,
        -239.81564367242223,
        519.8459200544597,
        324.38464550232317,
        -792.17563855223,
        476.7390210052578,
        101.04326793803425,
        177.06323767134612,
        751.2736995571032,
        67.62669218370438,
    ];

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-6 * b.abs().max(1.0)
    }

    #[test]
    fn shipped_artifact_matches_the_reference_fit() {
        let model = LinearModel::default_ols().expect("models/ols.json is valid");
        assert_eq!(model.training_rows, Some(442));
        assert!(
            close(model.intercept, REFERENCE_INTERCEPT),
            "intercept {}",
            model.intercept
        );
        for (got, want) in model.coefficients.iter().zip(REFERENCE_COEFFICIENTS) {
            assert!(close(*got, want), "coefficient {got} vs {want}");
        }
    }

    #[test]
    fn shipped_artifact_has_the_reference_errors() {
        let model = LinearModel::default_ols().expect("models/ols.json is valid");
        let errors: Vec<f64> = diabetes()
            .iter()
            .map(|s| model.predict(&s.features) - s.target)
            .collect();
        let mae = errors.iter().map(|e| e.abs()).sum::<f64>() / errors.len() as f64;
        let rmse = (errors.iter().map(|e| e * e).sum::<f64>() / errors.len() as f64).sqrt();
        assert!((mae - 43.2775).abs() < 1e-4, "MAE {mae}");
        assert!((rmse - 53.4761).abs() < 1e-4, "RMSE {rmse}");
    }

    #[test]
    fn predict_is_intercept_plus_dot_product() {
        let mut coefficients = [0.0; FEATURE_COUNT];
        coefficients[0] = 2.0;
        coefficients[9] = -1.0;
        let model = LinearModel {
            intercept: 1.0,
            coefficients,
            fitted_by: None,
            training_rows: None,
        };
        let mut x = [0.0; FEATURE_COUNT];
        x[0] = 3.0;
        x[9] = 4.0;
        assert_eq!(model.predict(&x), 1.0 + 6.0 - 4.0);
    }

    #[test]
    fn rejects_bad_artifacts() {
        assert!(LinearModel::from_json("{}").is_err());
        assert!(LinearModel::from_json(r#"{"intercept": 1, "coefficients": [1, 2]}"#).is_err());
        let missing = LinearModel::load(Path::new("/nonexistent/model.json")).expect_err("missing");
        assert!(missing.to_string().contains("/nonexistent/model.json"));
    }

    #[test]
    fn json_round_trips_exactly() {
        let model = LinearModel::default_ols().expect("valid");
        assert_eq!(
            LinearModel::from_json(&model.to_json()).expect("valid"),
            model
        );
    }
}
