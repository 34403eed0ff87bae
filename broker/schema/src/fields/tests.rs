use proptest::prelude::*;

use super::*;

fn pairs<'a>(p: &'a Parsed<'_>) -> Vec<(&'a str, &'a str)> {
    p.fields
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect()
}

#[test]
fn plain_lines_name_their_level_near_the_start() {
    let cases: &[(&str, Option<Level>)] = &[
        (
            "ERROR batch 28 failed: java.lang.OutOfMemoryError",
            Some(Level::Error),
        ),
        (
            "2026-12-07 10:00:00,123 WARN  [main] c.e.Pool: slow",
            Some(Level::Warn),
        ),
        (
            "2026-12-07T10:00:00Z [info] listening on :8080",
            Some(Level::Info),
        ),
        ("ERROR:root:division by zero", Some(Level::Error)),
        (
            "E1207 10:00:00.000000   12 reflector.go:138] failed",
            Some(Level::Error),
        ),
        (
            "I1207 10:00:00.000000   12 main.go:10] started",
            Some(Level::Info),
        ),
        (
            "panic: runtime error: index out of range",
            Some(Level::Fatal),
        ),
        ("error: could not open /etc/x", Some(Level::Error)),
        ("ts=1 some words level=debug", Some(Level::Debug)),
        ("<warning> disk at 91%", Some(Level::Warn)),
        ("SEVERE: Servlet.service() threw", Some(Level::Error)),
        // Prose is not a level: lower case without a mark.
        ("the trace was empty", None),
        ("an error occurred somewhere", None),
        ("GET /api/v1/items/0 200", None),
        // Too far from the start.
        ("a b c d e f g ERROR", None),
        ("", None),
        ("\tat com.example.Worker.run(Worker.java:42)", None),
    ];
    for (line, want) in cases {
        assert_eq!(parse(line.as_bytes()).level, *want, "{line}");
        assert_eq!(level(line.as_bytes()), *want, "{line}");
        assert_eq!(parse(line.as_bytes()).format, Format::Plain, "{line}");
    }
}

#[test]
fn a_multi_line_event_takes_the_level_of_its_first_line() {
    let text = b"ERROR batch 28 failed\njava.lang.OutOfMemoryError: heap\n\tat com.example.Batch.run(Batch.java:7)";
    assert_eq!(level(text), Some(Level::Error));
    let text = b"starting\nERROR later";
    assert_eq!(level(text), None);
}

#[test]
fn json_lines_give_level_message_ids_and_flattened_fields() {
    let line = br#"{"ts":"2026-12-07T10:00:00Z","severity":"WARNING","msg":"slow query","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","span_id":"00f067aa0ba902b7","http":{"code":503,"path":"/x"},"ok":false,"tags":["a","b"],"none":null}"#;
    let p = parse(line);
    assert_eq!(p.format, Format::Json);
    assert_eq!(p.level, Some(Level::Warn));
    assert_eq!(p.message.as_deref(), Some("slow query"));
    assert_eq!(
        p.trace_id.as_deref(),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );
    assert_eq!(p.span_id.as_deref(), Some("00f067aa0ba902b7"));
    assert_eq!(
        pairs(&p),
        vec![
            ("http.code", "503"),
            ("http.path", "/x"),
            ("ok", "false"),
            ("tags", r#"["a","b"]"#),
            ("ts", "2026-12-07T10:00:00Z"),
        ]
    );
    assert_eq!(level(line), Some(Level::Warn));
}

#[test]
fn level_keys_are_taken_in_order_and_numbers_are_otel_severities() {
    let p = parse(br#"{"lvl":"debug","level":"error"}"#);
    assert_eq!(p.level, Some(Level::Error));
    assert_eq!(pairs(&p), vec![("lvl", "debug")]);
    assert_eq!(parse(br#"{"severity":17}"#).level, Some(Level::Error));
    assert_eq!(parse(br#"{"severity":9}"#).level, Some(Level::Info));
    assert_eq!(parse(br#"{"severity":99}"#).level, None);
    // An unknown level word stays a field.
    let p = parse(br#"{"level":"loud","msg":"x"}"#);
    assert_eq!(p.level, None);
    assert_eq!(pairs(&p), vec![("level", "loud")]);
}

#[test]
fn not_quite_json_is_plain() {
    for line in [
        &b"{not json} ERROR x"[..],
        b"[1,2,3]",
        b"{\"a\":1} trailing",
    ] {
        assert_eq!(parse(line).format, Format::Plain);
    }
    assert_eq!(parse(b"{not json} ERROR x").level, Some(Level::Error));
}

#[test]
fn logfmt_lines_give_fields_with_quotes_undone() {
    let line = br#"ts=2026-12-07T10:00:00Z level=error msg="batch \"28\" failed" trace_id=abc user=bob empty="#;
    let p = parse(line);
    assert_eq!(p.format, Format::Logfmt);
    assert_eq!(p.level, Some(Level::Error));
    assert_eq!(p.message.as_deref(), Some(r#"batch "28" failed"#));
    assert_eq!(p.trace_id.as_deref(), Some("abc"));
    assert_eq!(
        pairs(&p),
        vec![
            ("empty", ""),
            ("ts", "2026-12-07T10:00:00Z"),
            ("user", "bob")
        ]
    );
}

#[test]
fn prose_with_an_equals_sign_is_not_logfmt() {
    for line in [
        &b"set x=1 and y=2 now"[..],
        b"only=one",
        b"a=\"unterminated b=2",
        b"a=1 =2",
        b"a=\"x\"y b=2",
    ] {
        assert_eq!(parse(line).format, Format::Plain, "{:?}", line);
    }
}

#[test]
fn level_names_parse_and_print() {
    for level in Level::ALL {
        assert_eq!(level.as_str().parse::<Level>(), Ok(level));
        assert_eq!(level.to_string().to_uppercase().parse::<Level>(), Ok(level));
    }
    assert_eq!("WARNING".parse::<Level>(), Ok(Level::Warn));
    let err = "loud".parse::<Level>().unwrap_err();
    assert!(err.contains("loud") && err.contains("warn"), "{err}");
    assert!(Level::Warn > Level::Info && Level::Fatal > Level::Error);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic_and_agree(text in proptest::collection::vec(any::<u8>(), 0..300)) {
        let p = parse(&text);
        prop_assert_eq!(level(&text), p.level);
        prop_assert!(p.fields.len() <= MAX_FIELDS);
        prop_assert!(p.fields.windows(2).all(|w| w[0].0 < w[1].0));
        if p.format == Format::Plain {
            prop_assert!(p.fields.is_empty() && p.message.is_none());
        }
    }

    #[test]
    fn near_json_and_logfmt_never_panic(
        text in r#"[{}"=\\a-z:,\[\] ]{0,80}"#,
    ) {
        let p = parse(text.as_bytes());
        prop_assert_eq!(level(text.as_bytes()), p.level);
    }

    #[test]
    fn logfmt_written_is_read_back(
        values in proptest::collection::btree_map("[a-z][a-z0-9_.]{0,8}", "[ -~]{0,12}", 2..8),
    ) {
        let line: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("x{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let line = line.join(" ");
        let p = parse(line.as_bytes());
        prop_assert_eq!(p.format, Format::Logfmt);
        let want: Vec<(String, String)> =
            values.iter().map(|(k, v)| (format!("x{k}"), v.clone())).collect();
        let got: Vec<(String, String)> =
            p.fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        prop_assert_eq!(got, want);
    }
}

/// `SLUICE_PARSE_FILE=F cargo test --release -p sluice-schema -- --ignored
/// parse_speed --nocapture`: nanoseconds per line of `F` for `parse`.
#[test]
#[ignore]
fn parse_speed() {
    let Ok(path) = std::env::var("SLUICE_PARSE_FILE") else {
        return;
    };
    let text = std::fs::read(path).unwrap();
    let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').collect();
    let start = std::time::Instant::now();
    let mut n = 0;
    for _ in 0..5 {
        for line in &lines {
            n += parse(line).fields.len();
        }
    }
    let per = start.elapsed().as_nanos() as f64 / (5 * lines.len()) as f64;
    println!("{per:.0} ns per line ({n} fields)");
}
