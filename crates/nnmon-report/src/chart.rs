//! The error-distribution chart as PNG bytes.

use crate::ErrorSummary;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};
use std::sync::OnceLock;

/// Number of bins the chart shows.
pub const BINS: usize = 30;
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 600;
const FONT: &str = "sans-serif";

/// Why the chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("the embedded font could not be loaded")]
    Font,
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("PNG encoding failed: {0}")]
    Encode(#[from] png::EncodingError),
}

fn draw_error<E: std::fmt::Debug>(error: E) -> ChartError {
    ChartError::Draw(format!("{error:?}"))
}

fn ensure_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if *ok { Ok(()) } else { Err(ChartError::Font) }
}

/// The chart's title: row count, MAE and RMSE.
pub fn title(summary: &ErrorSummary) -> String {
    match (summary.mae(), summary.rmse()) {
        (Some(mae), Some(rmse)) => format!(
            "Absolute error distribution: {} rows, MAE {mae:.2}, RMSE {rmse:.2}",
            summary.count()
        ),
        _ => "Absolute error distribution: no rows yet".to_owned(),
    }
}

/// Renders the histogram of `summary`'s errors, its mean and median, to PNG bytes.
pub fn render_png(summary: &mut ErrorSummary) -> Result<Vec<u8>, ChartError> {
    ensure_font()?;
    let histogram = summary.histogram().clone();
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let y_max = (histogram.max_count() as f64 * 1.1).max(1.0);
        let mut chart = ChartBuilder::on(&root)
            .caption(title(summary), (FONT, 24))
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(histogram.start..histogram.end(), 0.0..y_max)
            .map_err(draw_error)?;
        chart
            .configure_mesh()
            .x_desc("absolute error |y_true - y_pred|")
            .y_desc("rows")
            .y_label_formatter(&|y| format!("{y:.0}"))
            .disable_x_mesh()
            .label_style((FONT, 14))
            .draw()
            .map_err(draw_error)?;
        chart
            .draw_series(histogram.bins().map(|(left, right, count)| {
                Rectangle::new([(left, 0.0), (right, count as f64)], BLUE.mix(0.6).filled())
            }))
            .map_err(draw_error)?;
        chart
            .draw_series(histogram.bins().map(|(left, right, count)| {
                Rectangle::new([(left, 0.0), (right, count as f64)], WHITE.stroke_width(1))
            }))
            .map_err(draw_error)?;
        let markers = [
            ("mean", summary.mae(), RED),
            ("median", summary.median(), BLACK),
        ];
        for (name, value, colour) in markers {
            let Some(x) = value else { continue };
            chart
                .draw_series(LineSeries::new(
                    [(x, 0.0), (x, y_max)],
                    colour.stroke_width(2),
                ))
                .map_err(draw_error)?
                .label(format!("{name} {x:.2}"))
                .legend(move |(lx, ly)| {
                    PathElement::new([(lx, ly), (lx + 20, ly)], colour.stroke_width(3))
                });
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
        root.present().map_err(draw_error)?;
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&rgb)?;
    Ok(png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

    #[test]
    fn renders_a_png_with_and_without_rows() {
        let empty = render_png(&mut ErrorSummary::new(BINS)).expect("renders");
        assert!(empty.starts_with(PNG_SIGNATURE));
        let mut summary = ErrorSummary::new(BINS);
        summary.extend((0..500).map(|i| f64::from(i % 97)));
        let png = render_png(&mut summary).expect("renders");
        assert!(png.starts_with(PNG_SIGNATURE));
        assert_ne!(png, empty);
    }

    #[test]
    fn title_names_rows_mae_and_rmse() {
        let mut summary = ErrorSummary::new(BINS);
        summary.extend([1.0, 3.0]);
        assert_eq!(
            title(&summary),
            "Absolute error distribution: 2 rows, MAE 2.00, RMSE 2.24"
        );
    }
}
