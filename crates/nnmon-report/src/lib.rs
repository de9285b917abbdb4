//! What `plot` draws: the error-distribution chart as PNG bytes.
//!
//! # Layout
//! - [`chart`]: renders a [`ChartData`] — the histogram of the absolute error read off the
//!   quantile sketch ([`nnmon_stats::ErrorStats::histogram`]), the statistics of every row
//!   and of the last rows, and when they were computed — to PNG bytes with `plotters`,
//!   using the DejaVu Sans font embedded in the binary (containers have no system fonts).
//! - [`timeline`]: line charts over a run's seconds in stacked panels, with marked
//!   moments (`nnmon scenario run`'s rate, latency and MAE charts).
//! - [`format_utc`] and [`group_thousands`]: how times and counts are written for people.
//!
//! Data flows `ErrorStats` → [`ChartData`] → `chart::render_png` → PNG bytes.

pub mod chart;
mod text;
pub mod timeline;

pub use chart::ChartData;
pub use text::{format_utc, group_thousands};
