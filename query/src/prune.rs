//! What a query's filters say about which splits it can skip, read from the
//! conjuncts DataFusion hands a table scan: a time range on `ts` (whose
//! values are `ts_nanos` rounded down to the microsecond) or `ts_nanos`, the jobs
//! (`job`, `role`, `env`, `name` equal to or in a list of strings, `job`
//! like a prefix), the levels (`level` equal to or in a list: a split whose
//! rows hold none of them is skipped by its `sluice.levels` tag) and the
//! `search(line, '…')` calls whose split indexes select rows.
//!
//! Everything here is a necessary condition, never a sufficient one: a split
//! the pruner keeps may still hold no matching row (the scan's filter
//! decides), but a split it drops holds none.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator};
use sluice_schema::archive::{self as schema, split_job};

use sluice_archive::catalog::SplitEntry;
use sluice_archive::split::SearchQuery;

/// Name of the full-text function: `search(line, 'QUERY')`.
pub const SEARCH_FUNCTION: &str = "search";

/// Half-open `[from, to)` in Unix nanoseconds; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimeRange {
    /// Inclusive start in Unix nanoseconds; `None`: no lower bound.
    pub from: Option<i64>,
    /// Exclusive end in Unix nanoseconds; `None`: no upper bound.
    pub to: Option<i64>,
}

impl TimeRange {
    /// The range `[from, to)`; a `None` end is open.
    pub fn new(from: Option<i64>, to: Option<i64>) -> TimeRange {
        TimeRange { from, to }
    }

    /// The intersection.
    pub fn and(self, other: TimeRange) -> TimeRange {
        TimeRange {
            from: max_opt(self.from, other.from),
            to: min_opt(self.to, other.to),
        }
    }

    /// Whether rows with `ts` in `[min, max]` may fall in the range.
    pub fn overlaps(&self, min: i64, max: i64) -> bool {
        let empty = matches!((self.from, self.to), (Some(from), Some(to)) if from >= to);
        !empty && self.from.is_none_or(|from| max >= from) && self.to.is_none_or(|to| min < to)
    }

    /// Whether both ends are open, so every time passes.
    pub fn is_unbounded(&self) -> bool {
        self.from.is_none() && self.to.is_none()
    }
}

fn max_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Which job keys a query may touch: each set, when present, must hold the
/// matching segment of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Whole job keys allowed (`job = …`, `job IN (…)`); `None`: any.
    pub jobs: Option<BTreeSet<String>>,
    /// Prefixes every allowed job key starts with (`job LIKE 'prefix%'`).
    pub job_prefixes: Vec<String>,
    /// First segments of the job key allowed (`role`); `None`: any.
    pub roles: Option<BTreeSet<String>>,
    /// Second segments of the job key allowed (`env`); `None`: any.
    pub envs: Option<BTreeSet<String>>,
    /// Allowed values of the job key's rest after the second `/` (`name`);
    /// `None`: any.
    pub names: Option<BTreeSet<String>>,
}

impl JobFilter {
    /// Whether a job key passes every constraint.
    pub fn allows(&self, job: &str) -> bool {
        let (role, env, name) = split_job(job);
        let in_set = |set: &Option<BTreeSet<String>>, value: &str| {
            set.as_ref().is_none_or(|s| s.contains(value))
        };
        in_set(&self.jobs, job)
            && self
                .job_prefixes
                .iter()
                .all(|p| job.starts_with(p.as_str()))
            && in_set(&self.roles, role)
            && in_set(&self.envs, env)
            && in_set(&self.names, name)
    }

    fn constrain(slot: &mut Option<BTreeSet<String>>, values: BTreeSet<String>) {
        *slot = Some(match slot.take() {
            Some(old) => old.intersection(&values).cloned().collect(),
            None => values,
        });
    }
}

/// What the pruner learnt from a scan's filters.
#[derive(Debug, Clone, Default)]
pub struct Pruning {
    /// Bounds on `ts` from comparisons and `BETWEEN` on the bare column.
    pub time: TimeRange,
    /// Constraints on the job key and its segments.
    pub jobs: JobFilter,
    /// Levels allowed (`level = …`, `level IN (…)`); `None`: any.
    pub levels: Option<BTreeSet<String>>,
    /// The `search(line, '…')` conjuncts: each split's index answers them.
    pub searches: Vec<SearchQuery>,
}

impl Pruning {
    /// Reads the conjuncts of a scan.
    pub fn from_filters(filters: &[Expr]) -> Pruning {
        let mut pruning = Pruning::default();
        for filter in filters {
            for conjunct in split_conjunction(filter) {
                pruning.learn(conjunct);
            }
        }
        pruning
    }

    fn learn(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if let Some((column, op, value)) = column_op_literal(left, *op, right)
                    && (!is_time(column) || is_bare_ts(left, right))
                {
                    self.learn_comparison(column, op, value);
                }
            }
            Expr::Between(between) if !between.negated => {
                if let (Some(column), Some(low), Some(high)) = (
                    bare_column(&between.expr),
                    literal(&between.low),
                    literal(&between.high),
                ) && is_time(column)
                    && let (Some(low), Some(high)) =
                        (time_nanos(column, low), time_nanos(column, high))
                    && let (Some(a), Some(b)) = (
                        time_range(column, Operator::GtEq, low),
                        time_range(column, Operator::LtEq, high),
                    )
                {
                    self.time = self.time.and(a).and(b);
                }
            }
            Expr::InList(list) if !list.negated => {
                let Some(column) = column_name(&list.expr) else {
                    return;
                };
                let values: Option<BTreeSet<String>> = list
                    .list
                    .iter()
                    .map(|e| literal(e).and_then(utf8))
                    .collect();
                if let Some(values) = values {
                    self.learn_strings(column, values);
                }
            }
            Expr::Like(like) if !like.negated && !like.case_insensitive => {
                if column_name(&like.expr) == Some(schema::COL_JOB)
                    && let Some(pattern) = literal(&like.pattern).and_then(utf8)
                    && like.escape_char.is_none()
                {
                    let prefix: String = pattern
                        .chars()
                        .take_while(|c| !matches!(c, '%' | '_' | '\\'))
                        .collect();
                    if !prefix.is_empty() {
                        self.jobs.job_prefixes.push(prefix);
                    }
                }
            }
            Expr::ScalarFunction(call) if call.name() == SEARCH_FUNCTION => {
                if let [line, query] = call.args.as_slice()
                    && column_name(line) == Some(schema::COL_LINE)
                    && let Some(text) = literal(query).and_then(utf8)
                    && let Ok(query) = SearchQuery::parse(&text)
                {
                    self.searches.push(query);
                }
            }
            _ => {}
        }
    }

    fn learn_comparison(&mut self, column: &str, op: Operator, value: &ScalarValue) {
        if is_time(column) {
            // Only the bare column: a cast (to seconds, say) changes which
            // instants compare equal, and the bounds below would be wrong.
            let Some(range) = time_nanos(column, value).and_then(|v| time_range(column, op, v))
            else {
                return;
            };
            self.time = self.time.and(range);
        } else if op == Operator::Eq
            && let Some(text) = utf8(value)
        {
            self.learn_strings(column, BTreeSet::from([text]));
        }
    }

    fn learn_strings(&mut self, column: &str, values: BTreeSet<String>) {
        let slot = match column {
            schema::COL_JOB => &mut self.jobs.jobs,
            schema::COL_ROLE => &mut self.jobs.roles,
            schema::COL_ENV => &mut self.jobs.envs,
            schema::COL_NAME => &mut self.jobs.names,
            schema::COL_LEVEL => &mut self.levels,
            _ => return,
        };
        JobFilter::constrain(slot, values);
    }

    /// Whether a split may hold rows the filters select.
    pub fn keeps(&self, split: &SplitEntry) -> bool {
        self.time.overlaps(split.min_ts_nanos, split.max_ts_nanos)
            && (split.jobs.is_empty() || split.jobs.iter().any(|job| self.jobs.allows(job)))
            // A split whose levels are known and hold none of those asked for.
            && split.levels.as_ref().is_none_or(|have| {
                self.levels
                    .as_ref()
                    .is_none_or(|want| have.iter().any(|l| want.contains(l)))
            })
    }
}

fn split_conjunction(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::And,
            right,
        }) => {
            let mut out = split_conjunction(left);
            out.extend(split_conjunction(right));
            out
        }
        Expr::Alias(alias) => split_conjunction(&alias.expr),
        other => vec![other],
    }
}

/// The column itself, not a cast of it.
fn bare_column(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        _ => None,
    }
}

/// Whether the time column of a comparison is the bare column.
fn is_bare_ts(left: &Expr, right: &Expr) -> bool {
    bare_column(left).is_some_and(is_time) || bare_column(right).is_some_and(is_time)
}

/// `ts` (microseconds) or `ts_nanos`.
fn is_time(column: &str) -> bool {
    column == schema::COL_TS || column == schema::COL_TS_NANOS
}

/// A literal compared with a time column, in nanoseconds: a timestamp for
/// `ts`, an integer for `ts_nanos`.
fn time_nanos(column: &str, value: &ScalarValue) -> Option<i64> {
    if column == schema::COL_TS_NANOS {
        return match value {
            ScalarValue::Int64(Some(v)) => Some(*v),
            ScalarValue::Int32(Some(v)) => Some(i64::from(*v)),
            ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok(),
            _ => None,
        };
    }
    timestamp_nanos(value)
}

/// The rows' `ts_nanos` for which `column OP v` holds (`v` in nanoseconds).
/// `ts` is `ts_nanos` rounded down to the microsecond, so its bounds
/// round to microseconds: `ts < v` holds for `ts_nanos < ⌈v⌉µs`.
fn time_range(column: &str, op: Operator, v: i64) -> Option<TimeRange> {
    if column == schema::COL_TS_NANOS {
        return Some(match op {
            Operator::Eq => TimeRange::new(Some(v), v.checked_add(1)),
            Operator::Gt => TimeRange::new(v.checked_add(1), None),
            Operator::GtEq => TimeRange::new(Some(v), None),
            Operator::Lt => TimeRange::new(None, Some(v)),
            Operator::LtEq => TimeRange::new(None, v.checked_add(1)),
            _ => return None,
        });
    }
    const US: i64 = 1_000;
    let ceil = |v: i64| v.checked_add(US - 1).map(|x| x.div_euclid(US) * US);
    let floor = |v: i64| v.div_euclid(US) * US;
    Some(match op {
        Operator::GtEq => TimeRange::new(ceil(v), None),
        Operator::Gt => TimeRange::new(v.checked_add(1).and_then(ceil), None),
        Operator::Lt => TimeRange::new(None, ceil(v)),
        Operator::LtEq => TimeRange::new(None, floor(v).checked_add(US)),
        Operator::Eq if v.rem_euclid(US) == 0 => TimeRange::new(Some(v), v.checked_add(US)),
        // No microsecond equals a time between two: nothing matches.
        Operator::Eq => TimeRange::new(Some(v), Some(v)),
        _ => return None,
    })
}

fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        Expr::Cast(cast) => column_name(&cast.expr),
        Expr::TryCast(cast) => column_name(&cast.expr),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<&ScalarValue> {
    match expr {
        Expr::Literal(value, _) => Some(value),
        _ => None,
    }
}

/// `column OP literal`, with the operands swapped if the literal comes first.
fn column_op_literal<'a>(
    left: &'a Expr,
    op: Operator,
    right: &'a Expr,
) -> Option<(&'a str, Operator, &'a ScalarValue)> {
    if let (Some(column), Some(value)) = (column_name(left), literal(right)) {
        return Some((column, op, value));
    }
    let (column, value) = (column_name(right)?, literal(left)?);
    Some((column, op.swap()?, value))
}

fn utf8(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => Some(s.clone()),
        ScalarValue::Dictionary(_, inner) => utf8(inner),
        _ => None,
    }
}

fn timestamp_nanos(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::{col, lit};

    use super::*;

    fn ts(nanos: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(nanos),
            Some("UTC".into()),
        ))
    }

    fn nanos(v: i64) -> Expr {
        lit(ScalarValue::Int64(Some(v)))
    }

    #[test]
    fn time_bounds_from_comparisons_either_way_round() {
        let p = Pruning::from_filters(&[col("ts").gt_eq(ts(100_000)), ts(200_000).gt(col("ts"))]);
        assert_eq!(p.time, TimeRange::new(Some(100_000), Some(200_000)));
        let p = Pruning::from_filters(&[col("ts").between(ts(10_000), ts(20_000))]);
        assert_eq!(p.time, TimeRange::new(Some(10_000), Some(21_000)));
        let p = Pruning::from_filters(&[col("ts_nanos")
            .gt(nanos(5))
            .and(col("ts_nanos").lt_eq(nanos(9)))]);
        assert_eq!(p.time, TimeRange::new(Some(6), Some(10)));
        let p = Pruning::from_filters(&[
            nanos(20).gt(col("ts_nanos")),
            col("ts_nanos").between(nanos(3), nanos(30)),
        ]);
        assert_eq!(p.time, TimeRange::new(Some(3), Some(20)));
        // `ts` is `ts_nanos` in whole microseconds: a row at 1,999 ns has
        // `ts` 1 µs, which is below 1,500 ns.
        let p = Pruning::from_filters(&[col("ts").lt(ts(1_500))]);
        assert_eq!(p.time, TimeRange::new(None, Some(2_000)));
        let p = Pruning::from_filters(&[col("ts").gt(ts(1_500))]);
        assert_eq!(p.time, TimeRange::new(Some(2_000), None));
        let p = Pruning::from_filters(&[col("ts").eq(ts(3_000))]);
        assert_eq!(p.time, TimeRange::new(Some(3_000), Some(4_000)));
        let p = Pruning::from_filters(&[col("ts").eq(ts(3_001))]);
        assert!(
            !p.time.overlaps(i64::MIN, i64::MAX),
            "no microsecond is 3,001 ns"
        );
        // A cast changes what equal means: no bound from it.
        let p = Pruning::from_filters(&[Expr::Cast(datafusion::logical_expr::Cast::new(
            Box::new(col("ts")),
            datafusion::arrow::datatypes::DataType::Timestamp(
                datafusion::arrow::datatypes::TimeUnit::Second,
                None,
            ),
        ))
        .lt_eq(ts(5))]);
        assert!(p.time.is_unbounded());
        // An OR says nothing usable.
        let p = Pruning::from_filters(&[col("ts").gt(ts(5)).or(col("job").eq(lit("a/b/c")))]);
        assert!(p.time.is_unbounded());
        assert_eq!(p.jobs, JobFilter::default());
    }

    #[test]
    fn jobs_from_equalities_lists_and_prefixes() {
        let p = Pruning::from_filters(&[
            col("role").eq(lit("www")),
            col("env").in_list(vec![lit("prod"), lit("staging")], false),
            col("job").like(lit("www/prod/%")),
        ]);
        assert!(p.jobs.allows("www/prod/web"));
        assert!(!p.jobs.allows("www/staging/web"), "prefix");
        assert!(!p.jobs.allows("db/prod/pg"), "role");
        // An escape ends the prefix.
        let p = Pruning::from_filters(&[col("job").like(lit("a/b/c\\_d"))]);
        assert!(p.jobs.allows("a/b/c_d"));
        // Two equalities on one column leave their intersection.
        let p = Pruning::from_filters(&[col("job").eq(lit("a/b/c")), col("job").eq(lit("x/y/z"))]);
        assert!(!p.jobs.allows("a/b/c") && !p.jobs.allows("x/y/z"));
    }

    #[test]
    fn splits_kept_only_when_time_and_jobs_overlap() {
        let split = |min, max, jobs: &[&str]| SplitEntry {
            key: "k".into(),
            index_key: None,
            kind: sluice_archive::catalog::SplitKind::Logs,
            date: "2026-11-21".into(),
            hour: Some(7),
            rows: 1,
            raw_bytes: 1,
            data_bytes: 1,
            index_bytes: 0,
            min_ts_nanos: min,
            max_ts_nanos: max,
            jobs: jobs.iter().map(|j| j.to_string()).collect(),
            roles: vec![],
            created_unix_ms: 0,
            held: Default::default(),
            levels: None,
        };
        let p = Pruning::from_filters(&[
            col("ts").gt_eq(ts(100_000)),
            col("ts").lt(ts(200_000)),
            col("job").eq(lit("www/prod/web")),
        ]);
        assert!(p.keeps(&split(150_000, 160_000, &["www/prod/web", "db/prod/pg"])));
        assert!(
            p.keeps(&split(50_000, 100_000, &["www/prod/web"])),
            "touches from"
        );
        assert!(
            !p.keeps(&split(200_000, 300_000, &["www/prod/web"])),
            "to is exclusive"
        );
        assert!(!p.keeps(&split(150_000, 160_000, &["db/prod/pg"])));
    }
}
