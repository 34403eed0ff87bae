"""Reads a Sluice archive's Delta tables with engines nobody at Sluice wrote
(DuckDB's delta extension, the `deltalake` package) and prints what each
table holds at each version asked for, per engine, in a form Rust compares
exactly with Sluice's own SQL answer:

  {"logs": {"VERSION": {"duckdb": {"rows": N, "jobs": {JOB: [N, SHA256]}},
                        "deltalake": {...}}, ...},
   "events": {...}}

A job's digest is the SHA-256 of its rows' `source_id offset line-hex`
strings, sorted, each followed by a newline (`source_id` as the unsigned
64-bit fingerprint: Delta stores its bits as a BIGINT); the events' is the
same over their ids. `line-hex` is the hex of `line_bytes` when present
(the exact bytes), else of `line`'s UTF-8.

Usage: delta_readers.py ARCHIVE_DIR [--logs-versions 0,1,…] [--events-versions …]
       [--engines duckdb,deltalake]    (no versions: the latest, as "latest")
       delta_readers.py ARCHIVE_DIR --sql "SELECT …" [--engine duckdb|deltalake]
"""

import argparse
import glob
import hashlib
import json
import os
import sys


def digest(items):
    h = hashlib.sha256()
    for item in sorted(items):
        h.update(item.encode())
        h.update(b"\n")
    return h.hexdigest()


def summarize(table, rows):
    if table == "events":
        return {"rows": len(rows), "jobs": {"*": [len(rows), digest([r["id"] for r in rows])]}}
    jobs = {}
    for r in rows:
        raw = r["line_bytes"] if r["line_bytes"] is not None else r["line"].encode()
        jobs.setdefault(r["job"], []).append(
            "%d\t%d\t%s" % (r["source_id"] & 0xFFFFFFFFFFFFFFFF, r["offset"], bytes(raw).hex())
        )
    return {"rows": len(rows), "jobs": {j: [len(v), digest(v)] for j, v in jobs.items()}}


COLUMNS = {
    "logs": ["job", "source_id", "offset", "line", "line_bytes"],
    "events": ["id"],
}


def duckdb_connection():
    import duckdb
    import duckdb_extension_delta

    base = os.path.dirname(duckdb_extension_delta.__file__)
    ext = glob.glob(os.path.join(base, "extensions", "*", "delta.duckdb_extension"))[0]
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{ext}'")
    return con


def with_duckdb(path, table, version):
    con = duckdb_connection()
    cols = ", ".join('"%s"' % c for c in COLUMNS[table])
    at = "" if version is None else f", version := {int(version)}"
    cur = con.execute(f"SELECT {cols} FROM delta_scan('{path}'{at})")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row)) for row in cur.fetchall()]


def with_deltalake(path, table, version):
    # The package's own engine (QueryBuilder) rather than `to_pyarrow_table`:
    # the latter's pyarrow dataset threads abort the interpreter at exit about
    # one run in three ("terminate called without an active exception",
    # delta-io/delta-rs#2184, apache/arrow#34314) after reading correctly.
    import deltalake
    import pyarrow

    dt = deltalake.DeltaTable(path, version=version)
    cols = ", ".join('"%s"' % c for c in COLUMNS[table])
    reader = deltalake.QueryBuilder().register("t", dt).execute(f"SELECT {cols} FROM t")
    return [row for batch in reader for row in pyarrow.record_batch(batch).to_pylist()]


ENGINES = {"duckdb": with_duckdb, "deltalake": with_deltalake}


def sql_rows(archive, engine, sql):
    """Rows of `sql` over the tables `logs` and `events`, read by `engine`."""
    tables = {t: os.path.join(archive, t) for t in ("logs", "events")}
    if engine == "duckdb":
        con = duckdb_connection()
        for table, path in tables.items():
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM delta_scan('{path}')")
        return con.execute(sql).fetchall()
    import deltalake
    import pyarrow

    builder = deltalake.QueryBuilder()
    for table, path in tables.items():
        builder = builder.register(table, deltalake.DeltaTable(path))
    rows = []
    for batch in builder.execute(sql):
        rows.extend(tuple(r.values()) for r in pyarrow.record_batch(batch).to_pylist())
    return rows


def versions(text):
    if not text:
        return [None]
    return [int(v) for v in text.split(",") if v != ""]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("archive")
    p.add_argument("--logs-versions")
    p.add_argument("--events-versions")
    p.add_argument("--engines", default="duckdb,deltalake")
    p.add_argument("--sql", help="run this SQL (tables logs and events) and print rows as JSON")
    p.add_argument("--engine", default="duckdb", help="for --sql: duckdb or deltalake")
    a = p.parse_args()
    if a.sql:
        print(json.dumps([[str(c) for c in row] for row in sql_rows(a.archive, a.engine, a.sql)]))
        return
    out = {}
    for table, asked in (("logs", a.logs_versions), ("events", a.events_versions)):
        path = os.path.join(a.archive, table)
        out[table] = {}
        for version in versions(asked):
            key = "latest" if version is None else str(version)
            out[table][key] = {}
            for engine in a.engines.split(","):
                if not os.path.exists(os.path.join(path, "_delta_log")):
                    rows = []
                else:
                    rows = ENGINES[engine](path, table, version)
                out[table][key][engine] = summarize(table, rows)
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
