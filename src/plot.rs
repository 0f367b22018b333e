//! Line charts as SVG and PNG: the curves of a run (`curves.svg`, `curves.png`) and
//! `shears plot`.
//!
//! Drawn with `plotters` (pure Rust, no C libraries), text laid out with `ab_glyph` in the
//! Hack font embedded by `epaint_default_fonts` (no system fonts needed), PNGs encoded with
//! `png`. Every chart also carries its data: in an SVG, a `<metadata id="shears-data">`
//! element holds the plotted series as JSON; in a PNG, an iTXt chunk with the keyword
//! `shears-data` holds the same JSON; so a file can be checked (and re-plotted) without
//! reading pixels.

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

impl Series {
    /// The points that can be drawn (both coordinates finite), in order.
    fn finite_points(&self) -> Vec<(f64, f64)> {
        self.points
            .iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    }
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

/// The keyword of the PNG text chunk (and the id of the SVG element) holding the data.
pub const DATA_KEY: &str = "shears-data";

/// Registers the embedded font as plotters' `sans-serif` (once per process).
fn register_font() -> Result<(), PlotError> {
    static REGISTERED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::HACK_REGULAR,
        )
        .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(draw_err("the embedded font could not be read"))
    }
}

/// Width of a figure and height of each of its panels, in pixels.
const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 260;

fn figure_height(panels: &[Panel]) -> u32 {
    PANEL_HEIGHT * panels.len().max(1) as u32
}

/// Draws the panels, stacked, on `root`.
fn draw_figure<DB: DrawingBackend>(
    root: DrawingArea<DB, plotters::coord::Shift>,
    panels: &[Panel],
) -> Result<(), PlotError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(draw_err)?;
    let areas = root.split_evenly((panels.len().max(1), 1));
    for (area, panel) in areas.iter().zip(panels) {
        draw_panel(area, panel)?;
    }
    root.present().map_err(draw_err)
}

/// The panels, stacked, as a PNG image (960 px wide, 260 px per panel), with the plotted
/// series as JSON in an iTXt chunk keyed [`DATA_KEY`].
pub fn render_png(panels: &[Panel]) -> Result<Vec<u8>, PlotError> {
    register_font()?;
    let (w, h) = (WIDTH, figure_height(panels));
    let mut rgb = vec![0u8; (w * h * 3) as usize];
    draw_figure(
        BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area(),
        panels,
    )?;
    let data = serde_json::to_string(panels).expect("panels serialise");
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, w, h);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.add_itxt_chunk(DATA_KEY.to_string(), data)
            .map_err(draw_err)?;
        let mut writer = enc.write_header().map_err(draw_err)?;
        writer.write_image_data(&rgb).map_err(draw_err)?;
        writer.finish().map_err(draw_err)?;
    }
    Ok(out)
}

/// The panels, stacked, as an SVG document (960 px wide, 260 px per panel).
pub fn render_svg(panels: &[Panel]) -> Result<String, PlotError> {
    register_font()?;
    let mut svg = String::new();
    {
        let root =
            SVGBackend::with_string(&mut svg, (WIDTH, figure_height(panels))).into_drawing_area();
        draw_figure(root, panels)?;
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
        &format!("<metadata id=\"{DATA_KEY}\">{escaped}</metadata>\n"),
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
    // Small values (learning rates) in scientific notation: plotters' own labels would
    // print `0.00001` for every tick of a 1e-5 .. 2e-5 axis.
    let small = y0.abs().max(y1.abs()) < 1e-2;
    let y_tick = |v: &f64| {
        if small {
            format!("{v:.2e}")
        } else {
            format!("{}", (v * 1e4).round() / 1e4)
        }
    };
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .y_label_formatter(&y_tick)
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
        let points = s.finite_points();
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
        let position = match emptiest_corner(panel, (x0, x1), (y0, y1)) {
            Corner::UpperLeft => SeriesLabelPosition::UpperLeft,
            Corner::UpperRight => SeriesLabelPosition::UpperRight,
            Corner::LowerLeft => SeriesLabelPosition::LowerLeft,
            Corner::LowerRight => SeriesLabelPosition::LowerRight,
        };
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(draw_err)?;
    }
    Ok(())
}

/// A corner of a chart's plotting area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Corner {
    UpperLeft,
    UpperRight,
    LowerLeft,
    LowerRight,
}

/// The corner where the legend hides the fewest points: each corner's box (the outer 45 %
/// of each axis) counts the points inside it, and also the points along the straight
/// segments of each line (sampled), so that a line crossing a corner counts there; ties
/// go in the order upper right, upper left, lower right, lower left.
fn emptiest_corner(panel: &Panel, (x0, x1): (f64, f64), (y0, y1): (f64, f64)) -> Corner {
    let (w, h) = (
        (x1 - x0).max(f64::MIN_POSITIVE),
        (y1 - y0).max(f64::MIN_POSITIVE),
    );
    let mut counts = [0usize; 4];
    let corners = [
        Corner::UpperRight,
        Corner::UpperLeft,
        Corner::LowerRight,
        Corner::LowerLeft,
    ];
    let mut count = |x: f64, y: f64| {
        let (u, v) = ((x - x0) / w, (y - y0) / h);
        for (n, c) in counts.iter_mut().zip(corners) {
            let inside = match c {
                Corner::UpperRight => u > 0.55 && v > 0.55,
                Corner::UpperLeft => u < 0.45 && v > 0.55,
                Corner::LowerRight => u > 0.55 && v < 0.45,
                Corner::LowerLeft => u < 0.45 && v < 0.45,
            };
            *n += usize::from(inside);
        }
    };
    for s in &panel.series {
        let pts = s.finite_points();
        for &(x, y) in &pts {
            count(x, y);
        }
        if !s.points_only {
            for seg in pts.windows(2) {
                let ((xa, ya), (xb, yb)) = (seg[0], seg[1]);
                for k in 1..8 {
                    let t = f64::from(k) / 8.0;
                    count(xa + t * (xb - xa), ya + t * (yb - ya));
                }
            }
        }
    }
    let best = (0..4).min_by_key(|&i| counts[i]).unwrap_or(0);
    corners[best]
}

/// Renders the panels into `path` (written atomically) as SVG.
pub fn write_svg(path: &Path, panels: &[Panel]) -> Result<(), PlotError> {
    let svg = render_svg(panels)?;
    write_atomic(path, svg.as_bytes())?;
    Ok(())
}

/// Renders the panels into `path` (written atomically) as PNG.
pub fn write_png(path: &Path, panels: &[Panel]) -> Result<(), PlotError> {
    let png = render_png(panels)?;
    write_atomic(path, &png)?;
    Ok(())
}

/// The image formats a chart is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartFormat {
    /// SVG (vector, with the data in a `<metadata>` element).
    Svg,
    /// PNG (raster, with the data in an iTXt chunk).
    Png,
}

impl ChartFormat {
    /// The format named by `path`'s extension (`.svg` or `.png`, any case), or `None`.
    pub fn of(path: &Path) -> Option<Self> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "svg" => Some(Self::Svg),
            "png" => Some(Self::Png),
            _ => None,
        }
    }
}

/// Renders the panels into `path` in `format` (written atomically).
pub fn write_chart(path: &Path, format: ChartFormat, panels: &[Panel]) -> Result<(), PlotError> {
    match format {
        ChartFormat::Svg => write_svg(path, panels),
        ChartFormat::Png => write_png(path, panels),
    }
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

    fn panel(series: Vec<Series>) -> Panel {
        Panel {
            title: String::new(),
            x_label: String::new(),
            y_label: String::new(),
            series,
            markers: Vec::new(),
        }
    }

    fn line(points: &[(f64, f64)]) -> Series {
        Series {
            label: "s".into(),
            points: points.to_vec(),
            points_only: false,
        }
    }

    #[test]
    fn the_legend_goes_where_the_lines_are_not() {
        // Accuracy falling with sparsity (a one-shot curve): high on the left, low on the
        // right; the lower left is empty.
        let falling = panel(vec![line(&[
            (0.0, 0.9),
            (50.0, 0.88),
            (80.0, 0.8),
            (90.0, 0.5),
        ])]);
        assert_eq!(
            emptiest_corner(&falling, (0.0, 90.0), (0.5, 0.9)),
            Corner::LowerLeft
        );
        // A falling loss: high on the left only at the start, low afterwards; the upper
        // right is empty (and is also first among ties).
        let loss = panel(vec![line(&[(0.0, 2.0), (10.0, 0.5), (100.0, 0.3)])]);
        assert_eq!(
            emptiest_corner(&loss, (0.0, 100.0), (0.3, 2.0)),
            Corner::UpperRight
        );
        // A rising accuracy: the upper left and lower right are empty; upper left wins
        // over lower right by the tie order.
        let rising = panel(vec![line(&[(0.0, 0.5), (100.0, 0.9)])]);
        assert_eq!(
            emptiest_corner(&rising, (0.0, 100.0), (0.5, 0.9)),
            Corner::UpperLeft
        );
        // No points at all: the first corner.
        assert_eq!(
            emptiest_corner(&panel(vec![]), (0.0, 1.0), (0.0, 1.0)),
            Corner::UpperRight
        );
    }
}
