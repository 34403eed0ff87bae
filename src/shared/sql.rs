//! SQL that more than one front end builds, so `sluice events` and the
//! console ask the query service the same questions.

/// `s` as an SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `column = 'x'`, or `column LIKE …` when `pattern` has a `*` (which
/// matches anything; `%` and `_` are themselves).
pub fn matches(column: &str, pattern: &str) -> String {
    if pattern.contains('*') {
        let like = pattern
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
            .replace('*', "%");
        format!("{column} LIKE {} ESCAPE '\\'", quote(&like))
    } else {
        format!("{column} = {}", quote(pattern))
    }
}

/// Which events: any of them may be left out.
#[derive(Debug, Default, Clone)]
pub struct EventFilter {
    /// `role/env/name`, `*` matching within it.
    pub job: Option<String>,
    /// `task_state`, `quota_kill`, `api_call`, …
    pub kind: Option<String>,
    /// Who: a user, `system:scheduler`, …; `*` matches within it.
    pub actor: Option<String>,
}

/// The events of `filter`, oldest first.
pub fn events(filter: &EventFilter) -> String {
    let mut conditions = Vec::new();
    if let Some(job) = &filter.job {
        conditions.push(matches("job", job));
    }
    if let Some(kind) = &filter.kind {
        conditions.push(format!("kind = {}", quote(kind)));
    }
    if let Some(actor) = &filter.actor {
        conditions.push(matches("actor", actor));
    }
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    format!(
        "SELECT ts, kind, job, instance, task_id, run, host, actor, reason, message FROM events{filter} ORDER BY ts, id"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_quoted_and_globs_escaped() {
        assert_eq!(
            events(&EventFilter::default()),
            "SELECT ts, kind, job, instance, task_id, run, host, actor, reason, message FROM events ORDER BY ts, id"
        );
        let sql = events(&EventFilter {
            job: Some("www/prod/*".into()),
            kind: Some("quota_kill".into()),
            actor: Some("o'brien".into()),
        });
        assert!(
            sql.contains(
                r"WHERE job LIKE 'www/prod/%' ESCAPE '\' AND kind = 'quota_kill' AND actor = 'o''brien'"
            ),
            "{sql}"
        );
        assert_eq!(matches("job", "a_b%*"), r"job LIKE 'a\_b\%%' ESCAPE '\'");
    }
}
