//! SQL over a real archive (splits and catalog in a store): search through
//! the indexes decodes only the matching rows, pruning by time and job reads
//! fewer splits, read-only statements only, restrictions the SQL cannot
//! escape, named errors for bad SQL and corrupt splits, context lines.

use std::collections::BTreeSet;

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Int64Type;
use object_store::{ObjectStoreExt, PutPayload};
use sluice_archive::store::Store;
use sluice_query::{
    EngineConfig, Hit, QueryEngine, QueryError, QueryOutput, QueryRequest, Restrictions, TimeRange,
};

use sluice_testkit::archive::{add_split, memory_store, rows};

const HOUR: i64 = 3600 * 1_000_000_000;
/// 2026-11-21 07:00 UTC.
const T0: i64 = 1_795_244_400 * 1_000_000_000;

/// Three splits: hour 07 with `www/prod/web` (source 1) and `db/prod/pg`
/// (source 2), hour 08 with `www/prod/web` (source 3); 100 rows each, one
/// of which names a needle.
async fn archive() -> (Store, Vec<String>) {
    let store = memory_store();
    let mut keys = Vec::new();
    for (source, job, ts) in [
        (1, "www/prod/web", T0),
        (2, "db/prod/pg", T0 + 10),
        (3, "www/prod/web", T0 + HOUR),
    ] {
        let mut rows = rows(source, job, 0..100, ts);
        rows[42].text = format!("ERROR OutOfMemoryError in worker-{source}").into();
        keys.push(add_split(&store, rows).await.key);
    }
    (store, keys)
}

async fn engine(store: &Store) -> QueryEngine {
    QueryEngine::open(store.clone(), EngineConfig::default())
        .await
        .unwrap()
}

async fn run(engine: &QueryEngine, sql: &str) -> QueryOutput {
    engine
        .query(&QueryRequest {
            sql: sql.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// The error `sql` ends with.
async fn fails(engine: &QueryEngine, sql: &str) -> QueryError {
    match engine
        .query(&QueryRequest {
            sql: sql.into(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => panic!("{sql}: ran"),
        Err(e) => e,
    }
}

fn count(output: &QueryOutput) -> i64 {
    output.batches[0]
        .column(0)
        .as_primitive::<Int64Type>()
        .value(0)
}

fn ints(batches: &[RecordBatch], column: usize) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let array = b.column(column).as_primitive::<Int64Type>();
            (0..array.len()).map(|i| array.value(i)).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn search_decodes_only_the_matching_rows() {
    let (store, _) = archive().await;
    let engine = engine(&store).await;
    let total = run(&engine, "SELECT count(*) FROM logs").await;
    assert_eq!(count(&total), 300);

    let sql = "SELECT source_id, \"offset\" FROM logs WHERE search(line, 'outofmemoryerror') \
               ORDER BY source_id";
    let hits = run(&engine, sql).await;
    assert_eq!(ints(&hits.batches, 0), [1, 2, 3]);
    assert_eq!(ints(&hits.batches, 1), [4200, 4200, 4200]);
    assert_eq!(hits.stats.splits_searched, 3);
    assert_eq!(hits.stats.rows_selected_by_index, 3, "{:?}", hits.stats);

    // The same answer by scan, and by regex.
    for sql in [
        "SELECT source_id FROM logs WHERE line LIKE '%OutOfMemoryError%' ORDER BY source_id",
        "SELECT source_id FROM logs WHERE regexp_like(line, 'outofmemory', 'i') ORDER BY source_id",
    ] {
        assert_eq!(
            ints(&run(&engine, sql).await.batches, 0),
            [1, 2, 3],
            "{sql}"
        );
    }

    // A term nobody logged reads no split at all; a boolean query and a
    // phrase are answered like the scan.
    let none = run(
        &engine,
        "SELECT count(*) FROM logs WHERE search(line, 'nothere')",
    )
    .await;
    assert_eq!(count(&none), 0);
    assert_eq!(none.stats.splits_without_hits, 3);
    assert!(none.stats.splits_read.is_empty());
    // With nothing cached, each split's term filter rules such a search
    // out: no index is fetched. A NOT cannot be ruled out by terms, so its
    // splits' indexes are opened.
    let cold = QueryEngine::open(store.clone(), EngineConfig::default())
        .await
        .unwrap();
    let none = run(
        &cold,
        "SELECT count(*) FROM logs WHERE search(line, 'nothere OR nowhere')",
    )
    .await;
    assert_eq!((count(&none), none.stats.splits_skipped_by_terms), (0, 3));
    let found = run(
        &cold,
        "SELECT count(*) FROM logs WHERE search(line, 'outofmemoryerror AND nothere')",
    )
    .await;
    assert_eq!((count(&found), found.stats.splits_skipped_by_terms), (0, 3));
    let not = run(
        &cold,
        "SELECT count(*) FROM logs WHERE search(line, 'NOT nothere')",
    )
    .await;
    assert_eq!((count(&not), not.stats.splits_skipped_by_terms), (300, 0));
    let phrase = run(
        &engine,
        "SELECT count(*) FROM logs WHERE search(line, '\"worker 2\" OR (error AND NOT outofmemoryerror)')",
    )
    .await;
    assert_eq!(count(&phrase), 1);
    let words = run(
        &engine,
        "SELECT count(*) FROM logs WHERE search(line, 'line AND job') AND job = 'www/prod/web'",
    )
    .await;
    assert_eq!(count(&words), 198);
}

/// The index is Sluice's own, outside what Delta knows: a split without
/// one is read whole, and `search()` still answers exactly.
#[tokio::test]
async fn a_split_whose_index_is_missing_is_read_whole() {
    let (store, keys) = archive().await;
    let catalog = sluice_testkit::archive::catalog(&store).await;
    let index = catalog
        .state()
        .split(&keys[0])
        .unwrap()
        .index_key
        .clone()
        .unwrap();
    store
        .store
        .delete(&store.object_path(&index))
        .await
        .unwrap();
    let engine = engine(&store).await;
    let out = run(
        &engine,
        "SELECT count(*) FROM logs WHERE search(line, 'OutOfMemoryError')",
    )
    .await;
    assert_eq!(count(&out), 3);
    // The other two splits' indexes selected their hit; this one was read whole.
    assert_eq!(out.stats.rows_selected_by_index, 2);
    assert_eq!(out.stats.splits_read.len(), 3);
}

#[tokio::test]
async fn time_and_job_filters_prune_splits_before_reading() {
    let (store, keys) = archive().await;
    let engine = engine(&store).await;
    let late = run(
        &engine,
        &format!(
            "SELECT count(*) FROM logs WHERE ts >= to_timestamp_nanos({})",
            T0 + HOUR
        ),
    )
    .await;
    assert_eq!(count(&late), 100);
    assert_eq!(late.stats.splits_read, [keys[2].clone()]);
    // now() is folded into a constant before the scan sees it.
    let old = run(
        &engine,
        "SELECT count(*) FROM logs WHERE ts < now() - INTERVAL '36500 days'",
    )
    .await;
    assert_eq!(count(&old), 0);
    assert!(old.stats.splits_read.is_empty(), "{:?}", old.stats);
    let pg = run(&engine, "SELECT count(*) FROM logs WHERE role = 'db'").await;
    assert_eq!(count(&pg), 100);
    assert_eq!(pg.stats.splits_read, [keys[1].clone()]);
    assert_eq!(pg.stats.splits_pruned, 2);
}

#[tokio::test]
async fn restrictions_hold_whatever_the_sql_says() {
    let (store, _) = archive().await;
    let engine = engine(&store).await;
    let only_www = Restrictions {
        roles: Some(BTreeSet::from(["www".to_string()])),
        time: TimeRange::new(Some(T0 + HOUR), None),
        ..Default::default()
    };
    for sql in [
        "SELECT count(*) FROM logs",
        "SELECT count(*) FROM logs WHERE role = 'db' OR role = 'www'",
        "SELECT count(*) FROM (SELECT * FROM logs UNION ALL SELECT * FROM logs WHERE role <> 'www')",
    ] {
        let output = engine
            .query(&QueryRequest {
                sql: sql.into(),
                restrictions: only_www.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(count(&output), 100, "{sql}");
    }
}

#[tokio::test]
async fn only_read_only_queries_run() {
    let (store, _) = archive().await;
    let engine = engine(&store).await;
    for sql in [
        "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
        "CREATE TABLE x AS SELECT * FROM logs",
        "COPY (SELECT * FROM logs) TO '/tmp/sluice-copy-test.parquet'",
        "INSERT INTO logs SELECT * FROM logs",
        "DROP TABLE logs",
        "SET datafusion.execution.batch_size = 1",
        "CREATE VIEW v AS SELECT 1",
    ] {
        let e = fails(&engine, sql).await;
        assert!(
            matches!(e, QueryError::Forbidden(_) | QueryError::Sql(_)),
            "{sql}: {e:?}"
        );
        assert!(
            e.to_string().contains("not supported") || e.to_string().contains("refused"),
            "{sql}: {e}"
        );
    }
    // No file or URL can be named as a table.
    for sql in [
        "SELECT * FROM '/etc/passwd'",
        "SELECT * FROM 'file:///etc/passwd'",
        "SELECT * FROM 's3://bucket/x.parquet'",
    ] {
        let e = fails(&engine, sql).await;
        assert!(matches!(e, QueryError::Sql(_)), "{sql}: {e:?}");
    }
    assert!(!std::path::Path::new("/tmp/sluice-copy-test.parquet").exists());
}

#[tokio::test]
async fn bad_sql_says_what_is_wrong() {
    let (store, _) = archive().await;
    let engine = engine(&store).await;
    let cases = [
        ("SELEC * FROM logs", "SELEC"),
        ("SELECT nosuchcolumn FROM logs", "nosuchcolumn"),
        ("SELECT * FROM nosuchtable", "nosuchtable"),
        (
            "SELECT * FROM logs WHERE search(line, 'a AND')",
            "search query",
        ),
    ];
    for (sql, needle) in cases {
        let e = fails(&engine, sql).await;
        assert!(e.to_string().contains(needle), "{sql}: {e}");
        assert!(matches!(e, QueryError::Sql(_)), "{sql}: {e:?}");
    }
    let e = fails(&engine, "SELECT count(*) FROM logs WHERE search(line, job)").await;
    assert!(e.to_string().contains("constant string"), "{e}");
    // EXPLAIN (ANALYZE) shows the plan.
    for sql in [
        "EXPLAIN SELECT count(*) FROM logs WHERE search(line, 'error')",
        "EXPLAIN ANALYZE SELECT count(*) FROM logs WHERE search(line, 'error')",
    ] {
        let output = run(&engine, sql).await;
        assert!(output.num_rows() > 0, "{sql}");
    }
}

#[tokio::test]
async fn a_cast_of_ts_is_not_taken_for_ts() {
    let (store, _) = archive().await;
    let engine = engine(&store).await;
    // Rows at T0 + 0..100 ns are all in the second of T0.
    let second = run(
        &engine,
        &format!(
            "SELECT count(*) FROM logs WHERE CAST(ts AS TIMESTAMP(0)) <= to_timestamp_seconds({})",
            T0 / 1_000_000_000
        ),
    )
    .await;
    assert_eq!(count(&second), 200);
}

#[tokio::test]
async fn a_corrupt_split_is_named_or_skipped() {
    let (store, keys) = archive().await;
    let engine = engine(&store).await;
    // Garbage where the second split's Parquet file was.
    let path = object_store::path::Path::from(keys[1].as_str());
    store
        .store
        .put(
            &path,
            PutPayload::from_static(b"PAR1 not a parquet file PAR1"),
        )
        .await
        .unwrap();
    let e = fails(
        &engine,
        "SELECT count(*) FROM logs WHERE line LIKE '%line%'",
    )
    .await;
    match &e {
        QueryError::CorruptSplit { key, .. } => assert_eq!(key, &keys[1]),
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains(&keys[1]));

    let output = engine
        .query(&QueryRequest {
            sql: "SELECT count(*) FROM logs".into(),
            skip_corrupt: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(count(&output), 200);
    assert_eq!(output.warnings.len(), 1);
    assert!(output.warnings[0].contains(&keys[1]));
}

#[tokio::test]
async fn context_lines_surround_each_hit_in_its_source() {
    let (store, _) = archive().await;
    let engine = engine(&store).await;
    let hits = [Hit {
        job: "db/prod/pg".into(),
        source_id: 2,
        offset: 4200,
        ts_unix_nanos: T0 + 10 + 42,
    }];
    let groups = engine
        .context(&hits, 2, 3, &Restrictions::default())
        .await
        .unwrap();
    let offsets: Vec<(u64, bool)> = groups[0].lines.iter().map(|l| (l.offset, l.hit)).collect();
    assert_eq!(
        offsets,
        [
            (4000, false),
            (4100, false),
            (4200, true),
            (4300, false),
            (4400, false),
            (4500, false)
        ]
    );
    assert!(groups[0].lines[2].line.contains("OutOfMemoryError"));
}

#[tokio::test]
async fn every_query_reads_the_latest_commit() {
    let (store, _) = archive().await;
    let engine = engine(&store).await;
    assert_eq!(count(&run(&engine, "SELECT count(*) FROM logs").await), 300);
    add_split(&store, rows(9, "www/prod/api", 0..5, T0)).await;
    assert_eq!(count(&run(&engine, "SELECT count(*) FROM logs").await), 305);
}

#[tokio::test]
async fn memory_and_time_limits_end_a_query_with_a_clear_error() {
    let (store, _) = archive().await;
    let small = QueryEngine::open(
        store.clone(),
        EngineConfig {
            memory_limit_bytes: 64 << 10,
            ..EngineConfig::default()
        },
    )
    .await
    .unwrap();
    // A sort of every line, a hundred times over, in 64 KiB.
    let e = fails(
        &small,
        "SELECT a.line FROM logs a CROSS JOIN logs b ORDER BY a.line, b.line",
    )
    .await;
    assert!(matches!(e, QueryError::Memory { .. }), "{e:?}");
    assert!(e.to_string().contains("memory limit"), "{e}");

    let hurried = QueryEngine::open(
        store,
        EngineConfig {
            timeout: std::time::Duration::from_millis(1),
            ..EngineConfig::default()
        },
    )
    .await
    .unwrap();
    let e = fails(
        &hurried,
        "SELECT count(*) FROM logs a CROSS JOIN logs b CROSS JOIN logs c",
    )
    .await;
    assert!(matches!(e, QueryError::Timeout(_)), "{e:?}");
}

/// All running queries share one memory pool: while another query holds
/// it, a sort fails naming the shared limit; once it lets go, the same sort
/// runs.
#[tokio::test]
async fn queries_share_one_memory_pool() {
    use datafusion::execution::memory_pool::MemoryConsumer;
    let (store, _) = archive().await;
    let engine = QueryEngine::open(
        store,
        EngineConfig {
            memory_limit_bytes: 1 << 20,
            ..EngineConfig::default()
        },
    )
    .await
    .unwrap();
    let sql = "SELECT line FROM logs ORDER BY line DESC";
    let held = MemoryConsumer::new("another query").register(engine.memory_pool());
    held.try_grow(1 << 20).unwrap();
    let e = fails(&engine, sql).await;
    assert!(matches!(e, QueryError::Memory { .. }), "{e:?}");
    assert!(
        e.to_string().contains("that all running queries share"),
        "{e}"
    );
    drop(held);
    assert_eq!(run(&engine, sql).await.num_rows(), 300);
}

/// A user over `--max-queries-per-user` is refused at once, naming the
/// limit; another user is not held back.
#[tokio::test]
async fn a_user_over_the_query_limit_is_refused() {
    use sluice_query::service::QueryService;
    use sluice_schema::auth::Principal;
    use sluice_schema::pb::query_server::Query as _;
    use std::sync::Arc;
    let (store, _) = archive().await;
    let service = QueryService::new(Arc::new(engine(&store).await)).with_queries_per_user(1);
    let request = |user: &str| {
        let mut request = tonic::Request::new(sluice_schema::pb::QueryRequest {
            sql: "SELECT count(*) FROM logs".into(),
            ..Default::default()
        });
        let principal = Principal::new(user, ["*"], Vec::<String>::new());
        request.extensions_mut().insert(Arc::new(principal));
        request
    };
    let _running = service.running().acquire("alice").unwrap();
    let err = match service.run(request("alice")).await {
        Ok(_) => panic!("alice ran a second query"),
        Err(e) => e,
    };
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    assert!(
        err.message().starts_with("limit queries: user alice"),
        "{}",
        err.message()
    );
    assert!(service.run(request("bob")).await.is_ok());
}

/// A split's Parquet file without the columns parsed from the line, as a
/// build before them wrote it.
fn without_parsed_columns(bytes: bytes::Bytes) -> bytes::Bytes {
    use datafusion::parquet::arrow::ArrowWriter;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
        .unwrap()
        .build()
        .unwrap();
    let keep: Vec<usize> = (0..22).collect();
    let batches: Vec<RecordBatch> = reader.map(|b| b.unwrap().project(&keep).unwrap()).collect();
    assert_eq!(batches[0].schema().field(21).name(), "labels");
    let mut out = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut out, batches[0].schema(), None).unwrap();
    for batch in &batches {
        writer.write(batch).unwrap();
    }
    writer.close().unwrap();
    out.into()
}

fn strings(output: &QueryOutput, column: usize) -> Vec<String> {
    use datafusion::arrow::array::Array;
    output
        .batches
        .iter()
        .flat_map(|b| {
            let c = datafusion::arrow::compute::cast(
                b.column(column),
                &datafusion::arrow::datatypes::DataType::Utf8,
            )
            .unwrap();
            let c = c.as_string::<i32>().clone();
            (0..c.len())
                .map(|i| {
                    if c.is_null(i) {
                        "∅".into()
                    } else {
                        c.value(i).to_string()
                    }
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// JSON, logfmt and plain lines answer by level, message, ids and fields,
/// in SQL and in `search()`; a file written before those columns reads
/// them as null.
#[tokio::test]
async fn structured_lines_answer_by_level_and_field() {
    use datafusion::arrow::array::Array;
    let store = memory_store();
    let lines = [
        r#"{"level":"error","msg":"batch 28 failed","trace_id":"4bf92f3577b34da6","user":"bob","http":{"code":500}}"#,
        r#"{"level":"info","msg":"batch 29 ok","trace_id":"00f067aa0ba902b7","user":"ann"}"#,
        r#"ts=1 level=warn msg="slow query" user=bob"#,
        "ERROR plain failure",
        "nothing to see",
    ];
    let mut new = rows(1, "www/prod/web", 0..5, T0);
    for (row, line) in new.iter_mut().zip(lines) {
        row.text = line.to_string().into();
    }
    add_split(&store, new).await;
    let mut old = rows(2, "www/prod/old", 0..3, T0 + 10);
    old[0].text = "ERROR written before levels were parsed".into();
    sluice_testkit::archive::add_split_as(&store, old, without_parsed_columns).await;
    let engine = engine(&store).await;

    let out = run(
        &engine,
        "SELECT level, message, trace_id, fields['user'] FROM logs \
         WHERE job = 'www/prod/web' ORDER BY \"offset\"",
    )
    .await;
    assert_eq!(strings(&out, 0), ["error", "info", "warn", "error", "∅"]);
    assert_eq!(
        strings(&out, 1),
        ["batch 28 failed", "batch 29 ok", "slow query", "∅", "∅"]
    );
    assert_eq!(
        strings(&out, 2),
        ["4bf92f3577b34da6", "00f067aa0ba902b7", "∅", "∅", "∅"]
    );
    assert_eq!(strings(&out, 3), ["bob", "ann", "bob", "∅", "∅"]);

    let out = run(
        &engine,
        "SELECT count(*) FROM logs WHERE level IN ('warn', 'error')",
    )
    .await;
    assert_eq!(count(&out), 3, "the old file's ERROR line has no level");
    let out = run(
        &engine,
        "SELECT \"offset\" FROM logs WHERE search(line, 'level:error AND trace_id:4bf92f3577b34da6')",
    )
    .await;
    assert_eq!(ints(&out.batches, 0), [0]);
    // A level is searched in the old file's lines too: it is parsed from
    // the line when checking.
    let out = run(
        &engine,
        "SELECT job FROM logs WHERE search(line, 'level:error') ORDER BY job, \"offset\"",
    )
    .await;
    assert_eq!(
        strings(&out, 0),
        ["www/prod/old", "www/prod/web", "www/prod/web"]
    );
    let out = run(
        &engine,
        "SELECT json_get_int(line, 'http', 'code'), json_get_str(line, 'user') FROM logs \
         WHERE search(line, 'fields.http.code:500')",
    )
    .await;
    assert_eq!(strings(&out, 0), ["500"]);
    assert_eq!(strings(&out, 1), ["bob"]);
    // Splits whose levels hold none of those asked for are not read; the
    // old one (levels unknown) always is.
    let out = run(&engine, "SELECT count(*) FROM logs WHERE level = 'fatal'").await;
    assert_eq!((count(&out), out.stats.splits_read.len()), (0, 1));
    let out = run(
        &engine,
        "SELECT count(*) FROM logs WHERE level IN ('warn', 'fatal')",
    )
    .await;
    assert_eq!((count(&out), out.stats.splits_read.len()), (1, 2));
    let out = run(&engine, "SELECT level FROM logs WHERE job = 'www/prod/old'").await;
    assert!(
        out.batches
            .iter()
            .all(|b| b.column(0).null_count() == b.num_rows())
    );
    let err = fails(
        &engine,
        "SELECT 1 FROM logs WHERE search(line, 'level:loud')",
    )
    .await;
    assert!(err.to_string().contains("unknown level"), "{err}");
}
