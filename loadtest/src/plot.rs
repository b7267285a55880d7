//! The run as one SVG (plotters, SVG backend only, no font or bitmap dependencies): four
//! panels on a shared time axis — latency percentiles, request rate, errors, and the
//! server's workers and queue — with the profile's phase boundaries drawn on each, so
//! a spike's cause (workers still starting) and effect (TTFT p95) line up by eye.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::report::Report;
use crate::timeline::Bucket;

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// One line: label, colour, points (a `None` y breaks the line).
struct Line {
    label: &'static str,
    color: RGBColor,
    points: Vec<(f64, Option<f64>)>,
}

/// Writes the plot of `r` to `path`.
pub fn write_svg(r: &Report, path: &Path) -> Result<(), String> {
    draw(r, path).map_err(|e| format!("plot {}: {e}", path.display()))
}

fn draw(r: &Report, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1200, 1400)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} → {}  ({} schedule, {} sent, {} ok, {} errors)",
        r.name, r.target, r.schedule.kind, r.totals.sent, r.totals.ok, r.totals.errors
    );
    let root = root.titled(&title, ("sans-serif", 20))?;
    let panels = root.split_evenly((4, 1));
    let tl = &r.timeline;
    let width = tl.get(1).map_or(1.0, |b| b.t) - tl.first().map_or(0.0, |b| b.t);
    let xmax = tl
        .last()
        .map_or(1.0, |b| b.t + width)
        .max(r.wall_s)
        .max(1.0);
    let mid = |b: &Bucket| b.t + width / 2.0;
    let series = |f: fn(&Bucket) -> Option<f64>| tl.iter().map(|b| (mid(b), f(b))).collect();
    let rate = |n: usize| Some(n as f64 / width);

    panel(
        &panels[0],
        "latency by intended send time (s)",
        xmax,
        r,
        vec![
            line("e2e p50", BLUE, series(|b| b.e2e_p50)),
            line("e2e p95", RGBColor(0, 150, 200), series(|b| b.e2e_p95)),
            line("e2e p99", RGBColor(120, 0, 200), series(|b| b.e2e_p99)),
            line("ttft p50", RGBColor(0, 160, 0), series(|b| b.ttft_p50)),
            line("ttft p95", RGBColor(230, 130, 0), series(|b| b.ttft_p95)),
        ],
    )?;
    panel(
        &panels[1],
        "requests per second",
        xmax,
        r,
        vec![
            line("target", RGBColor(150, 150, 150), series(|b| b.target_rps)),
            line(
                "arrivals",
                BLUE,
                tl.iter().map(|b| (mid(b), rate(b.arrivals))).collect(),
            ),
            line(
                "completed",
                RGBColor(0, 160, 0),
                tl.iter().map(|b| (mid(b), rate(b.completed))).collect(),
            ),
        ],
    )?;
    panel(
        &panels[2],
        "errors per second (by intended send time)",
        xmax,
        r,
        vec![line(
            "errors",
            RED,
            tl.iter().map(|b| (mid(b), rate(b.errors))).collect(),
        )],
    )?;
    let m = &r.metrics;
    let metric = |f: fn(&crate::scrape::MetricsSample) -> f64| {
        m.iter().map(|s| (s.t, Some(f(s)))).collect::<Vec<_>>()
    };
    panel(
        &panels[3],
        if m.is_empty() {
            "server: no surge /metrics at the target"
        } else {
            "server (from /metrics)"
        },
        xmax,
        r,
        vec![
            line(
                "workers ready",
                RGBColor(0, 160, 0),
                metric(|s| s.workers_ready),
            ),
            line(
                "workers starting",
                RGBColor(230, 130, 0),
                metric(|s| s.workers_starting),
            ),
            line("queue depth", RED, metric(|s| s.queue_depth)),
            line("in flight", BLUE, metric(|s| s.in_flight)),
        ],
    )?;
    root.present()?;
    Ok(())
}

fn line(label: &'static str, color: RGBColor, points: Vec<(f64, Option<f64>)>) -> Line {
    Line {
        label,
        color,
        points,
    }
}

fn panel(
    area: &Area,
    caption: &str,
    xmax: f64,
    r: &Report,
    lines: Vec<Line>,
) -> Result<(), Box<dyn std::error::Error>> {
    let ymax = lines
        .iter()
        .flat_map(|l| l.points.iter().filter_map(|p| p.1))
        .fold(0.0, f64::max);
    let ymax = if ymax > 0.0 { ymax * 1.1 } else { 1.0 };
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
    chart
        .configure_mesh()
        .x_desc("seconds from start")
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    // Phase boundaries and names.
    for p in &r.schedule.phases {
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(p.start, 0.0), (p.start, ymax)],
            RGBColor(150, 150, 150).stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            p.name.clone(),
            (p.start + 0.2, ymax * 0.97),
            ("sans-serif", 12)
                .into_font()
                .color(&RGBColor(120, 120, 120)),
        )))?;
    }
    let mut any = false;
    for l in &lines {
        let color = l.color;
        let mut first = true;
        for seg in segments(&l.points) {
            let s = chart.draw_series(LineSeries::new(seg, color.stroke_width(2)))?;
            if first {
                s.label(l.label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                });
                first = false;
                any = true;
            }
        }
    }
    if any {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .draw()?;
    }
    Ok(())
}

/// Splits points at missing values into drawable runs.
fn segments(points: &[(f64, Option<f64>)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new()];
    for &(x, y) in points {
        match y {
            Some(y) => out.last_mut().unwrap().push((x, y)),
            None if out.last().is_some_and(|s| !s.is_empty()) => out.push(Vec::new()),
            None => {}
        }
    }
    out.retain(|s| !s.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_split_lines() {
        let p = [
            (0.0, Some(1.0)),
            (1.0, None),
            (2.0, Some(2.0)),
            (3.0, Some(3.0)),
            (4.0, None),
        ];
        assert_eq!(
            segments(&p),
            vec![vec![(0.0, 1.0)], vec![(2.0, 2.0), (3.0, 3.0)]]
        );
        assert!(segments(&[(0.0, None)]).is_empty());
    }
}
