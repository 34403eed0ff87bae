use super::*;

#[test]
fn quantiles_of_sorted_values() {
    assert_eq!(quantile(&[], 0.5), 0);
    let v: Vec<i64> = (1..=100).collect();
    assert_eq!(quantile(&v, 0.5), 51);
    assert_eq!(quantile(&v, 0.99), 99);
    assert_eq!(quantile(&v, 1.0), 100);
}

#[test]
fn threads_of_this_process_by_name() {
    let handle = std::thread::Builder::new()
        .name("e2e-test-7".into())
        .spawn(|| {
            let mut x = 0u64;
            for i in 0..50_000_000u64 {
                x = x.wrapping_add(i * i);
            }
            x
        })
        .unwrap();
    let mut threads = Threads::start(std::process::id());
    while !handle.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
        threads.sample();
    }
    assert!(handle.join().unwrap() > 0);
    // Digits and the dash before them are dropped from the name.
    let names = threads.by_name();
    assert!(names.get("e2e-test").is_some_and(|s| *s > 0.0), "{names:?}");
}

#[test]
fn the_plot_is_one_svg_document() {
    let load = Load {
        name: "10 lines/s".into(),
        job: "bench/e2e/r10".into(),
        rate: 10,
        seconds: 20,
        with_tailll: false,
        lines: 200,
        bytes: 32_000,
        lines_per_s: 10.0,
        mb_per_s: 0.0016,
        complete: true,
        rows: 230,
        duplicates: 0,
        commits: 4,
        bus_records: None,
        bytes_per_record: None,
        drain_s: 1.0,
        writers_late_s: 0.0,
        freshness: Freshness {
            samples: 2,
            p50_s: 3.0,
            p99_s: 6.0,
            max_s: 6.0,
            series: vec![(0.0, 3.0, 6.0, 6.0), (0.5, 2.5, 5.5, 5.5)],
            points: vec![(0.1, 6.0), (0.6, 2.5)],
            ..Freshness::default()
        },
        up_idle_cpu_per_s: 0.0,
        up_cpu_s: 1.0,
        up_cpu_s_per_mb: 0.5,
        up_cores_writing: 0.05,
        up_cpu_by_thread: BTreeMap::new(),
        machine_busy: 0.5,
        baselines: Vec::new(),
        tailll: None,
        sustained: true,
    };
    let svg = plot(&Report {
        nodes: 3,
        instances: 30,
        bus: "embedded".into(),
        write_ms: 10,
        up_idle_cpu_per_s: 0.0,
        loads: vec![load],
    });
    assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
    assert_eq!(svg.matches("<polyline").count(), 2);
    // Text is escaped: no `<` but the tags'.
    for piece in svg.split('<').skip(1) {
        assert!(
            piece.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/'),
            "{piece}"
        );
    }
}
