//! The SVG plots (plotters, SVG backend only: no font library, and the same
//! figures always give the same file).

use std::path::Path;

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::report::{grouped, ratio_to_tokio, size_label};
use crate::run::{LatencyPoint, Results, ThroughputCell};
use crate::stats::Summary;

const FONT: &str = "sans-serif";

/// A stable colour per server, the same in every plot.
fn colour(server: &str, label: &str) -> RGBColor {
    match (server, label) {
        ("ch01", _) => RGBColor(0x7f, 0x7f, 0x7f),
        ("ch02", _) => RGBColor(0x8c, 0x56, 0x4b),
        ("ch03", _) => RGBColor(0x1f, 0x77, 0xb4),
        ("ch04", _) => RGBColor(0x17, 0xbe, 0xcf),
        ("ch05", _) => RGBColor(0xff, 0x7f, 0x0e),
        ("ch06", _) => RGBColor(0x2c, 0xa0, 0x2c),
        ("ch07", _) => RGBColor(0xd6, 0x27, 0x28),
        ("ch08", "no-cork") => RGBColor(0xc5, 0xb0, 0xd5),
        ("ch08", _) => RGBColor(0x94, 0x67, 0xbd),
        ("nginx", _) => RGBColor(0x00, 0x96, 0x39),
        ("tokio-nodelay", _) => RGBColor(0xbc, 0xbd, 0x22),
        _ => RGBColor(0x20, 0x20, 0x20),
    }
}

/// The name a series has in a legend: `ch05 poll`, or the reference's label.
fn legend_name(server: &str, label: &str) -> String {
    if server.starts_with("ch") {
        format!("{server} {label}")
    } else {
        label.to_string()
    }
}

/// A legend under the panels, drawn by hand so that it covers no data:
/// entries in columns, a short line of the series' colour before each name.
fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    entries: &[(String, RGBColor)],
) -> Result<(), String> {
    let (width, _) = area.dim_in_pixel();
    let columns = (width as usize / 260).max(1);
    for (k, (name, c)) in entries.iter().enumerate() {
        let x = 20 + (k % columns) as i32 * 260;
        let y = 10 + (k / columns) as i32 * 18;
        area.draw(&PathElement::new(
            vec![(x, y + 7), (x + 22, y + 7)],
            c.stroke_width(3),
        ))
        .map_err(err)?;
        area.draw(&Text::new(name.clone(), (x + 28, y), (FONT, 13)))
            .map_err(err)?;
    }
    Ok(())
}

/// The height a legend of `n` entries needs in a figure `width` wide.
fn legend_height(n: usize, width: u32) -> u32 {
    let columns = (width as usize / 260).max(1);
    (n.div_ceil(columns) as u32) * 18 + 20
}

fn err(e: impl std::fmt::Display) -> String {
    format!("plot: {e}")
}

pub fn write_all(results: &Results, out: &Path) -> Result<(), String> {
    idle_plot(
        results,
        &out.join("idle-latency.svg"),
        "Round trip of one client against idle connections",
        &[
            ("median", |p: &LatencyPoint| p.median_us),
            ("99th percentile", |p: &LatencyPoint| p.p99_us),
        ],
    )?;
    idle_plot(
        results,
        &out.join("idle-cost.svg"),
        "Server CPU per round trip against idle connections",
        &[("server CPU time per round trip", |p: &LatencyPoint| {
            p.cpu_per_rt_us
        })],
    )?;
    throughput_plot(results, out, &ratio_figure())?;
    throughput_plot(results, out, &cpu_figure())?;
    http_plot(results, &out.join("http.svg"))
}

/// Labels for a categorical axis.
fn category(labels: &[String]) -> impl Fn(&SegmentValue<usize>) -> String + '_ {
    move |v| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
            labels.get(*i).cloned().unwrap_or_default()
        }
        SegmentValue::Last => String::new(),
    }
}

/// Powers of ten around the values, for a log axis.
fn log_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, 0.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (1.0, 10.0);
    }
    let lo = 10f64.powf(lo.log10().floor());
    let mut hi = 10f64.powf(hi.log10().ceil());
    if hi <= lo {
        hi = lo * 10.0;
    }
    (lo, hi)
}

type Pick = fn(&LatencyPoint) -> Option<Summary>;

/// Panels side by side, one per picked figure: x the idle connections, y (log)
/// in µs, a line per server through the medians, bars from the lowest to the
/// highest run.
fn idle_plot(
    results: &Results,
    path: &Path,
    title: &str,
    picks: &[(&str, Pick)],
) -> Result<(), String> {
    let steps = &results.plan.idle_steps;
    let labels: Vec<String> = steps.iter().map(|n| grouped(*n as f64)).collect();
    let width = 460 * picks.len() as u32 + 40;
    let entries: Vec<(String, RGBColor)> = results
        .latency
        .iter()
        .filter(|s| {
            s.points
                .iter()
                .any(|p| picks.iter().any(|(_, f)| f(p).is_some()))
        })
        .map(|s| {
            (
                legend_name(&s.server, &s.label),
                colour(&s.server, &s.label),
            )
        })
        .collect();
    let legend = legend_height(entries.len(), width);
    let root = SVGBackend::new(path, (width, 440 + legend)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(title, (FONT, 20)).map_err(err)?;
    let (plots, key) = root.split_vertically(root.dim_in_pixel().1 - legend);
    draw_legend(&key, &entries)?;
    let panels = plots.split_evenly((1, picks.len()));
    for (panel, (name, pick)) in panels.iter().zip(picks) {
        let values = results.latency.iter().flat_map(|s| {
            s.points
                .iter()
                .filter_map(pick)
                .flat_map(|x| [x.min, x.max])
        });
        let (lo, hi) = log_bounds(values);
        let mut chart = ChartBuilder::on(panel)
            .caption(*name, (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (0..steps.len().saturating_sub(1)).into_segmented(),
                (lo..hi).log_scale(),
            )
            .map_err(err)?;
        let fmt = category(&labels);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("idle connections")
            .y_desc("µs (log scale)")
            .x_label_formatter(&fmt)
            .y_label_formatter(&|v| grouped(*v))
            .label_style((FONT, 13))
            .draw()
            .map_err(err)?;
        for series in &results.latency {
            let c = colour(&series.server, &series.label);
            let points: Vec<(usize, Summary)> = steps
                .iter()
                .enumerate()
                .filter_map(|(i, n)| {
                    let p = series.points.iter().find(|p| p.idle == *n)?;
                    Some((i, pick(p)?))
                })
                .collect();
            let line: Vec<(SegmentValue<usize>, f64)> = points
                .iter()
                .map(|(i, s)| (SegmentValue::CenterOf(*i), s.median))
                .collect();
            chart
                .draw_series(LineSeries::new(line.clone(), c.stroke_width(2)))
                .map_err(err)?;
            chart
                .draw_series(line.iter().map(|p| Circle::new(p.clone(), 3, c.filled())))
                .map_err(err)?;
            chart
                .draw_series(points.iter().map(|(i, s)| {
                    ErrorBar::new_vertical(SegmentValue::CenterOf(*i), s.min, s.median, s.max, c, 8)
                }))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// What a throughput figure plots for one cell.
struct CellFigure {
    file: &'static str,
    title: &'static str,
    y_desc: &'static str,
    /// Is the plain tokio peer a series of its own, or the line at 1?
    tokio_is_unit: bool,
    value: fn(&Results, &ThroughputCell) -> Option<f64>,
}

fn ratio_figure() -> CellFigure {
    CellFigure {
        file: "throughput.svg",
        title: "Echo round trips per second, as a ratio to tokio",
        y_desc: "ratio to tokio (log scale)",
        tokio_is_unit: true,
        value: |r, c| ratio_to_tokio(r, c),
    }
}

fn cpu_figure() -> CellFigure {
    CellFigure {
        file: "throughput-cpu.svg",
        title: "Server CPU time per echo round trip",
        y_desc: "µs (log scale)",
        tokio_is_unit: false,
        value: |_, c| c.cpu_us_per_rt.map(|s| s.median),
    }
}

/// Powers of two around the values (ratios read best that way).
fn log2_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (0.5f64, 2.0f64);
    for v in values.filter(|v| v.is_finite() && *v > 0.0) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    // A quarter of a power of two beyond each end, so that the end values
    // get a labelled tick of their own.
    (
        2f64.powf(lo.log2().floor() - 0.25),
        2f64.powf(hi.log2().ceil() + 0.25),
    )
}

/// One panel per message size: x the clients, y (log) the figure's value, a
/// line per server. The TCP_NODELAY peer is left out of the ratio figure: at
/// 64 KiB it is hundreds of times faster than servers stalled by Nagle's
/// algorithm, which would flatten every other line (the tables show it).
fn throughput_plot(results: &Results, out: &Path, fig: &CellFigure) -> Result<(), String> {
    let plan = &results.plan;
    let labels: Vec<String> = plan.clients.iter().map(|c| grouped(*c as f64)).collect();
    let width = 400 * plan.sizes.len().max(1) as u32 + 40;
    let mut servers: Vec<(String, String)> = Vec::new();
    for c in &results.throughput {
        let skip = fig.tokio_is_unit && (c.server == "tokio" || c.server == "tokio-nodelay");
        if !skip && !servers.iter().any(|(n, _)| *n == c.server) {
            servers.push((c.server.clone(), c.label.clone()));
        }
    }
    let mut entries: Vec<(String, RGBColor)> = Vec::new();
    if fig.tokio_is_unit {
        entries.push(("tokio (= 1)".into(), colour("tokio", "")));
    }
    entries.extend(
        servers
            .iter()
            .map(|(n, l)| (legend_name(n, l), colour(n, l))),
    );
    let legend = legend_height(entries.len(), width);
    let path = out.join(fig.file);
    let root = SVGBackend::new(&path, (width, 440 + legend)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root.titled(fig.title, (FONT, 20)).map_err(err)?;
    let (plots, key) = root.split_vertically(root.dim_in_pixel().1 - legend);
    draw_legend(&key, &entries)?;
    let values = results
        .throughput
        .iter()
        .filter(|c| servers.iter().any(|(n, _)| *n == c.server))
        .filter_map(|c| (fig.value)(results, c));
    let (lo, hi) = if fig.tokio_is_unit {
        log2_bounds(values)
    } else {
        log_bounds(values)
    };
    let panels = plots.split_evenly((1, plan.sizes.len().max(1)));
    for (panel, &size) in panels.iter().zip(&plan.sizes) {
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("{} messages", size_label(size)), (FONT, 16))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(
                (0..plan.clients.len().saturating_sub(1)).into_segmented(),
                (lo..hi).log_scale(),
            )
            .map_err(err)?;
        let fmt = category(&labels);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc("clients")
            .y_desc(fig.y_desc)
            .x_label_formatter(&fmt)
            .y_label_formatter(&|v| {
                if *v >= 10.0 {
                    grouped(*v)
                } else if *v >= 1.0 {
                    format!("{v:.1}")
                } else {
                    format!("{v:.2}")
                }
            })
            .label_style((FONT, 13))
            .draw()
            .map_err(err)?;
        if fig.tokio_is_unit {
            chart
                .draw_series(LineSeries::new(
                    vec![(SegmentValue::Exact(0), 1.0), (SegmentValue::Last, 1.0)],
                    colour("tokio", "").stroke_width(2),
                ))
                .map_err(err)?;
            // The log axis labels only 1 and 2 over so short a range: mark
            // the halvings and doublings by hand.
            for guide in [0.25, 0.5, 2.0, 4.0] {
                if guide <= lo || guide >= hi {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(
                        vec![(SegmentValue::Exact(0), guide), (SegmentValue::Last, guide)],
                        BLACK.mix(0.35).stroke_width(1),
                    ))
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{guide}×"),
                        (SegmentValue::Exact(0), guide),
                        (FONT, 12).into_font().color(&BLACK.mix(0.6)),
                    )))
                    .map_err(err)?;
            }
        }
        for (server, label) in &servers {
            let c = colour(server, label);
            let points: Vec<(SegmentValue<usize>, f64)> =
                plan.clients
                    .iter()
                    .enumerate()
                    .filter_map(|(i, &clients)| {
                        let cell = results.throughput.iter().find(|t| {
                            t.server == *server && t.clients == clients && t.size == size
                        })?;
                        Some((SegmentValue::CenterOf(i), (fig.value)(results, cell)?))
                    })
                    .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
                .map_err(err)?;
            chart
                .draw_series(points.iter().map(|p| Circle::new(p.clone(), 3, c.filled())))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}

/// One panel per client count: a bar per server, requests per second.
fn http_plot(results: &Results, path: &Path) -> Result<(), String> {
    let plan = &results.plan;
    let mut servers: Vec<(String, String)> = Vec::new();
    for c in &results.http {
        if !servers.iter().any(|(n, l)| *n == c.server && *l == c.label) {
            servers.push((c.server.clone(), c.label.clone()));
        }
    }
    let labels: Vec<String> = servers
        .iter()
        .map(|(n, l)| {
            if n == "nginx" {
                n.clone()
            } else {
                format!("{n} {l}")
            }
        })
        .collect();
    let width = 400 * plan.http_clients.len().max(1) as u32 + 40;
    let root = SVGBackend::new(path, (width, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled("HTTP keep-alive requests per second", (FONT, 20))
        .map_err(err)?;
    let top = results
        .http
        .iter()
        .filter_map(|c| c.per_s.map(|s| s.max))
        .fold(1.0f64, f64::max)
        * 1.15;
    let panels = root.split_evenly((1, plan.http_clients.len().max(1)));
    for (panel, &clients) in panels.iter().zip(&plan.http_clients) {
        let mut chart = ChartBuilder::on(panel)
            .caption(
                format!(
                    "{} client{}",
                    grouped(clients as f64),
                    if clients == 1 { "" } else { "s" }
                ),
                (FONT, 16),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (0..servers.len().saturating_sub(1)).into_segmented(),
                0f64..top,
            )
            .map_err(err)?;
        let fmt = category(&labels);
        chart
            .configure_mesh()
            .disable_x_mesh()
            .y_desc("requests per second")
            .x_label_formatter(&fmt)
            .y_label_formatter(&|v| grouped(*v))
            .label_style((FONT, 13))
            .draw()
            .map_err(err)?;
        for (i, (server, label)) in servers.iter().enumerate() {
            let Some(per_s) = results
                .http
                .iter()
                .find(|c| c.server == *server && c.label == *label && c.clients == clients)
                .and_then(|c| c.per_s)
            else {
                continue;
            };
            let c = colour(server, label);
            let mut bar = Rectangle::new(
                [
                    (SegmentValue::Exact(i), 0.0),
                    (SegmentValue::Exact(i + 1), per_s.median),
                ],
                c.filled(),
            );
            bar.set_margin(0, 0, 12, 12);
            chart.draw_series(std::iter::once(bar)).map_err(err)?;
            chart
                .draw_series(std::iter::once(ErrorBar::new_vertical(
                    SegmentValue::CenterOf(i),
                    per_s.min,
                    per_s.median,
                    per_s.max,
                    BLACK,
                    10,
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)
}
