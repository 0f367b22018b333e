//! Line charts as SVG: the curves of a run (`curves.svg`) and `shears plot`.
//!
//! Drawn with `plotters`' SVG backend (pure Rust, no fonts or C libraries needed). Every
//! chart also carries its data: a `<metadata id="shears-data">` element holds the plotted
//! series as JSON, so a file can be checked (and re-plotted) without reading pixels.

use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::run_dir::{RunDirError, write_atomic};

/// A chart could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The drawing library failed.
    #[error("cannot draw the chart: {0}")]
    Draw(String),
    /// The file could not be written.
    #[error(transparent)]
    Write(#[from] RunDirError),
}

/// One line of a chart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// The legend entry.
    pub label: String,
    /// `(x, y)` points in drawing order; non-finite values are skipped when drawn.
    pub points: Vec<(f64, f64)>,
    /// Draw the points only, without the connecting line (e.g. 2:4 results next to a
    /// sparsity curve).
    pub points_only: bool,
}

/// One chart of a figure, with its axes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Panel {
    /// The title above the chart.
    pub title: String,
    /// The x axis' description.
    pub x_label: String,
    /// The y axis' description.
    pub y_label: String,
    /// The lines.
    pub series: Vec<Series>,
    /// x positions marked by a vertical grey line (pruning steps).
    pub markers: Vec<f64>,
}

/// The range of the finite values of `values`, widened a little (and made non-empty).
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        lo.abs().max(1.0) * 0.05
    };
    (lo - pad, hi + pad)
}

fn draw_err(e: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// The panels, stacked, as an SVG document (960 px wide, 260 px per panel).
pub fn render_svg(panels: &[Panel]) -> Result<String, PlotError> {
    let mut svg = String::new();
    {
        let height = 260 * panels.len().max(1) as u32;
        let root = SVGBackend::with_string(&mut svg, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let areas = root.split_evenly((panels.len().max(1), 1));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        root.present().map_err(draw_err)?;
    }
    let data = serde_json::to_string(panels).expect("panels serialise");
    let escaped = data
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let end = svg
        .rfind("</svg>")
        .ok_or_else(|| draw_err("no </svg> written"))?;
    svg.insert_str(
        end,
        &format!("<metadata id=\"shears-data\">{escaped}</metadata>\n"),
    );
    Ok(svg)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &Panel,
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    let xs = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(panel.markers.iter().copied());
    let (x0, x1) = range(xs);
    let (y0, y1) = range(
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1)),
    );
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(60)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .light_line_style(WHITE)
        .draw()
        .map_err(draw_err)?;
    let grey = RGBColor(170, 170, 170);
    for &m in &panel.markers {
        chart
            .draw_series(LineSeries::new([(m, y0), (m, y1)], grey.stroke_width(1)))
            .map_err(draw_err)?;
    }
    for (i, s) in panel.series.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let anno = if s.points_only {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(draw_err)?
        } else {
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(draw_err)?
        };
        anno.label(s.label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        if !s.points_only {
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 2, color.filled())))
                .map_err(draw_err)?;
        }
    }
    if !panel.series.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

/// Renders the panels into `path` (written atomically).
pub fn write_svg(path: &Path, panels: &[Panel]) -> Result<(), PlotError> {
    let svg = render_svg(panels)?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_padded_and_never_empty() {
        assert_eq!(range([1.0, 3.0].into_iter()), (0.9, 3.1));
        assert_eq!(range([2.0].into_iter()), (1.9, 2.1));
        assert_eq!(range([f64::NAN].into_iter()), (0.0, 1.0));
        assert_eq!(range(std::iter::empty()), (0.0, 1.0));
    }
}
