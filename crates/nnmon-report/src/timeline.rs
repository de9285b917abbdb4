//! Line charts over a run's seconds, stacked in panels that share the time axis, with
//! vertical marks at moments (a fault, an injection): the charts of `nnmon scenario run`.

use crate::chart::{ChartError, FONT, draw_error, ensure_font};
use plotters::prelude::*;

const WIDTH: u32 = 1000;
const PANEL_HEIGHT: u32 = 300;
const TITLE_HEIGHT: u32 = 40;
const COLOURS: [RGBColor; 4] = [
    RGBColor(70, 110, 190),
    RGBColor(200, 30, 30),
    RGBColor(40, 150, 70),
    RGBColor(120, 60, 160),
];
const MARK: RGBColor = RGBColor(150, 150, 150);

/// One line: its name in the key and its `(second, value)` points.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel: a y axis and its lines.
#[derive(Clone, Debug)]
pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
}

/// A moment marked across every panel, with a short label.
#[derive(Clone, Debug)]
pub struct Mark {
    pub second: f64,
    pub label: String,
}

/// Renders `panels` over `seconds` of time to PNG bytes.
pub fn render_timeline(
    title: &str,
    seconds: f64,
    panels: &[Panel],
    marks: &[Mark],
) -> Result<Vec<u8>, ChartError> {
    ensure_font()?;
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels.len().max(1) as u32;
    let mut rgb = vec![255u8; (WIDTH * height * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let (header, body) = root.split_vertically(TITLE_HEIGHT);
        header
            .draw(&Text::new(
                title.to_owned(),
                (20, 10),
                TextStyle::from((FONT, 22).into_font()).color(&BLACK),
            ))
            .map_err(draw_error)?;
        let areas = body.split_evenly((panels.len().max(1), 1));
        for (panel, area) in panels.iter().zip(&areas) {
            draw_panel(area, panel, seconds.max(1.0), marks)?;
        }
        root.present().map_err(draw_error)?;
    }
    encode_png(&rgb, WIDTH, height)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    seconds: f64,
    marks: &[Mark],
) -> Result<(), ChartError> {
    let top = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let top = if top > 0.0 { top * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..seconds, 0.0..top)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(panel.y_label.as_str())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_error)?;
    for mark in marks {
        chart
            .draw_series(LineSeries::new(
                [(mark.second, 0.0), (mark.second, top)],
                MARK.stroke_width(2),
            ))
            .map_err(draw_error)?;
        chart
            .draw_series([Text::new(
                mark.label.clone(),
                (mark.second, top * 0.97),
                TextStyle::from((FONT, 13).into_font()).color(&MARK),
            )])
            .map_err(draw_error)?;
    }
    for (index, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        chart
            .draw_series(LineSeries::new(
                series.points.iter().copied().filter(|p| p.1.is_finite()),
                colour.stroke_width(2),
            ))
            .map_err(draw_error)?
            .label(series.name.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(draw_error)?;
    }
    Ok(())
}

fn encode_png(rgb: &[u8], width: u32, height: u32) -> Result<Vec<u8>, ChartError> {
    let mut png_bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut png_bytes, width, height);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.write_header()?.write_image_data(rgb)?;
    Ok(png_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeline_renders_to_a_png_of_one_panel_height_each() {
        let series = Series {
            name: "rate".into(),
            points: (0..30).map(|s| (f64::from(s), f64::from(s % 7))).collect(),
        };
        let panels = [
            Panel {
                y_label: "items/s".into(),
                series: vec![series.clone()],
            },
            Panel {
                y_label: "ms".into(),
                series: vec![series],
            },
        ];
        let marks = [Mark {
            second: 10.0,
            label: "sigkill metric".into(),
        }];
        let png = render_timeline("test", 30.0, &panels, &marks).expect("rendered");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let height = u32::from_be_bytes(png[20..24].try_into().expect("4 bytes"));
        assert_eq!(height, TITLE_HEIGHT + 2 * PANEL_HEIGHT);
    }
}
