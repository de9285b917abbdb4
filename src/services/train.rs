//! `nnmon train`: fits OLS on all 442 diabetes rows and writes the coefficients JSON.

use crate::cli::TrainArgs;
use anyhow::{Context, Result};
use nnmon_model::{diabetes, train::fit_ols};
use tracing::info;

pub fn run(args: TrainArgs) -> Result<()> {
    let model = fit_ols(diabetes()).context("fitting the model")?;
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    model.save(&args.output)?;
    info!(path = %args.output.display(), intercept = model.intercept, rows = diabetes().len(), "model written");
    Ok(())
}
