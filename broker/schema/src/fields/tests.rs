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

#[test]
fn json_values_are_kept_as_written() {
    let p = parse(
        br#" {"a":1.50,"b":-0,"c":1E+3,"d":12345678901234567890123,"e":"tab\there \u00e9","f":[1, {"x" : "y"}],"g":{},"h":{"i":{"j":true}}} "#,
    );
    assert_eq!(p.format, Format::Json);
    assert_eq!(
        pairs(&p),
        vec![
            ("a", "1.50"),
            ("b", "-0"),
            ("c", "1E+3"),
            ("d", "12345678901234567890123"),
            ("e", "tab\there é"),
            ("f", r#"[1,{"x":"y"}]"#),
            ("h.i.j", "true"),
        ]
    );
    // Borrowed from the line unless escaped.
    assert!(matches!(p.fields[0].1, Cow::Borrowed(_)));
    assert!(matches!(p.fields[4].1, Cow::Owned(_)));
}

#[test]
fn not_quite_json_objects_are_plain() {
    let deep = format!(
        "{}{}",
        r#"{"a":"#.repeat(json::MAX_DEPTH),
        "}".repeat(json::MAX_DEPTH)
    );
    for line in [
        &br#"{"a":1,}"#[..],
        br#"{"a":01}"#,
        br#"{"a":1.}"#,
        br#"{"a":-}"#,
        br#"{"a":"x\q"}"#,
        b"{\"a\":\"x\ty\"}",
        b"{\"a\":\"\xff\"}",
        br#"{"a":tru}"#,
        br#"{"a" 1}"#,
        br#"{a:1}"#,
        br#"{"a":1}{"b":2}"#,
        br#"{"a":[1,]}"#,
        br#"{"a":"unterminated}"#,
        br#"{"a":"\"}"#,
        deep.as_bytes(),
    ] {
        assert_eq!(
            parse(line).format,
            Format::Plain,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

/// A JSON object as a generator of lines: nested objects, arrays, strings
/// with anything in them, numbers, booleans and nulls.
fn json_object() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map("[a-z_]{1,6}", inner, 0..5)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    proptest::collection::btree_map("[a-z_]{1,6}", value, 0..8)
        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()))
}

/// What `parse` should find in `value`'s text, flattened through serde_json.
fn flattened(prefix: &str, value: &serde_json::Value, out: &mut Vec<(String, String)>) {
    for (key, v) in value.as_object().unwrap() {
        let key = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match v {
            serde_json::Value::Null => {}
            serde_json::Value::String(s) => out.push((key, s.clone())),
            serde_json::Value::Object(_) => flattened(&key, v, out),
            other => out.push((key, other.to_string())),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The scanner agrees with serde_json on every object it prints,
    /// pretty or compact: same keys, same values.
    #[test]
    fn json_objects_read_as_serde_json_reads_them(value in json_object(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap().replace('\n', " ")
        } else {
            serde_json::to_string(&value).unwrap()
        };
        let p = parse(text.as_bytes());
        prop_assert_eq!(p.format, Format::Json);
        let mut want = Vec::new();
        flattened("", &value, &mut want);
        // Level, message and ids are taken out by the same rules as before.
        let mut got: Vec<(String, String)> =
            p.fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        got.extend(p.message.iter().map(|m| ("?message".to_string(), m.to_string())));
        for (key, value) in &want {
            let kept = p.field(key) == Some(value.as_str())
                || [&p.message, &p.trace_id, &p.span_id].iter().any(|v| v.as_deref() == Some(value.as_str()))
                || (key_in(key, LEVEL_KEYS) && p.level.is_some());
            prop_assert!(kept, "{} = {:?} lost from {}: {:?}", key, value, text, got);
        }
    }

    /// Whatever serde_json takes as one object, the scanner takes too, and
    /// the other way round.
    #[test]
    fn json_acceptance_matches_serde_json(text in prop_oneof![
        r#"\{[ -~\t\n]{0,60}"#,
        r#"\{ ?("[a-z\\"]{0,3}" ?: ?(-?[0-9.eE+]{1,4}|"[a-z\\u0-9]{0,5}"|true|nul|null|\[1?,?\]|\{\}|\{"x":\[\{\}\]\}) ?,? ?){0,3}\}? ?"#,
    ]) {
        let serde = serde_json::from_str::<serde_json::Value>(&text);
        // Numbers past f64's range are refused by serde_json and kept as
        // written here.
        prop_assume!(!serde.as_ref().is_err_and(|e| e.to_string().contains("out of range")));
        let serde_ok = serde.is_ok_and(|v| v.is_object());
        prop_assert_eq!(json::object_pairs(text.as_bytes()).is_some(), serde_ok, "{}", text);
    }
}

#[test]
fn key_roles_are_the_documented_lists() {
    let check = |key: &str, want: Role| {
        for spelled in [key.to_string(), key.to_uppercase(), key.to_lowercase()] {
            assert_eq!(role(&spelled), want, "{spelled}");
        }
    };
    for (rank, key) in LEVEL_KEYS.iter().enumerate() {
        check(key, Role::Level(rank));
    }
    for (keys, want) in [
        (MESSAGE_KEYS, Role::Message),
        (TRACE_ID_KEYS, Role::TraceId),
        (SPAN_ID_KEYS, Role::SpanId),
    ] {
        for key in keys {
            check(key, want);
        }
    }
    for other in [
        "ts",
        "status",
        "levels",
        "message_id",
        "trace",
        "severity_text_x",
        "",
    ] {
        assert_eq!(role(other), Role::Field, "{other}");
    }
}
