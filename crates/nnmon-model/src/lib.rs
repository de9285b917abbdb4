//! The data set nnmon streams and the model it serves.
//!
//! # Layout
//! - [`dataset`]: the scikit-learn diabetes data set (442 scaled samples, 10 features each),
//!   embedded in the binary so that `features` needs no files at run time.
//! - [`LinearModel`]: intercept + coefficients, loaded from and saved to a JSON artifact;
//!   [`LinearModel::predict`] is what `model` runs for every message.
//! - [`train::fit_ols`]: ordinary least squares with `linfa-linear`, used by `nnmon train` to
//!   produce the default artifact, `models/ols.json`, embedded as [`LinearModel::default_ols`].
//!
//! Data flows dataset → `fit_ols` → JSON artifact → `LinearModel::predict`.

pub mod dataset;
mod linear;
pub mod train;

pub use dataset::{Sample, diabetes};
pub use linear::{LinearModel, ModelError};
