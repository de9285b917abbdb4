//! The error-distribution chart as PNG bytes.
//!
//! The header carries everything written (title, statistics, the key of the marker lines),
//! so no label ever sits on top of a bar or a line in the plot below it.

use crate::{format_utc, group_thousands};
use nnmon_stats::{ErrorStats, Histogram, RegressionStats};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};
use std::sync::OnceLock;

/// At most this many histogram bins (fewer when a round bin width covers the errors).
pub const BINS: usize = 30;
const WIDTH: u32 = 1000;
const HEIGHT: u32 = 600;
const HEADER: u32 = 100;
pub(crate) const FONT: &str = "sans-serif";
const MEAN_COLOUR: RGBColor = RGBColor(200, 30, 30);
const MEDIAN_COLOUR: RGBColor = RGBColor(20, 20, 20);
const BAR_COLOUR: RGBColor = RGBColor(70, 110, 190);
const QUIET: RGBColor = RGBColor(110, 110, 110);

/// What the chart shows.
#[derive(Clone, Copy, Debug)]
pub struct ChartData<'a> {
    /// The absolute errors of every row, binned from 0.
    pub histogram: &'a Histogram,
    /// Statistics of every row; `None` before the first.
    pub total: Option<&'a RegressionStats>,
    /// Statistics of the last `window_size` rows.
    pub window: Option<&'a RegressionStats>,
    pub window_size: usize,
    /// When the statistics were computed, in ms since the Unix epoch.
    pub updated_ms: u64,
    /// For a sharded pipeline: how many shards sent rows, and how many there are.
    pub shards: Option<(u16, u16)>,
}

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

pub(crate) fn draw_error<E: std::fmt::Debug>(error: E) -> ChartError {
    ChartError::Draw(format!("{error:?}"))
}

pub(crate) fn ensure_font() -> Result<(), ChartError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = REGISTERED
        .get_or_init(|| register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if *ok { Ok(()) } else { Err(ChartError::Font) }
}

/// The chart's title: what is plotted, over how many rows, and when.
pub fn title(data: &ChartData) -> String {
    let mut rows = match data.total {
        Some(total) => format!("{} rows", group_thousands(total.count)),
        None => "no rows yet".to_owned(),
    };
    if let Some((reported, shards)) = data.shards {
        rows += &format!(" from {reported} of {shards} shards");
    }
    format!(
        "Absolute error |y_pred − y_true|: {rows}, updated {}",
        format_utc(data.updated_ms)
    )
}

/// The statistics line under the title: the window's, then every row's.
pub fn statistics_line(data: &ChartData) -> Option<String> {
    let total = data.total?;
    let window = data.window.map(|w| {
        format!(
            "last {} rows: MAE {:.2}, RMSE {:.2}, bias {:+.2}   ·   ",
            group_thousands(w.count.min(data.window_size as u64)),
            w.mae,
            w.rmse,
            w.bias
        )
    });
    Some(format!(
        "{}all rows: MAE {:.2}, RMSE {:.2}, bias {:+.2}, p90 {:.2}",
        window.unwrap_or_default(),
        total.mae,
        total.rmse,
        total.bias,
        total.p90
    ))
}

/// A tick label with no needless decimals: `20`, `2.5`, `0.05`, never "20.0".
fn tick_label(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

fn text_style(size: u32, colour: &'static RGBColor) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(colour)
}

/// Renders the chart to PNG bytes.
pub fn render_png(data: &ChartData) -> Result<Vec<u8>, ChartError> {
    ensure_font()?;
    let mut rgb = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, body) = root.split_vertically(HEADER);
        draw_header(&header, data)?;
        match data.total {
            Some(total) if data.histogram.total() > 0 => draw_histogram(&body, data, total)?,
            _ => {
                let style = TextStyle::from((FONT, 28).into_font())
                    .color(&QUIET)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let (w, h) = body.dim_in_pixel();
                body.draw(&Text::new(
                    "No rows yet: waiting for the metric log",
                    (w as i32 / 2, h as i32 / 2),
                    style,
                ))
                .map_err(draw_error)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, WIDTH, HEIGHT);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(&rgb)?;
    Ok(png_bytes)
}

/// Renders the chart of `stats` as of `updated_ms`.
pub fn render_stats(stats: &ErrorStats, updated_ms: u64) -> Result<Vec<u8>, ChartError> {
    let histogram = stats.histogram(BINS);
    let (total, window) = (stats.total(), stats.window());
    render_png(&ChartData {
        histogram: &histogram,
        total: total.as_ref(),
        window: window.as_ref(),
        window_size: stats.window_size(),
        updated_ms,
        shards: None,
    })
}

fn draw_header<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    data: &ChartData,
) -> Result<(), ChartError> {
    area.draw(&Text::new(title(data), (20, 12), text_style(22, &BLACK)))
        .map_err(draw_error)?;
    let Some(line) = statistics_line(data) else {
        return Ok(());
    };
    area.draw(&Text::new(line, (20, 44), text_style(16, &QUIET)))
        .map_err(draw_error)?;
    let Some(total) = data.total else {
        return Ok(());
    };
    // The key of the marker lines, here rather than over the plot.
    let mut x = 20;
    for (name, value, colour, dashed) in [
        ("mean (MAE)", total.mae, MEAN_COLOUR, false),
        ("median", total.p50, MEDIAN_COLOUR, true),
    ] {
        let y = 80;
        let style = colour.stroke_width(3);
        if dashed {
            for start in (x..x + 28).step_by(8) {
                area.draw(&PathElement::new([(start, y), (start + 4, y)], style))
                    .map_err(draw_error)?;
            }
        } else {
            area.draw(&PathElement::new([(x, y), (x + 28, y)], style))
                .map_err(draw_error)?;
        }
        let label = format!("{name} {value:.2}");
        area.draw(&Text::new(
            label.clone(),
            (x + 36, y - 9),
            text_style(16, &BLACK),
        ))
        .map_err(draw_error)?;
        x += 36 + 9 * label.chars().count() as i32 + 30;
    }
    Ok(())
}

fn draw_histogram<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    data: &ChartData,
    total: &RegressionStats,
) -> Result<(), ChartError> {
    let histogram = data.histogram;
    let end = histogram.end();
    let y_max = (histogram.max_count() + histogram.max_count() / 10).max(1);
    let mut chart = ChartBuilder::on(area)
        .margin_left(20)
        .margin_right(30)
        .margin_bottom(10)
        .x_label_area_size(50)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..end, 0u64..y_max)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("absolute error |y_pred − y_true|")
        .y_desc("rows")
        .x_labels(12)
        .x_label_formatter(&|x| tick_label(*x))
        .y_label_formatter(&|y| group_thousands(*y))
        .disable_x_mesh()
        .light_line_style(WHITE)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(draw_error)?;
    chart
        .draw_series(histogram.bins().map(|(left, right, count)| {
            Rectangle::new([(left, 0), (right, count)], BAR_COLOUR.mix(0.75).filled())
        }))
        .map_err(draw_error)?;
    chart
        .draw_series(
            histogram
                .bins()
                .map(|(left, right, count)| Rectangle::new([(left, 0), (right, count)], WHITE)),
        )
        .map_err(draw_error)?;
    chart
        .draw_series(LineSeries::new(
            [(total.mae, 0), (total.mae, y_max)],
            MEAN_COLOUR.stroke_width(2),
        ))
        .map_err(draw_error)?;
    chart
        .draw_series(DashedLineSeries::new(
            [(total.p50, 0), (total.p50, y_max)],
            6,
            5,
            MEDIAN_COLOUR.stroke_width(2),
        ))
        .map_err(draw_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

    fn render(stats: &ErrorStats) -> Vec<u8> {
        render_stats(stats, 0).unwrap_or_else(|e| panic!("renders: {e}"))
    }

    #[test]
    fn renders_a_png_with_and_without_rows() {
        let empty = render(&ErrorStats::new(100, 0.0));
        assert!(empty.starts_with(PNG_SIGNATURE));
        let mut stats = ErrorStats::new(100, 0.0);
        (0..500).for_each(|i| stats.push(0.0, f64::from(i % 97)));
        let png = render(&stats);
        assert!(png.starts_with(PNG_SIGNATURE));
        assert_ne!(png, empty);
    }

    #[test]
    fn title_and_statistics_name_rows_window_and_time() {
        let mut stats = ErrorStats::new(1, 0.0);
        stats.push(0.0, 1.0);
        stats.push(0.0, -3.0);
        let histogram = stats.histogram(BINS);
        let (total, window) = (stats.total(), stats.window());
        let data = ChartData {
            histogram: &histogram,
            total: total.as_ref(),
            window: window.as_ref(),
            window_size: 1,
            updated_ms: 1_793_707_205_000,
            shards: None,
        };
        assert_eq!(
            title(&data),
            "Absolute error |y_pred − y_true|: 2 rows, updated 2026-11-03 12:00:05 UTC"
        );
        let sharded = ChartData {
            shards: Some((1, 2)),
            ..data
        };
        assert_eq!(
            title(&sharded),
            "Absolute error |y_pred − y_true|: 2 rows from 1 of 2 shards, updated 2026-11-03 12:00:05 UTC"
        );
        assert_eq!(
            statistics_line(&data).as_deref(),
            Some(
                "last 1 rows: MAE 3.00, RMSE 3.00, bias -3.00   ·   \
                 all rows: MAE 2.00, RMSE 2.24, bias -1.00, p90 3.00"
            )
        );
    }

    #[test]
    fn tick_labels_have_no_needless_decimals() {
        assert_eq!(tick_label(20.0), "20");
        assert_eq!(tick_label(0.0), "0");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(0.05), "0.05");
        assert_eq!(tick_label(300.0000000001), "300");
    }
}
