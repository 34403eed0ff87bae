//! What the bench found, for people: the table and the SVG plot; and the
//! baselines (`cat`, `zstd`) measured on the same bytes.

use super::*;

/// The `q` quantile of sorted values (0 when empty).
pub(super) fn quantile(sorted: &[i64], q: f64) -> i64 {
    sorted
        .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
        .copied()
        .unwrap_or(0)
}

/// `cat` and `zstd -3 -T1` of the writers' files, their CPU per MB.
pub(super) fn baselines(
    files: &[PathBuf],
    bytes: u64,
    scratch: &Path,
) -> anyhow::Result<Vec<Baseline>> {
    let mb = bytes as f64 / MB;
    let mut out = Vec::new();
    let cpu = child_cpu_time();
    let status = Command::new("cat")
        .args(files)
        .stdout(Stdio::null())
        .status()
        .context("failed to run cat")?;
    anyhow::ensure!(status.success(), "cat failed: {status}");
    let cpu_s = (child_cpu_time() - cpu).as_secs_f64();
    out.push(Baseline {
        name: "cat".into(),
        cpu_s,
        cpu_s_per_mb: cpu_s / mb.max(1e-9),
        ratio: None,
    });
    let zst = scratch.join("baseline.zst");
    let cpu = child_cpu_time();
    match Command::new("zstd")
        .args(["-3", "-T1", "-q", "-c"])
        .args(files)
        .stdout(std::fs::File::create(&zst)?)
        .status()
    {
        Ok(status) if status.success() => {
            let cpu_s = (child_cpu_time() - cpu).as_secs_f64();
            out.push(Baseline {
                name: "zstd -3 -T1".into(),
                cpu_s,
                cpu_s_per_mb: cpu_s / mb.max(1e-9),
                ratio: Some(std::fs::metadata(&zst)?.len() as f64 / bytes.max(1) as f64),
            });
        }
        Ok(status) => eprintln!("zstd baseline skipped: zstd {status}"),
        Err(e) => eprintln!("zstd baseline skipped: {e} (apt-get install zstd)"),
    }
    let _ = std::fs::remove_file(&zst);
    Ok(out)
}

pub(super) fn print(r: &Report) {
    println!(
        "e2e: sluice up --nodes {} (bus {}), {} writers writing every {} ms; up idle {:.3} CPU-s/s",
        r.nodes, r.bus, r.instances, r.write_ms, r.up_idle_cpu_per_s
    );
    println!(
        "{:<22} {:>8} {:>6} {:>5} {:>9} {:>8} {:>8} {:>8} {:>7} {:>8} {:>9} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>5}",
        "load",
        "lines/s",
        "MB/s",
        "once",
        "fresh p50",
        "p99 s",
        "max s",
        "drain s",
        "up CPU",
        "up cores",
        "CPU-s/MB",
        "cat",
        "zstd -3",
        "tailll p50",
        "p99 ms",
        "tailll s",
        "bus rec/s",
        "busy"
    );
    for l in &r.loads {
        let base = |name: &str| {
            l.baselines
                .iter()
                .find(|b| b.name.starts_with(name))
                .map_or("-".into(), |b| format!("{:.4}", b.cpu_s_per_mb))
        };
        let (t50, t99, tcpu) =
            l.tailll
                .as_ref()
                .map_or(("-".to_string(), "-".to_string(), "-".to_string()), |t| {
                    (
                        format!("{:.1}", t.p50_ms),
                        format!("{:.1}", t.p99_ms),
                        format!("{:.2}", t.cpu_s),
                    )
                });
        println!(
            "{:<22} {:>8.0} {:>6.2} {:>5} {:>9.2} {:>8.2} {:>8.2} {:>8.2} {:>7.1} {:>8.2} {:>9.4} {:>8} {:>8} {:>9} {:>9} {:>9} {:>9} {:>4.0}%{}",
            l.name,
            l.lines_per_s,
            l.mb_per_s,
            if l.complete && l.duplicates == 0 {
                "yes"
            } else {
                "NO"
            },
            l.freshness.p50_s,
            l.freshness.p99_s,
            l.freshness.max_s,
            l.drain_s,
            l.up_cpu_s,
            l.up_cores_writing,
            l.up_cpu_s_per_mb,
            base("cat"),
            base("zstd"),
            t50,
            t99,
            tcpu,
            l.bus_records.map_or("-".into(), |n| format!(
                "{:.0}",
                n as f64 / (l.seconds as f64 + l.drain_s)
            )),
            l.machine_busy * 100.0,
            if l.sustained { "" } else { "  (not sustained)" }
        );
    }
    println!(
        "targets: freshness p99 < {FRESHNESS_TARGET_S} s, up ≤ {CPU_TARGET_S_PER_MB} CPU-s per MB"
    );
    for l in &r.loads {
        let mut threads: Vec<_> = l.up_cpu_by_thread.iter().collect();
        threads.sort_by(|a, b| b.1.total_cmp(a.1));
        let named: f64 = threads.iter().map(|(_, s)| **s).sum();
        let list: Vec<String> = threads
            .iter()
            .map(|(name, s)| format!("{name} {s:.1}"))
            .collect();
        println!(
            "{}: freshness p99 {} ({:.2} s by commit time), CPU {} ({:.1}× zstd -3's per MB); {} lines in {} commits, idle up {:.3} CPU-s/s; up CPU s by thread: {} (unaccounted {:.1})",
            l.name,
            if l.freshness.p99_s < FRESHNESS_TARGET_S {
                "met"
            } else {
                "NOT met"
            },
            l.freshness.commit_p99_s,
            if l.up_cpu_s_per_mb <= CPU_TARGET_S_PER_MB {
                "met"
            } else {
                "NOT met"
            },
            l.baselines
                .iter()
                .find(|b| b.name.starts_with("zstd"))
                .map_or(f64::NAN, |b| l.up_cpu_s_per_mb / b.cpu_s_per_mb.max(1e-9)),
            l.lines,
            l.commits,
            l.up_idle_cpu_per_s,
            list.join(", "),
            (l.up_cpu_s - named).max(0.0),
        );
    }
}

/// Freshness over write time, one panel per load: sampled lines as dots,
/// p50 and p99 per half second as lines, the target dashed. Hand-written
/// SVG.
pub(super) fn plot(r: &Report) -> String {
    let (width, panel, top, left, right) = (760.0, 150.0, 46.0, 52.0, 16.0);
    let plot_h = panel - 40.0;
    let x_max = r
        .loads
        .iter()
        .map(|l| l.seconds as f64)
        .fold(10.0f64, f64::max);
    let y_top = r
        .loads
        .iter()
        .flat_map(|l| l.freshness.series.iter().map(|p| p.3))
        .fold(FRESHNESS_TARGET_S + 1.0, f64::max);
    let y_step = match y_top {
        t if t <= 20.0 => 5.0,
        t if t <= 60.0 => 10.0,
        _ => 30.0,
    };
    let y_max = (y_top / y_step).ceil() * y_step;
    let height = top + panel * r.loads.len() as f64 + 22.0;
    let plot_w = width - left - right;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">"##
    );
    let _ = writeln!(
        svg,
        r##"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="16" font-size="13" font-weight="bold">Write → queryable (sluice bench e2e: {} writers on {} nodes, bus {})</text>"##,
        r.instances, r.nodes, r.bus
    );
    let _ = writeln!(
        svg,
        r##"<circle cx="{}" cy="31" r="2" fill="#9ecae1"/><text x="{}" y="35">a sampled line</text>"##,
        left + 11.0,
        left + 27.0
    );
    let legend = [
        ("#1f77b4", "p50 per ½ s", ""),
        ("#ff7f0e", "p99 per ½ s", ""),
        (
            "#d62728",
            "target: p99 &lt; 15 s",
            " stroke-dasharray=\"5,4\"",
        ),
    ];
    for (i, (color, label, dash)) in legend.iter().enumerate() {
        let x = left + (i + 1) as f64 * 120.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="31" x2="{}" y2="31" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="35">{label}</text>"##,
            x + 22.0,
            x + 27.0
        );
    }
    for (i, l) in r.loads.iter().enumerate() {
        let y0 = top + panel * i as f64 + 18.0;
        let x = |t: f64| left + t.clamp(0.0, x_max) / x_max * plot_w;
        let y = |s: f64| y0 + plot_h - s.clamp(0.0, y_max) / y_max * plot_h;
        let _ = writeln!(
            svg,
            r##"<text x="{left}" y="{}" font-weight="bold">{}: {:.2} MB/s; freshness p50 {:.2} s, p99 {:.2} s; sluice up {:.3} CPU-s per MB</text>"##,
            y0 - 5.0,
            l.name,
            l.mb_per_s,
            l.freshness.p50_s,
            l.freshness.p99_s,
            l.up_cpu_s_per_mb
        );
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{y0}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#ccc"/>"##
        );
        let mut s = 0.0;
        while s <= y_max {
            let _ = writeln!(
                svg,
                r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#eee"/><text x="{2}" y="{3}" text-anchor="end">{s} s</text>"##,
                y(s),
                left + plot_w,
                left - 4.0,
                y(s) + 4.0
            );
            s += y_step;
        }
        let mut t = 0.0;
        while t <= x_max {
            let _ = writeln!(
                svg,
                r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">{t}</text>"##,
                x(t),
                y0 + plot_h + 13.0
            );
            t += 10.0;
        }
        let dots: String = l
            .freshness
            .points
            .iter()
            .map(|(t, f)| format!("M{:.1} {:.1}h0", x(*t), y(*f)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<path d="{dots}" stroke="#9ecae1" stroke-width="3" stroke-linecap="round"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#d62728" stroke-dasharray="5,4"/>"##,
            y(FRESHNESS_TARGET_S),
            left + plot_w
        );
        for (color, pick, w) in [("#ff7f0e", 2usize, 1.5), ("#1f77b4", 1, 1.5)] {
            let points: Vec<String> = l
                .freshness
                .series
                .iter()
                .map(|p| {
                    let v = [p.0, p.1, p.2, p.3][pick];
                    format!("{:.1},{:.1}", x(p.0 + 0.25), y(v))
                })
                .collect();
            let _ = writeln!(
                svg,
                r##"<polyline fill="none" stroke="{color}" stroke-width="{w}" points="{}"/>"##,
                points.join(" ")
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<text x="{}" y="{}" text-anchor="middle" fill="#555">write time, seconds since the writers started</text>"##,
        left + plot_w / 2.0,
        height - 6.0
    );
    svg.push_str("</svg>\n");
    svg
}
