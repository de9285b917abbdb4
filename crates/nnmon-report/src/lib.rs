//! What `plot` draws: error statistics, a histogram, and the PNG chart.
//!
//! # Layout
//! - [`ErrorSummary`]: accumulates absolute errors as rows arrive (O(log n) per row) and
//!   answers count, MAE, RMSE, median and the histogram without rescanning old rows.
//! - [`Histogram`]: equal-width binning of the errors between their minimum and maximum.
//! - [`chart`]: renders a summary and its histogram to PNG bytes with `plotters`, using the
//!   DejaVu Sans font embedded in the binary (containers have no system fonts).
//!
//! Data flows errors → `ErrorSummary::extend` → `ErrorSummary::histogram` → `chart::render_png`.

pub mod chart;
mod histogram;
mod summary;

pub use histogram::Histogram;
pub use summary::ErrorSummary;
