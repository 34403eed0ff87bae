//! A hand-written SVG plot of a simulation's disk usage over time: the
//! usage line, the pressure line and critical mark, shipper stalls shaded,
//! passes with forced deletions marked. Self-contained (no script, no
//! external font or style), so it can be committed to the docs as is.

use std::fmt::Write;

use super::sim::SimReport;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 470.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 90.0;

pub(super) fn usage_svg(report: &SimReport) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let end_secs = report.passes.last().map_or(1, |p| p.t_secs).max(1) as f64;
    let x = |secs: f64| LEFT + secs / end_secs * plot_w;
    let y = |fraction: f64| TOP + (1.0 - fraction.clamp(0.0, 1.05) / 1.05) * plot_h;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let s = &report.summary;
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="22" font-size="15" font-weight="bold">Sandbox GC on a simulated node: disk usage over time</text>"#
    );
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="40" fill="#444">up to {} sandboxes, {} passes; decision time p50 {:.0} µs, p99 {:.0} µs; {} deleted, {} forced, unforced unshipped bytes deleted: {}</text>"##,
        s.sandboxes_max,
        s.passes,
        s.decision_us_p50,
        s.decision_us_p99,
        s.deleted,
        s.forced_critical + s.forced_max_wait,
        s.unforced_unshipped_bytes,
    );

    // Stalls, shaded.
    for &(start, end) in &report.stalls_secs {
        let (x0, x1) = (x(start as f64), x((end as f64).min(end_secs)));
        if x1 > x0 {
            let _ = writeln!(
                svg,
                r##"<rect x="{x0:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#eeeeee"/><text x="{:.1}" y="{:.1}" fill="#777" text-anchor="middle">shipper stall</text>"##,
                x1 - x0,
                (x0 + x1) / 2.0,
                TOP + 14.0,
            );
        }
    }

    // Horizontal grid and y labels, every 10%.
    for k in 0..=10 {
        let fraction = k as f64 / 10.0;
        let yy = y(fraction);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#e4e4e4"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            yy + 4.0,
            k * 10,
        );
    }
    // x ticks: a round number of hours, about ten of them.
    let hours = end_secs / 3600.0;
    let step = [1.0, 2.0, 3.0, 4.0, 6.0, 12.0, 24.0, 48.0, 168.0]
        .into_iter()
        .find(|step| hours / step <= 12.0)
        .unwrap_or(168.0);
    let mut h = 0.0;
    while h <= hours + 1e-9 {
        let xx = x(h * 3600.0);
        let _ = writeln!(
            svg,
            r##"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="#888"/><text x="{xx:.1}" y="{:.1}" text-anchor="middle">{h}</text>"##,
            TOP + plot_h,
            TOP + plot_h + 5.0,
            TOP + plot_h + 18.0,
        );
        h += step;
    }
    // Axes and their labels.
    let _ = writeln!(
        svg,
        r##"<path d="M{LEFT},{TOP} V{:.1} H{:.1}" fill="none" stroke="#333"/>"##,
        TOP + plot_h,
        LEFT + plot_w,
    );
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">simulated time (hours)</text>"#,
        LEFT + plot_w / 2.0,
        TOP + plot_h + 38.0,
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">disk used (% of capacity)</text>"#,
        TOP + plot_h / 2.0,
    );

    // The marks.
    for (fraction, colour, label) in [
        (report.pressure_line, "#e69500", "pressure line"),
        (report.critical_mark, "#d62728", "critical mark"),
    ] {
        let yy = y(fraction);
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="{colour}" stroke-dasharray="6 4"/><text x="{:.1}" y="{:.1}" fill="{colour}" text-anchor="end">{label} {:.0}%</text>"#,
            LEFT + plot_w,
            LEFT + plot_w - 4.0,
            yy - 4.0,
            fraction * 100.0,
        );
    }

    // Usage when each pass started.
    let mut points = String::new();
    for p in &report.passes {
        let _ = write!(
            points,
            "{:.1},{:.1} ",
            x(p.t_secs as f64),
            y(p.used_fraction)
        );
    }
    let _ = writeln!(
        svg,
        r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##,
        points.trim_end()
    );

    // Passes with forced deletions: ticks under the axis.
    for p in &report.passes {
        if p.forced_critical + p.forced_max_wait > 0 {
            let xx = x(p.t_secs as f64);
            let colour = if p.forced_critical > 0 {
                "#d62728"
            } else {
                "#9467bd"
            };
            let _ = writeln!(
                svg,
                r#"<line x1="{xx:.1}" y1="{:.1}" x2="{xx:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/>"#,
                TOP + plot_h - 10.0,
                TOP + plot_h,
            );
        }
    }

    // Legend, one row under the axis.
    let mut lx = LEFT;
    let ly = HEIGHT - 16.0;
    for (colour, label) in [
        ("#1f77b4", "disk used when each pass starts"),
        ("#d62728", "pass with forced deletions (critical disk)"),
        ("#9467bd", "pass with forced deletions (max wait)"),
    ] {
        let _ = writeln!(
            svg,
            r#"<line x1="{lx:.1}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{colour}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{label}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
        );
        lx += 24.0 + 7.0 * label.len() as f64 + 24.0;
    }
    svg.push_str("</svg>\n");
    svg
}
