//! SVG line charts for benchmark reports: panels stacked vertically over one shared x axis
//! (time, usually), each with its own y axis and any number of series.
//!
//! plotters without its font features: the SVG backend writes `<text>` elements and leaves
//! the glyphs to the viewer, so no font files are needed at build or run time.

use std::path::Path;

use plotters::prelude::*;

/// One line: `(x, y)` points in x order.
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
}

/// One chart: a title, a y-axis description and its lines.
pub struct Panel {
    pub title: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 300;

/// Writes `panels`, top to bottom, to an SVG file at `path`; every panel spans the same x
/// range (the union of all points), described by `x_label`.
pub fn write_svg(path: &Path, x_label: &str, panels: &[Panel]) -> Result<(), String> {
    let all = || {
        panels
            .iter()
            .flat_map(|p| &p.series)
            .flat_map(|s| &s.points)
    };
    let (x0, x1) = bounds(all().map(|p| p.0));
    let root = SVGBackend::new(path, (WIDTH, PANEL_HEIGHT * panels.len().max(1) as u32))
        .into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    for (area, panel) in root.split_evenly((panels.len(), 1)).iter().zip(panels) {
        draw_panel(area, panel, x_label, x0..x1).map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
    x_label: &str,
    x: std::ops::Range<f64>,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    // y starts at 0 so growth reads as a proportion; headroom above the highest point keeps
    // the legend (top right) off the lines.
    let (_, top) = bounds(panel.series.iter().flat_map(|s| &s.points).map(|p| p.1));
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(x, 0.0..top * 1.3)?;
    chart
        .configure_mesh()
        .x_label_formatter(&|x| format!("{x:.0}"))
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .draw()?;
    for (i, series) in panel.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(
                series.points.iter().copied(),
                color.stroke_width(2),
            ))?
            .label(&series.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
}

/// (min, max) of `values`, widened to a non-empty range (plotters needs one).
fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        (0.0, 1.0)
    } else if lo == hi {
        (lo, hi + 1.0)
    } else {
        (lo, hi)
    }
}
