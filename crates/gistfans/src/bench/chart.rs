//! The sweep chart: page loads/s and p99 by concurrency, one line per mode.

use std::path::Path;

use plotters::prelude::*;

use super::{measures::Mode, report::ModeReport};

const MODES: [(Mode, RGBColor); 4] = [
    (Mode::Baseline, RED),
    (Mode::Optimized, BLUE),
    (Mode::Trivial, RGBColor(120, 120, 120)),
    (Mode::Ceiling, RGBColor(0, 150, 0)),
];

/// Draws `reports` to an SVG file.
pub fn draw(path: &Path, reports: &[ModeReport]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);
    let max_users = reports
        .iter()
        .map(|r| r.concurrency)
        .max()
        .unwrap_or(1)
        .max(2) as u32;
    panel(&left, reports, max_users, "page loads/s", |r| {
        r.page_loads_per_sec
    })?;
    panel(&right, reports, max_users, "p99 latency (ms)", |r| {
        r.latency_ms.p99
    })?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    reports: &[ModeReport],
    max_users: u32,
    title: &str,
    value: impl Fn(&ModeReport) -> f64,
) -> anyhow::Result<()> {
    let top = reports.iter().map(&value).fold(1.0f64, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{title} by virtual users"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d((1u32..max_users).log_scale(), (0.01f64..top).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("virtual users")
        .y_desc(title)
        .draw()?;
    for (mode, color) in MODES {
        let mut points: Vec<(u32, f64)> = reports
            .iter()
            // A mode that completed no page load has no throughput or
            // latency to draw (the table says so).
            .filter(|r| r.mode == mode && r.page_loads > 0)
            .map(|r| (r.concurrency as u32, value(r).max(0.01)))
            .collect();
        if points.is_empty() {
            continue;
        }
        points.sort_by_key(|p| p.0);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(format!("{mode:?}").to_lowercase())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}
