use proptest::prelude::*;

use super::*;

const SPEC: &str = r#"
name: indexer
role: search
env: devel
instances: 3
resources: {cpu: 1.5, ram_mb: 2048, disk_mb: 10240}
ports: [http, admin]
processes:
  - name: fetch
    cmd: ./fetch --shard {{instance}} --of {{role}}/{{env}}/{{name}}
  - name: serve
    cmd: ./serve --port {{ports.http}} --admin {{ ports.admin }} --task {{task_id}} --run {{run}}
labels: {team: search}
"#;

/// `SPEC` with `changes` (YAML) merged over it.
fn with(changes: &str) -> String {
    let mut doc: Value = serde_yaml_ng::from_str(SPEC).unwrap();
    merge(&mut doc, serde_yaml_ng::from_str(changes).unwrap());
    serde_yaml_ng::to_string(&doc).unwrap()
}

fn spec_error(yaml: &str, stage: Option<&str>) -> (String, String) {
    match parse(yaml, stage) {
        Err(Error::Spec { field, message }) => (field, message),
        other => panic!("expected a spec error, got {other:?}"),
    }
}

fn resources(cpu: f64, ram_mb: u64, disk_mb: u64) -> Resources {
    Resources {
        cpu,
        ram_mb,
        disk_mb,
    }
}

fn process(name: &str, cmd: &str) -> Process {
    Process {
        name: name.into(),
        cmd: cmd.into(),
    }
}

#[test]
fn a_full_spec_resolves_and_round_trips_through_json() {
    let spec = parse(SPEC, None).unwrap();
    let mut lines = SPEC
        .lines()
        .filter_map(|line| line.strip_prefix("    cmd: "));
    let expected = JobSpec {
        key: JobKey::new("search", "devel", "indexer").unwrap(),
        stage: None,
        instances: 3,
        resources: resources(1.5, 2048, 10240),
        processes: vec![
            process("fetch", lines.next().unwrap()),
            process("serve", lines.next().unwrap()),
        ],
        ports: vec!["http".into(), "admin".into()],
        restart: RestartPolicy {
            policy: Policy::Always,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 60_000,
            max_restarts: None,
        },
        cron: None,
        labels: BTreeMap::from([("team".into(), "search".into())]),
        filesystem: Filesystem::default(),
        multiline: None,
    };
    assert_eq!(spec, expected);
    let json = serde_json::to_string(&spec).unwrap();
    assert!(json.contains(r#""key":"search/devel/indexer""#), "{json}");
    let back: JobSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    back.validate().unwrap();

    let cron = parse(&with("{cron: '0 3 * * *', envs: {prod: {}}}"), Some("prod")).unwrap();
    let back: JobSpec = serde_json::from_str(&serde_json::to_string(&cron).unwrap()).unwrap();
    assert_eq!(back, cron);
    assert_eq!(back.cron.unwrap().to_string(), "0 3 * * *");
    assert_eq!(back.stage.as_deref(), Some("prod"));
}

#[test]
fn anchors_and_merge_keys_work() {
    let yaml = SPEC.replace("resources: {", "resources: &small {")
        + "envs: {qa: {resources: *small}, prod: {resources: {<<: *small, ram_mb: 4096}}}\n";
    assert_eq!(
        parse(&yaml, Some("prod")).unwrap().resources,
        resources(1.5, 4096, 10240)
    );
    assert_eq!(parse(&yaml, Some("qa")).unwrap().resources.ram_mb, 2048);
}

#[test]
fn restart_shorthand_and_long_forms() {
    let restart = |changes: &str| {
        let r = parse(&with(changes), None).unwrap().restart;
        (
            r.policy,
            r.initial_backoff_ms,
            r.max_backoff_ms,
            r.max_restarts,
        )
    };
    use Policy::*;
    for (changes, expected) in [
        ("restart: on-failure", (OnFailure, 1_000, 60_000, None)),
        ("restart: never", (Never, 1_000, 60_000, None)),
        (
            "restart: {policy: on-failure, limit: 5}",
            (OnFailure, 1_000, 60_000, Some(5)),
        ),
        (
            "restart: {backoff: {initial_ms: 500, max_ms: 30000}}",
            (Always, 500, 30_000, None),
        ),
        (
            "restart: {backoff: {initial_ms: 120000}}",
            (Always, 120_000, 120_000, None),
        ),
        (
            "restart: {backoff: {max_ms: 200}, limit: 0}",
            (Always, 200, 200, Some(0)),
        ),
        // Cron jobs default to `never` and may retry a failed tick.
        ("cron: '@daily'", (Never, 1_000, 60_000, None)),
        (
            "{cron: '@daily', restart: {limit: 3}}",
            (Never, 1_000, 60_000, Some(3)),
        ),
        (
            "{cron: '@daily', restart: on-failure}",
            (OnFailure, 1_000, 60_000, None),
        ),
    ] {
        assert_eq!(restart(changes), expected, "{changes}");
    }
}

#[test]
fn restart_decisions_and_backoff() {
    let policy = RestartPolicy {
        policy: Policy::OnFailure,
        initial_backoff_ms: 1_000,
        max_backoff_ms: 60_000,
        max_restarts: Some(2),
    };
    assert!(policy.should_restart(false, 0) && policy.should_restart(false, 1));
    assert!(!policy.should_restart(false, 2) && !policy.should_restart(true, 0));
    let always = RestartPolicy {
        policy: Policy::Always,
        max_restarts: None,
        ..policy
    };
    assert!(always.should_restart(true, u32::MAX));
    assert!(
        !RestartPolicy {
            policy: Policy::Never,
            ..always
        }
        .should_restart(false, 0)
    );
    let delays = [0, 1, 2, 5, 6, 63, 64, u32::MAX].map(|n| policy.backoff_ms(n));
    assert_eq!(
        delays,
        [1_000, 2_000, 4_000, 32_000, 60_000, 60_000, 60_000, 60_000]
    );
}

#[test]
fn stage_overrides_merge_over_the_base() {
    let yaml = with(
        "envs: {prod: {instances: 12, resources: {ram_mb: 8192}, labels: {tier: gold}}, \
             qa: {processes: [{name: check, cmd: ./check}], ports: []}}",
    );
    let prod = parse(&yaml, Some("prod")).unwrap();
    assert_eq!(prod.key.to_string(), "search/prod/indexer");
    assert_eq!((prod.stage.as_deref(), prod.instances), (Some("prod"), 12));
    assert_eq!(prod.resources, resources(1.5, 8192, 10240));
    assert_eq!((prod.labels.len(), prod.processes.len()), (2, 2));
    let qa = parse(&yaml, Some("qa")).unwrap();
    assert_eq!(qa.processes, [process("check", "./check")]);
    assert!(qa.ports.is_empty());
    let devel = parse(&yaml, None).unwrap();
    assert_eq!(
        (devel.key.env.as_str(), devel.stage, devel.instances),
        ("devel", None, 3)
    );
    let devel = parse(&yaml, Some("devel")).unwrap();
    assert_eq!(
        (devel.stage.as_deref(), devel.instances),
        (Some("devel"), 3)
    );

    // Overrides of the spec's own env apply without --stage too.
    assert_eq!(
        parse(&with("envs: {devel: {instances: 1}}"), None)
            .unwrap()
            .instances,
        1
    );
    // null unsets an optional field; a stage can make a cron job.
    let cron = with("{cron: '@hourly', envs: {prod: {cron: null}, qa: {cron: '@daily'}}}");
    assert!(parse(&cron, Some("prod")).unwrap().cron.is_none());
    let qa = parse(&cron, Some("qa")).unwrap();
    assert_eq!(qa.cron.unwrap().to_string(), "@daily");
    // Without env in the base, a stage provides it.
    let no_env = SPEC.replace("env: devel\n", "") + "envs: {qa: {}}\n";
    assert_eq!(parse(&no_env, Some("qa")).unwrap().key.env, "qa");
    assert_eq!(spec_error(&no_env, Some("prod")).0, "envs");
    assert_eq!(spec_error(&no_env, None).0, "env");
}

#[test]
fn stage_errors_name_the_override() {
    let yaml = with("envs: {prod: {instances: 12}}");
    let (field, message) = spec_error(&yaml, Some("staging"));
    assert_eq!(field, "envs");
    assert!(
        message.contains("\"staging\"") && message.contains("[prod]"),
        "{message}"
    );
    assert_eq!(spec_error(&yaml, Some("../prod")).0, "env");
    // Overrides are strict even when their stage is not chosen.
    let bad = with("envs: {prod: {instances: 2, resources: {ram_mbb: 1}}}");
    assert_eq!(spec_error(&bad, None).0, "envs.prod.resources.ram_mbb");
    let (field, message) = spec_error(&with("envs: {prod: {instancez: 2}}"), Some("prod"));
    assert_eq!(field, "envs.prod.instancez");
    assert!(message.contains("expected one of"), "{message}");
    // And resolved: prod's zero instances fail a devel deploy too.
    let (field, message) = spec_error(&with("envs: {prod: {instances: 0}}"), None);
    assert_eq!(field, "instances");
    assert!(message.contains("stage \"prod\""), "{message}");
    for (changes, field) in [
        ("envs: {prod: {envs: {}}}", "envs.prod.envs"),
        ("envs: {prod: {env: qa}}", "envs.prod.env"),
        ("envs: {'a b': {}}", "envs"),
    ] {
        assert_eq!(spec_error(&with(changes), None).0, field, "{changes}");
    }
}

/// Changes to `SPEC`, the field the error names and words of its message.
    #[rustfmt::skip]
    const BAD: &[(&str, &str, &str)] = &[
        ("bogus: 1", "bogus", "unknown field, expected one of `name`"),
        ("processes: [{name: a, cmd: x}, {name: b, cmdd: y}]", "processes[1].cmdd", "unknown"),
        ("processes: [{name: a}]", "processes[0].cmd", "required"),
        ("name: ../x", "name", "letters, digits"),
        ("name: a/b", "name", "letters, digits"),
        ("name: 'a b'", "name", "letters, digits"),
        ("name: ''", "name", "empty"),
        ("name: .hidden", "name", "start with"),
        ("role: -rf", "role", "start with"),
        ("role: null", "role", "required"),
        ("name: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "name", "64"),
        ("instances: 0", "instances", "must be positive, got 0"),
        ("instances: -2", "instances", "positive"),
        ("instances: 10001", "instances", "at most 10000"),
        ("instances: '3'", "instances", "number"),
        ("resources: {disk_mb: -5}", "resources.disk_mb", "must be positive, got -5"),
        ("resources: {cpu: 0}", "resources.cpu", "positive"),
        ("resources: {cpu: -1}", "resources.cpu", "positive"),
        ("resources: {cpu: .nan}", "resources.cpu", "positive number"),
        ("resources: {cpu: 2000}", "resources.cpu", "at most 1024"),
        ("resources: {ram_mb: 99999999999}", "resources.ram_mb", "16 TiB"),
        ("resources: {ram_mb: 1.5}", "resources.ram_mb", "must be an integer, got 1.5"),
        ("resources: {cpux: 1}", "resources.cpux", "unknown"),
        ("resources: {disk_mb: null}", "resources.disk_mb", "required"),
        ("processes: []", "processes", "at least one"),
        ("processes: [{name: a, cmd: x}, {name: a, cmd: y}]", "processes[1].name", "earlier"),
        ("processes: [{name: a..b, cmd: x}]", "processes[0].name", ".."),
        ("processes: [{name: a, cmd: '  '}]", "processes[0].cmd", "empty"),
        ("processes: [{name: a, cmd: \"x\\0y\"}]", "processes[0].cmd", "NUL"),
        ("processes: [{name: a, cmd: 'x {{ports.grpc}}'}]", "processes[0].cmd", "\"grpc\""),
        ("processes: [{name: a, cmd: 'x {{hostname}}'}]", "processes[0].cmd", "placeholder"),
        ("processes: [{name: a, cmd: 'x {{}}'}]", "processes[0].cmd", "placeholder"),
        ("processes: [{name: a, cmd: 'x {{instance'}]", "processes[0].cmd", "not closed"),
        ("ports: [http, http]", "ports[1]", "twice"),
        ("ports: ['a b']", "ports[0]", "letters"),
        ("cron: '61 * * * *'", "cron", "minute"),
        ("cron: '0 0 30 2 *'", "cron", "never fires"),
        ("{cron: '@daily', restart: always}", "restart", "cron"),
        ("{cron: '@daily', restart: {policy: always}}", "restart", "cron"),
        ("restart: sometimes", "restart", "unknown variant"),
        ("restart: 3", "restart", "on-failure"),
        ("restart: {policy: never, limitt: 1}", "restart.limitt", "unknown"),
        ("restart: {policy: sometimes}", "restart.policy", "unknown variant"),
        ("restart: {backoff: {initial_ms: 0}}", "restart.backoff.initial_ms", "positive"),
        ("restart: {backoff: {initial_ms: 5000, max_ms: 1000}}", "restart.backoff.max_ms", "5000"),
        ("restart: {backoff: {max_ms: 999999999}}", "restart.backoff.max_ms", "one day"),
        ("restart: {limit: -1}", "restart.limit", "must not be negative"),
        ("labels: {'a b': x}", "labels", "key"),
        ("labels: {team: \"a\\nb\"}", "labels.team", "control"),
        ("labels: {team: 3}", "labels.team", "string"),
        ("filesystem: {read: [relative/path]}", "filesystem.read[0]", "absolute"),
        ("filesystem: {write: [/srv, /srv/../etc]}", "filesystem.write[1]", "`..`"),
        ("filesystem: {reed: [/srv]}", "filesystem.reed", "unknown"),
    ];

#[test]
fn every_error_names_its_field() {
    for (changes, field, words) in BAD {
        let (got, message) = spec_error(&with(changes), None);
        assert_eq!(got, *field, "{changes}: {message}");
        assert!(
            message.contains(words),
            "{changes}: {message:?} lacks {words:?}"
        );
    }
}

#[test]
fn whole_document_errors() {
    let (field, message) = spec_error("name: [unclosed\nrole: x\n", None);
    assert!(
        field.is_empty() && message.starts_with("line 2 column 5: "),
        "{message}"
    );
    assert_eq!(spec_error("", None).0, "");
    assert_eq!(spec_error("- a\n- b\n", None).0, "");
    let (field, message) = spec_error("name: a\nname: b\n", None);
    assert!(
        field.is_empty() && message.contains("duplicate"),
        "{message}"
    );
    let (field, message) = spec_error("resources: {disk_mb: 99999999999999999999999}", None);
    assert!(
        field.is_empty() && message.contains("resources.disk_mb"),
        "{message}"
    );
    let err = parse("bogus: 1", None).unwrap_err().to_string();
    assert!(
        err.starts_with("invalid job spec: bogus: unknown field"),
        "{err}"
    );
}

#[test]
fn commands_render_their_placeholders() {
    let spec = parse(SPEC, None).unwrap();
    let ports = BTreeMap::from([("http".to_string(), 31000), ("admin".to_string(), 31001)]);
    let task_id = "search-devel-indexer-2-7f3a";
    let ctx = TaskContext {
        instance: 2,
        task_id,
        run: 4,
        ports: &ports,
        key: &spec.key,
    };
    let rendered: Vec<String> = spec.processes.iter().map(|p| p.render(&ctx)).collect();
    assert_eq!(
        rendered,
        [
            "./fetch --shard 2 --of search/devel/indexer",
            "./serve --port 31000 --admin 31001 --task search-devel-indexer-2-7f3a --run 4",
        ]
    );
    for (cmd, expected) in [
        ("echo '}}' {{ {x} }}", "echo '}}' {{ {x} }}"), // invalid: left alone
        ("echo {{ports.grpc}} {{run}}", "echo {{ports.grpc}} 4"), // no such port
        ("echo } { }} {{{{instance}}", "echo } { }} {{{{instance}}"),
        ("{{instance}}{{ run\t}}", "24"),
    ] {
        assert_eq!(process("p", cmd).render(&ctx), expected, "{cmd}");
    }
}

#[test]
fn job_keys_parse_display_and_serialize() {
    let key: JobKey = "search/prod/indexer".parse().unwrap();
    assert_eq!(
        [&key.role, &key.env, &key.name],
        ["search", "prod", "indexer"]
    );
    assert_eq!(
        serde_json::to_string(&key).unwrap(),
        "\"search/prod/indexer\""
    );
    for bad in [
        "", "a/b", "a/b/c/d", "a//c", "../b/c", "a/./c", "a/b/.c", "a/b/c d", "/a/b",
    ] {
        assert!(
            matches!(JobKey::parse(bad), Err(Error::Spec { .. })),
            "{bad}"
        );
    }
    assert!(serde_json::from_str::<JobKey>("\"a/b/..\"").is_err());
    valid_name("ports[0]", "http-2.v1_x").unwrap();
}

fn segment() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_][A-Za-z0-9_-]{0,20}(\\.[A-Za-z0-9_-]{1,20}){0,2}"
}

proptest! {
    #[test]
    fn valid_keys_round_trip(role in segment(), env in segment(), name in segment()) {
        let key = JobKey::new(&role, &env, &name).unwrap();
        prop_assert_eq!(&JobKey::parse(&key.to_string()).unwrap(), &key);
        let json = serde_json::to_string(&key).unwrap();
        prop_assert_eq!(serde_json::from_str::<JobKey>(&json).unwrap(), key);
    }

    #[test]
    fn keys_with_escapes_are_refused(
        key in (segment(), segment(), segment()).prop_map(|(r, e, n)| format!("{r}/{e}/{n}")),
        bad in prop::sample::select(vec!["/", "..", "\0", " ", "\t", "\n"]),
        at in any::<prop::sample::Index>(),
    ) {
        let mut key = key;
        key.insert_str(at.index(key.len() + 1), bad);
        prop_assert!(JobKey::parse(&key).is_err(), "{:?} was accepted", key);
    }

    #[test]
    fn any_accepted_key_is_safe(text in "\\PC{0,40}|[a./ -]{0,12}") {
        if let Ok(key) = JobKey::parse(&text) {
            prop_assert_eq!(key.to_string(), text.clone());
            for segment in [&key.role, &key.env, &key.name] {
                prop_assert!(!segment.is_empty() && !segment.starts_with('.'));
                prop_assert!(!segment.contains("..") && !segment.contains(['/', '\0', ' ']));
            }
        }
    }
}

/// One change to a valid document.
#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Delete(prop::sample::Index),
    Truncate(prop::sample::Index),
    /// A piece of YAML syntax or an awkward value.
    Splice(prop::sample::Index, &'static str),
}

/// Pieces of YAML that get a mutation past the tokenizer.
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "{", "}", "[", "]", ":", ": ", ", ", "- ", "\n", "\n  ", "\t", "'", "\"", "#", "&a ", "*a",
        "<<: ", "!!str ", "!!binary ", "? ", "|\n", ">\n", "~", "null", "-1", "0", "1.5", ".nan",
        ".inf", "99999999999999999999999", "0x10", "1e400", "true", "{{", "}}", "{{ports.",
        "{{instance}}", "envs: {prod: {", "processes", "resources", "cmd", "name", "\u{0}",
        "\u{feff}", "é", "...", "---\n",
    ];

fn edit() -> impl Strategy<Value = Edit> {
    use prop::sample::{Index, select};
    prop_oneof![
        (any::<Index>(), 1u8..).prop_map(|(i, b)| Edit::Flip(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
        (any::<Index>(), select(PIECES)).prop_map(|(i, p)| Edit::Splice(i, p)),
    ]
}

/// `valid` with one to four edits, as text (invalid UTF-8 replaced).
fn mutated(valid: String) -> impl Strategy<Value = String> {
    prop::collection::vec(edit(), 1..5).prop_map(move |edits| {
        let mut bytes = valid.clone().into_bytes();
        for edit in edits {
            let len = bytes.len();
            match edit {
                Edit::Flip(i, mask) if len > 0 => bytes[i.index(len)] ^= mask,
                Edit::Insert(i, b) => bytes.insert(i.index(len + 1), b),
                Edit::Delete(i) if len > 0 => drop(bytes.remove(i.index(len))),
                Edit::Truncate(i) => bytes.truncate(i.index(len + 1)),
                Edit::Splice(i, piece) => {
                    let i = i.index(len + 1);
                    bytes.splice(i..i, piece.bytes());
                }
                Edit::Flip(..) | Edit::Delete(_) => {}
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// A spec with every section, overrides for two stages included.
fn full_spec() -> String {
    with(
        "{cron: '*/15 * * * *', restart: {policy: on-failure, backoff: {initial_ms: 500, \
             max_ms: 30000}, limit: 3}, envs: {prod: {instances: 12, resources: {ram_mb: 8192}, \
             cron: null}, qa: {processes: [{name: check, cmd: './check {{ports.http}}'}]}}}",
    )
}

/// Parses `text` for its own env and for `prod`: never a panic, and an
/// error is a spec error that names its field, unless the text is not
/// a YAML mapping at all.
fn check_spec(text: &str) -> std::result::Result<(), TestCaseError> {
    for stage in [None, Some("prod")] {
        let Err(err) = parse(text, stage) else {
            continue;
        };
        let shown = err.to_string();
        let Error::Spec { field, message } = err else {
            return Err(TestCaseError::fail(format!("not a spec error: {shown}")));
        };
        prop_assert!(!message.is_empty(), "{:?}: empty message", text);
        prop_assert!(shown.starts_with("invalid job spec: "), "{}", shown);
        if field.is_empty() {
            let mut doc = serde_yaml_ng::from_str::<Value>(text);
            if let Ok(doc) = &mut doc {
                let merged = doc.apply_merge();
                prop_assert!(
                    merged.is_err() || !doc.is_mapping(),
                    "{:?} (stage {:?}): {:?} names no field",
                    text,
                    stage,
                    message
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn spec_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_spec(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn spec_mutations_never_panic(text in mutated(full_spec())) {
        check_spec(&text)?;
    }
}

#[test]
fn a_wrong_type_deep_in_a_stage_names_its_path() {
    let yaml = with("envs: {prod: {processes: [{name: a, cmd: ./a}, {name: b, cmd: [x]}]}}");
    let err = parse(&yaml, Some("prod")).unwrap_err().to_string();
    assert_eq!(
        err,
        "invalid job spec: envs.prod.processes[1].cmd: invalid type: sequence, expected a \
             string"
    );
}

/// The YAML scanner's time grows with flow nesting times length: deep
/// nesting is refused before it is scanned, however it is quoted.
#[test]
fn deeply_nested_flow_collections_are_refused_before_parsing() {
    for yaml in [
        format!("name: {}", "[".repeat(1 << 20)),
        format!("name: {}", "{a: ".repeat(1 << 18)),
        format!("name: {}", "[ \"]\" ".repeat(1 << 17)),
        format!("cmd: '{}'", "x{{ run }}".repeat(1 << 16)),
    ] {
        let (field, message) = spec_error(&yaml, None);
        assert!(field.is_empty(), "{field}");
        assert!(message.contains("'[' and '{' in"), "{message}");
    }
    // A large spec of ordinary shape is not.
    let processes: String = (0..62)
        .map(|i| {
            format!(
                "  - {{name: p{i}, cmd: './p --port {{{{ports.http}}}} {}'}}\n",
                "x".repeat(900)
            )
        })
        .collect();
    let yaml = SPEC.replace("processes:\n", &format!("processes:\n{processes}"));
    assert_eq!(parse(&yaml, None).unwrap().processes.len(), 64);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_cron_text_is_parsed_or_refused(cron in "\\PC{0,40}|[0-9*/,@ -]{0,30}") {
        let yaml = with(&format!("{{cron: {}, restart: never}}", serde_json::to_string(&cron).unwrap()));
        if let Err(err) = parse(&yaml, None) {
            let Error::Spec { field, .. } = &err else {
                return Err(TestCaseError::fail(format!("not a spec error: {err}")));
            };
            prop_assert_eq!(field.as_str(), "cron", "{}", err);
        }
    }
}

#[test]
fn multiline_rules_are_read_and_bad_ones_named() {
    use sluice_schema::multiline::{Multiline, Rule};
    let spec = parse(&with("{multiline: java}"), None).unwrap();
    assert_eq!(spec.multiline, Some(Multiline::new(Rule::Java)));
    let spec = parse(
        &with(r"{multiline: {start: '^\d{4}-', timeout_ms: 500}}"),
        None,
    )
    .unwrap();
    assert_eq!(
        spec.multiline,
        Some(Multiline {
            rule: Rule::Start(r"^\d{4}-".into()),
            timeout_ms: 500
        })
    );
    let back: JobSpec = serde_json::from_str(&serde_json::to_string(&spec).unwrap()).unwrap();
    assert_eq!(back, spec);
    for (bad, says) in [
        ("{multiline: ruby}", "unknown preset \"ruby\""),
        ("{multiline: {start: '('}}", "start: regex parse error"),
        (
            "{multiline: {preset: go, timeout_ms: 0}}",
            "timeout_ms: must be between",
        ),
        ("{multiline: {stop: x}}", "multiline.stop: unknown field"),
    ] {
        let err = parse(&with(bad), None).unwrap_err().to_string();
        assert!(
            err.contains("multiline") && err.contains(says),
            "{bad}: {err}"
        );
    }
}
