//! PNG charts of a run: stacked line panels (training curves from `metrics.jsonl`) and grouped bars
//! (per-task gains of base, SFT and RL models).
//!
//! Text is drawn with DejaVu Sans, embedded from `train/assets` and registered with plotters'
//! `ab_glyph` backend on first use, so a machine without system fonts (a fresh CI runner) draws the
//! same image. Each chart is rendered in memory and written to a hidden sibling file that is then
//! renamed over the target, so a reader never sees half a PNG.

use crate::error::{Result, TrainError};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, FontTransform, register_font};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// One named line in a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend entry (shown when a panel has more than one series).
    pub name: String,
    /// `(x, y)` points in drawing order; non-finite points are skipped.
    pub points: Vec<(f64, f64)>,
}

/// The font family every text element uses; registered from the embedded TTF.
const FONT: &str = "mlagent-dejavu-sans";
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Line chart geometry: width, title band, one band per panel, footer with the shared x label.
const WIDTH: u32 = 900;
const TITLE_H: u32 = 40;
const PANEL_H: u32 = 260;
const FOOTER_H: u32 = 30;
/// Bar chart size and the legend band under its title.
const BAR_H: u32 = 500;
const LEGEND_H: u32 = 26;
/// Room left of a plot for tick labels and the rotated axis description.
const Y_AREA: u32 = 90;
/// Series with at most this many points also get a dot per point (a single point has no line).
const MARKER_MAX: usize = 40;
/// Category names longer than this are cut, ending in an ellipsis.
const LABEL_CHARS: usize = 18;

/// Colours in series/group order (matplotlib's tab10, which readers already know).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const GRID: RGBColor = RGBColor(225, 225, 225);
const FAINT: RGBColor = RGBColor(120, 120, 120);

type Root<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

/// Draws `panels` stacked vertically into one PNG of 900 × (70 + 260 per panel) pixels.
///
/// Each panel is `(y label, series)`: one line per series, a legend when there is more than one,
/// all panels sharing the x range and the `x_label` written once at the bottom. Non-finite points
/// are skipped; a panel without any point draws an empty frame saying "no data"; a constant series
/// gets a padded range. `path` must end in `.png`; its parent directories are created.
pub fn line_panels(path: &Path, title: &str, x_label: &str, panels: &[(String, Vec<Series>)]) -> Result<()> {
    if panels.is_empty() {
        return Err(TrainError::Plot(format!("{}: no panels to draw", path.display())));
    }
    let finite: Vec<Vec<Vec<(f64, f64)>>> = panels
        .iter()
        .map(|(_, series)| {
            series.iter().map(|s| s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect()).collect()
        })
        .collect();
    let x_range = padded(finite.iter().flatten().flatten().map(|p| p.0), 0.0);
    let n = panels.len() as u32;
    render(path, (WIDTH, TITLE_H + PANEL_H * n + FOOTER_H), |root| {
        draw_title(root, title)?;
        let (_, rest) = root.split_vertically(TITLE_H);
        let (body, footer) = rest.split_vertically(PANEL_H * n);
        for ((area, (name, series)), points) in body.split_evenly((panels.len(), 1)).iter().zip(panels).zip(&finite) {
            draw_panel(area, name, series, points, x_range.clone())?;
        }
        // Centred under the plots (which start after the y label area), not under the image.
        let centre = (Y_AREA as i32 + WIDTH as i32) / 2;
        footer.draw_text(x_label, &text(14).pos(Pos::new(HPos::Center, VPos::Center)), (centre, FOOTER_H as i32 / 2))?;
        Ok(())
    })
}

/// Plots columns of a JSONL metrics file: one panel per `y_keys` entry against `x_key`.
///
/// Each non-blank line must be a JSON object; a point is taken from every line where both keys
/// hold numbers. Errors name the file and the 1-based line.
pub fn metrics_panels(metrics_jsonl: &Path, x_key: &str, y_keys: &[&str], out: &Path, title: &str) -> Result<()> {
    let text = std::fs::read_to_string(metrics_jsonl).map_err(|e| TrainError::io(metrics_jsonl, e))?;
    let mut columns: Vec<Vec<(f64, f64)>> = vec![Vec::new(); y_keys.len()];
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let data_err = |message: String| TrainError::Data { path: metrics_jsonl.to_path_buf(), line: i + 1, message };
        let value: serde_json::Value =
            serde_json::from_str(line).map_err(|e| data_err(format!("not valid JSON ({e}); want one object per line")))?;
        let serde_json::Value::Object(record) = value else {
            return Err(data_err("not a JSON object; want one flat object per line".into()));
        };
        let Some(x) = record.get(x_key).and_then(serde_json::Value::as_f64) else { continue };
        for (column, key) in columns.iter_mut().zip(y_keys) {
            if let Some(y) = record.get(*key).and_then(serde_json::Value::as_f64) {
                column.push((x, y));
            }
        }
    }
    let panels: Vec<(String, Vec<Series>)> = y_keys
        .iter()
        .zip(columns)
        .map(|(key, points)| (key.to_string(), vec![Series { name: key.to_string(), points }]))
        .collect();
    line_panels(out, title, x_key, &panels)
}

/// Draws a grouped bar chart into a 900 × 500 PNG: per category one bar per group, in group order.
///
/// `groups` are `(legend name, one value per category)`; values may be negative (bars hang from
/// the zero line) and non-finite values leave a gap. Category names longer than 18 characters are
/// cut, and the labels turn vertical when they do not fit side by side.
pub fn grouped_bars(path: &Path, title: &str, y_label: &str, categories: &[String], groups: &[(String, Vec<f64>)]) -> Result<()> {
    if categories.is_empty() || groups.is_empty() {
        return Err(TrainError::Plot(format!("{}: a bar chart needs at least one category and one group", path.display())));
    }
    if let Some((name, values)) = groups.iter().find(|(_, v)| v.len() != categories.len()) {
        return Err(TrainError::Plot(format!(
            "{}: group {name:?} has {} values for {} categories",
            path.display(),
            values.len(),
            categories.len()
        )));
    }
    let values = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite());
    let y_range = bar_range(values);
    let labels: Vec<String> = categories.iter().map(|c| truncate(c, LABEL_CHARS)).collect();
    render(path, (WIDTH, BAR_H), |root| {
        draw_title(root, title)?;
        draw_legend(root, groups)?;
        let label_style = text(12);
        let mut widest = 0;
        for label in &labels {
            widest = widest.max(root.estimate_text_size(label, &label_style)?.0);
        }
        // Approximate plot width: the whole image less the y label area and the chart margins.
        let slot = (WIDTH - Y_AREA - 30) / categories.len() as u32;
        let vertical = widest + 6 > slot;
        let x_area = if vertical { widest + 14 } else { 28 };
        let (_, rest) = root.split_vertically(TITLE_H + LEGEND_H);
        let n = categories.len() as f64;
        let mut chart = ChartBuilder::on(&rest)
            .margin(10)
            .margin_right(20)
            .x_label_area_size(x_area)
            .y_label_area_size(Y_AREA)
            .build_cartesian_2d(0.0..n, y_range.clone())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .bold_line_style(GRID)
            .light_line_style(WHITE)
            .label_style(text(12))
            .axis_desc_style(text(14))
            .y_desc(y_label)
            .y_label_formatter(&|v| tick(*v, &y_range))
            .draw()?;
        // Bars fill 80% of each category's unit slot, split evenly among the groups.
        let width = 0.8 / groups.len() as f64;
        for (g, (_, values)) in groups.iter().enumerate() {
            let color = COLORS[g % COLORS.len()];
            chart.draw_series(values.iter().enumerate().filter(|(_, v)| v.is_finite()).map(|(i, &v)| {
                let x0 = i as f64 + 0.1 + g as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width * 0.9, v)], color.filled())
            }))?;
        }
        chart.draw_series(LineSeries::new([(0.0, 0.0), (n, 0.0)], BLACK.stroke_width(1)))?;
        for (i, label) in labels.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, y_range.start));
            let style = if vertical {
                label_style.transform(FontTransform::Rotate90).pos(Pos::new(HPos::Left, VPos::Center))
            } else {
                label_style.pos(Pos::new(HPos::Center, VPos::Top))
            };
            root.draw_text(label, &style, (x, y + 6))?;
        }
        Ok(())
    })
}

/// One panel: its series on a shared x range, or an empty frame with "no data".
fn draw_panel(area: &Root, name: &str, series: &[Series], points: &[Vec<(f64, f64)>], x_range: Range<f64>) -> DrawResult {
    let empty = points.iter().all(Vec::is_empty);
    let y_range = if empty { 0.0..1.0 } else { padded(points.iter().flatten().map(|p| p.1), 0.05) };
    let (x_fmt, y_fmt) = (|v: &f64| tick(*v, &x_range), |v: &f64| tick(*v, &y_range));
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .margin_right(20)
        .x_label_area_size(24)
        .y_label_area_size(Y_AREA)
        .build_cartesian_2d(x_range.clone(), y_range.clone())?;
    chart
        .configure_mesh()
        .bold_line_style(GRID)
        .light_line_style(WHITE)
        .label_style(text(12))
        .axis_desc_style(text(14))
        .y_desc(name)
        .x_labels(8)
        .y_labels(if empty { 0 } else { 6 })
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .draw()?;
    if empty {
        let frame = [(x_range.start, 0.0), (x_range.end, 1.0)];
        chart.plotting_area().draw(&Rectangle::new(frame, FAINT.stroke_width(1)))?;
        let centre = ((x_range.start + x_range.end) / 2.0, 0.5);
        let style = text(16).color(&FAINT).pos(Pos::new(HPos::Center, VPos::Center));
        chart.plotting_area().draw(&Text::new("no data", centre, style))?;
    }
    for (i, (s, pts)) in series.iter().zip(points).enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line = chart.draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))?;
        if series.len() > 1 {
            line.label(s.name.as_str()).legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        if pts.len() <= MARKER_MAX {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
        }
    }
    if series.len() > 1 {
        chart
            .configure_series_labels()
            .label_font(text(12))
            .background_style(WHITE.mix(0.85))
            .border_style(GRID)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
    }
    Ok(())
}

/// The chart title, centred in the top band.
fn draw_title(root: &Root, title: &str) -> DrawResult {
    let style = text(20).pos(Pos::new(HPos::Center, VPos::Center));
    root.draw_text(title, &style, (WIDTH as i32 / 2, TITLE_H as i32 / 2))?;
    Ok(())
}

/// A centred row of colour swatches and group names under the title (outside the plot, so it
/// never hides a bar).
fn draw_legend(root: &Root, groups: &[(String, Vec<f64>)]) -> DrawResult {
    const SWATCH: i32 = 12;
    const GAP: i32 = 20;
    let style = text(13).pos(Pos::new(HPos::Left, VPos::Center));
    let mut widths = Vec::with_capacity(groups.len());
    for (name, _) in groups {
        widths.push(root.estimate_text_size(name, &style)?.0 as i32);
    }
    let total: i32 = widths.iter().map(|w| SWATCH + 4 + w).sum::<i32>() + GAP * (groups.len() as i32 - 1);
    let mut x = (WIDTH as i32 - total).max(0) / 2;
    let y = (TITLE_H + LEGEND_H / 2) as i32;
    for (g, ((name, _), w)) in groups.iter().zip(widths).enumerate() {
        let color = COLORS[g % COLORS.len()];
        root.draw(&Rectangle::new([(x, y - SWATCH / 2), (x + SWATCH, y + SWATCH / 2)], color.filled()))?;
        root.draw_text(name, &style, (x + SWATCH + 4, y))?;
        x += SWATCH + 4 + w + GAP;
    }
    Ok(())
}

/// Renders into a hidden `.png` sibling of `path` and renames it over `path` once complete.
fn render(path: &Path, size: (u32, u32), draw: impl FnOnce(&Root) -> DrawResult) -> Result<()> {
    ensure_font()?;
    let is_png = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("png"));
    let (Some(file_name), true) = (path.file_name(), is_png) else {
        return Err(TrainError::Plot(format!("{}: want a file name ending in .png", path.display())));
    };
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    // The backend picks the encoder from the extension, so the temporary name ends in .png too.
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let tmp: PathBuf = parent.join(format!(
        ".{}.{}-{}.tmp.png",
        file_name.to_string_lossy(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let drawn = (|| -> DrawResult {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
        Ok(())
    })();
    let saved = drawn
        .map_err(|e| TrainError::Plot(format!("{}: {e}", path.display())))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e)));
    if saved.is_err() {
        // The drawing or rename error is what the caller needs; a leftover temporary is secondary.
        let _ = std::fs::remove_file(&tmp);
    }
    saved
}

/// Registers the embedded font once per process.
fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    if *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok()) {
        Ok(())
    } else {
        Err(TrainError::Plot("the embedded DejaVu Sans font could not be parsed".into()))
    }
}

/// The text style of every label, at `size` pixels.
fn text(size: u32) -> TextStyle<'static> {
    TextStyle::from((FONT, size).into_font()).color(&BLACK)
}

/// `[min, max]` of `values` widened by `frac` of the span on each side; a constant (or empty)
/// input gets a range around it so that the line sits mid-panel instead of on an edge.
fn padded(values: impl Iterator<Item = f64>, frac: f64) -> Range<f64> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return 0.0..1.0;
    }
    let span = hi - lo;
    // Spans below 1e-9 of the magnitude are rounding noise of a constant series.
    if span > 1e-9 * lo.abs().max(hi.abs()) {
        return (lo - frac * span)..(hi + frac * span);
    }
    let centre = (lo + hi) / 2.0;
    let pad = if centre == 0.0 { 1.0 } else { centre.abs() * 0.1 };
    (centre - pad)..(centre + pad)
}

/// The y range of a bar chart: always contains zero, padded away from it.
fn bar_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi - lo == 0.0 {
        return -1.0..1.0;
    }
    let pad = 0.08 * (hi - lo);
    (if lo < 0.0 { lo - pad } else { 0.0 })..(if hi > 0.0 { hi + pad } else { 0.0 })
}

/// A tick label on an axis spanning `range`: about five significant digits, trailing zeros
/// trimmed; scientific on every tick when the axis is very small or very large (learning rates),
/// so that one axis never mixes `0.001` with `8.0e-4`.
fn tick(v: f64, range: &Range<f64>) -> String {
    let scale = range.start.abs().max(range.end.abs());
    let a = v.abs();
    if a < 1e-12 * scale.max(1e-300) {
        return "0".into();
    }
    if !(1e-2..1e5).contains(&scale) {
        return format!("{v:.1e}");
    }
    let decimals = (4 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// `name` cut to `max` characters, the last one an ellipsis.
fn truncate(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_string();
    }
    let mut cut: String = name.chars().take(max - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PNG signature, then the IHDR width and height (big-endian, bytes 16..24).
    fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
        let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
        (word(16), word(20))
    }

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series { name: name.into(), points: points.to_vec() }
    }

    #[test]
    fn line_panels_stacks_panels_with_legend_constant_and_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/dir/curves.png");
        let panels = vec![
            (
                "reward".to_string(),
                vec![
                    series("sft", &[(0.0, 0.1), (1.0, f64::NAN), (2.0, 0.4), (f64::INFINITY, 1.0)]),
                    series("rl", &[(0.0, -0.2), (1.0, 0.3), (2.0, 0.9)]),
                ],
            ),
            ("constant".to_string(), vec![series("c", &[(0.0, 2.5), (2.0, 2.5)])]),
            ("empty".to_string(), vec![series("e", &[(1.0, f64::NAN)])]),
        ];
        line_panels(&path, "run", "step", &panels).unwrap();
        assert_eq!(png_size(&path), (900, 40 + 3 * 260 + 30));
        // Only the target is left in the directory: the temporary was renamed.
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        assert!(line_panels(&dir.path().join("c.png"), "t", "x", &[]).is_err());
        assert!(line_panels(&dir.path().join("curves.svg"), "t", "x", &panels).unwrap_err().to_string().contains(".png"));
    }

    #[test]
    fn metrics_panels_reads_jsonl_and_names_bad_lines() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.jsonl");
        let text = "{\"step\":1,\"loss\":2.0,\"lr\":1e-4,\"grad_norm\":3.0}\n\n{\"step\":2,\"loss\":1.5,\"lr\":2e-4}\n";
        std::fs::write(&metrics, text).unwrap();
        let out = dir.path().join("curves.png");
        metrics_panels(&metrics, "step", &["loss", "lr", "grad_norm", "missing"], &out, "sft").unwrap();
        assert_eq!(png_size(&out), (900, 40 + 4 * 260 + 30));

        std::fs::write(&metrics, format!("{text}{{\"step\": 3, \"loss\"\n")).unwrap();
        let e = metrics_panels(&metrics, "step", &["loss"], &out, "sft").unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl:4:"), "{e}");
        std::fs::write(&metrics, "[1, 2]\n").unwrap();
        let e = metrics_panels(&metrics, "step", &["loss"], &out, "sft").unwrap_err().to_string();
        assert!(e.contains("metrics.jsonl:1:") && e.contains("object"), "{e}");
    }

    #[test]
    fn grouped_bars_draws_negative_values_and_long_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gains.png");
        let categories: Vec<String> =
            ["cifar10", "a-very-long-held-out-task-name", "house-prices"].iter().map(|s| s.to_string()).collect();
        let groups = vec![
            ("base".to_string(), vec![0.1, -0.25, 0.0]),
            ("sft".to_string(), vec![0.3, 0.05, f64::NAN]),
            ("rl".to_string(), vec![0.45, 0.2, -0.1]),
        ];
        grouped_bars(&path, "relative gain", "gain", &categories, &groups).unwrap();
        assert_eq!(png_size(&path), (900, 500));
        // Many categories turn the labels vertical.
        let many: Vec<String> = (0..30).map(|i| format!("task-number-{i}")).collect();
        let one = vec![("base".to_string(), (0..30).map(|i| i as f64 - 10.0).collect())];
        grouped_bars(&path, "many", "gain", &many, &one).unwrap();
        assert_eq!(png_size(&path), (900, 500));
        let short = vec![("base".to_string(), vec![1.0])];
        let e = grouped_bars(&path, "t", "y", &categories, &short).unwrap_err().to_string();
        assert!(e.contains("\"base\" has 1 values for 3 categories"), "{e}");
    }

    #[test]
    fn ranges_pad_constants_and_keep_zero_for_bars() {
        assert_eq!(padded([2.0, 2.0].into_iter(), 0.05), 1.8..2.2);
        assert_eq!(padded([0.0].into_iter(), 0.05), -1.0..1.0);
        assert_eq!(padded(std::iter::empty(), 0.05), 0.0..1.0);
        assert_eq!(padded([0.0, 10.0].into_iter(), 0.1), -1.0..11.0);
        assert_eq!(bar_range([0.0].into_iter()), -1.0..1.0);
        assert_eq!(bar_range([1.0, 2.0].into_iter()).start, 0.0);
        assert_eq!(bar_range([-1.0, -2.0].into_iter()).end, 0.0);
        let lr = 0.0..1e-3;
        assert_eq!((tick(1e-3, &lr), tick(2e-4, &lr), tick(0.0, &lr)), ("1.0e-3".into(), "2.0e-4".into(), "0".into()));
        assert_eq!(tick(2.35, &(0.0..3.0)), "2.35");
        assert_eq!(tick(1500.0, &(0.0..2000.0)), "1500");
        assert_eq!(truncate("a-very-long-held-out-task-name", 18).chars().count(), 18);
    }
}
