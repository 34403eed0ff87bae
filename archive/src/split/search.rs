//! The query language of `search(line, '…')`, answered by a split's line
//! index.
//!
//! ```text
//! oom killed               both words, anywhere in the line (AND is implied)
//! "out of memory"          the words next to each other, in this order
//! 10.0.0.7:8080            a word made of several tokens is a phrase too
//! oom OR "out of memory"   either
//! error AND NOT timeout    error without timeout
//! (oom OR oomkill) NOT test
//! ```
//!
//! Matching is by token, as the index sees lines: a token is a run of
//! letters and digits (Unicode), compared lowercased, so `OOM` finds `oom`
//! and `Oom`, and `kill` does not find `killed`. `AND`, `OR` and `NOT` are
//! operators only in upper case (`not found` is two words); `NOT` binds
//! tighter than `AND`, which binds tighter than `OR`; parentheses group.
//! There is no wildcard and no `-` prefix, so log text such as `-1608999`
//! is searched as written.
//!
//! # Fields
//!
//! ```text
//! level:error AND trace_id:4bf92f3577b34da6a3ce929d0e0e4736
//! fields.user:bob            fields.http.code:503
//! fields.path:"/api/v1 x"    a value with spaces is quoted
//! ```
//!
//! `NAME:VALUE` targets a field that [`sluice_schema::fields::parse`] reads
//! in the line (the archive's columns of the same name), for these names
//! only: `level` (equal to the line's level; the value may be any spelling
//! of it, `WARNING` is `warn`), `trace_id` and `span_id` (equal, ignoring
//! ASCII case), and `fields.NAME` (the field's value, exactly). Any other
//! word with a colon (`status:500`, `10.0.0.7:8080`) is searched as text,
//! as before fields existed. The index answers field terms approximately
//! (an id by its tokens, a level or other field by every row) and the rows
//! it returns are checked exactly.
//!
//! A word or phrase with no letter or digit (`->`) cannot be searched and is
//! refused, as is a token longer than 128 bytes (the index drops those).
//!
//! Against an index without positions a phrase cannot be checked: it is
//! approximated (its words all present, or under `NOT`, nothing excluded)
//! and the result is marked inexact; the caller then re-checks each
//! returned row with [`SearchQuery::matches`], which implements exactly the
//! semantics above.
//!
//! Queries without `NOT` run as one tantivy query (intersections skip
//! through posting lists); `NOT` is a set difference over sorted row ids.

use sluice_schema::archive::INDEX_MAX_TOKEN_BYTES;
use sluice_schema::fields::{self, Level, Parsed};
use tantivy::Term;
use tantivy::query::{AllQuery, BooleanQuery, EmptyQuery, Occur, PhraseQuery, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::tokenizer::{LowerCaser, SimpleTokenizer, TextAnalyzer, TokenStream};

use super::error::{Result, SplitError};
use super::index::line_analyzer;

/// Deepest nesting of parentheses and `NOT`s accepted.
const MAX_DEPTH: usize = 64;

/// A parsed `search(line, '…')` query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchQuery {
    text: String,
    expr: Expr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expr {
    /// Tokens that must appear next to each other, in order (one token:
    /// anywhere).
    Tokens(Vec<String>),
    /// A parsed field equal to a value.
    Field(FieldTerm),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

/// `NAME:VALUE` (see the module documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
enum FieldTerm {
    Level(Level),
    TraceId(String),
    SpanId(String),
    Other { name: String, value: String },
}

impl FieldTerm {
    /// The term of `NAME:` and its value, `None` when `name` is not a field
    /// name (the word is then text).
    fn parse(name: &str, value: &str) -> Option<std::result::Result<FieldTerm, String>> {
        let term = match name {
            "level" => match Level::from_word(value) {
                Some(level) => Ok(FieldTerm::Level(level)),
                None => Err(format!(
                    "level:{value}: unknown level, expected one of trace, debug, info, warn, \
                     error, fatal"
                )),
            },
            "trace_id" => Ok(FieldTerm::TraceId(value.to_string())),
            "span_id" => Ok(FieldTerm::SpanId(value.to_string())),
            _ => match name.strip_prefix("fields.") {
                Some(field) if !field.is_empty() => Ok(FieldTerm::Other {
                    name: field.to_string(),
                    value: value.to_string(),
                }),
                _ => return None,
            },
        };
        Some(term.and_then(|t| match &t {
            FieldTerm::TraceId(v) | FieldTerm::SpanId(v) if v.is_empty() => {
                Err(format!("{name}: needs a value"))
            }
            _ => Ok(t),
        }))
    }

    fn matches(&self, parsed: &Parsed) -> bool {
        match self {
            FieldTerm::Level(level) => parsed.level == Some(*level),
            FieldTerm::TraceId(id) => parsed
                .trace_id
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(id)),
            FieldTerm::SpanId(id) => parsed
                .span_id
                .as_deref()
                .is_some_and(|t| t.eq_ignore_ascii_case(id)),
            FieldTerm::Other { name, value } => parsed.field(name) == Some(value.as_str()),
        }
    }

    /// Tokens every matching line has (an id is written in the line);
    /// none known for a level or another field.
    fn tokens(&self) -> Option<Vec<String>> {
        match self {
            FieldTerm::TraceId(id) | FieldTerm::SpanId(id) => query_tokens(id).ok(),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Lexeme {
    Open,
    Close,
    And,
    Or,
    Not,
    Word(String),
    Phrase(String),
}

impl SearchQuery {
    /// Parses a query, with an error naming what is wrong with it.
    pub fn parse(text: &str) -> Result<SearchQuery> {
        let fail = |problem: String| SplitError::Query {
            query: text.to_string(),
            problem,
        };
        let lexemes = lex(text).map_err(fail)?;
        if lexemes.is_empty() {
            return Err(fail("the query is empty".into()));
        }
        let mut parser = Parser {
            lexemes,
            at: 0,
            depth: 0,
        };
        let expr = parser.or().map_err(fail)?;
        if let Some(next) = parser.lexemes.get(parser.at) {
            return Err(fail(format!("unexpected {}", describe(next))));
        }
        Ok(SearchQuery {
            text: text.to_string(),
            expr,
        })
    }

    /// The query as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// False when no line can match, judged by `contains` (whether a
    /// token may occur in the lines; a term filter answers it). `NOT`
    /// tells nothing this way, so it may always match.
    pub fn may_match(&self, contains: &dyn Fn(&str) -> bool) -> bool {
        fn walk(e: &Expr, contains: &dyn Fn(&str) -> bool) -> bool {
            match e {
                Expr::Tokens(tokens) => tokens.iter().all(|t| contains(t)),
                Expr::Field(f) => f.tokens().is_none_or(|t| t.iter().all(|t| contains(t))),
                Expr::And(xs) => xs.iter().all(|x| walk(x, contains)),
                Expr::Or(xs) => xs.iter().any(|x| walk(x, contains)),
                Expr::Not(_) => true,
            }
        }
        walk(&self.expr, contains)
    }

    /// Whether the query has a phrase (several tokens that must be adjacent,
    /// also under `NOT`), which an index without positions cannot check exactly.
    pub fn has_phrases(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::Tokens(t) => t.len() > 1,
                Expr::Field(_) => false,
                Expr::And(xs) | Expr::Or(xs) => xs.iter().any(walk),
                Expr::Not(x) => walk(x),
            }
        }
        walk(&self.expr)
    }

    /// Whether the query targets a field (`level:error`), which the index
    /// only approximates.
    pub fn has_fields(&self) -> bool {
        fn walk(e: &Expr) -> bool {
            match e {
                Expr::Tokens(_) => false,
                Expr::Field(_) => true,
                Expr::And(xs) | Expr::Or(xs) => xs.iter().any(walk),
                Expr::Not(x) => walk(x),
            }
        }
        walk(&self.expr)
    }

    /// Whether `line` matches: the exact semantics the index answers (or
    /// approximates, without positions or for fields).
    pub fn matches(&self, line: &str) -> bool {
        let mut analyzer = line_analyzer();
        let mut stream = analyzer.token_stream(line);
        let mut tokens: Vec<(usize, String)> = Vec::new();
        while let Some(token) = stream.next() {
            tokens.push((token.position, token.text.clone()));
        }
        let parsed = self.has_fields().then(|| fields::parse(line.as_bytes()));
        eval(&self.expr, &tokens, parsed.as_ref())
    }

    /// Evaluates the query on a split index's one segment: `run` runs a
    /// tantivy query (never with a negation) and returns its sorted doc
    /// ids; `max_doc` is the segment's document count. Returns the sorted
    /// doc ids and whether they are exact (else a superset).
    ///
    /// Negations are set differences computed here rather than tantivy
    /// `MustNot` clauses: tantivy 0.27's exclusion seeks a phrase scorer
    /// backwards once the phrase has no more matches (a debug assertion,
    /// and a wrong answer without it).
    pub fn evaluate(
        &self,
        field: Field,
        positions: bool,
        max_doc: u32,
        run: &mut dyn FnMut(&dyn Query) -> Result<Vec<u32>>,
    ) -> Result<(Vec<u32>, bool)> {
        let mut exact = true;
        let mut ctx = Eval {
            field,
            positions,
            max_doc,
            run,
            exact: &mut exact,
        };
        let rows = ctx.eval(&self.expr, true)?;
        Ok((rows, exact))
    }
}

fn has_not(expr: &Expr) -> bool {
    match expr {
        Expr::Tokens(_) | Expr::Field(_) => false,
        Expr::And(xs) | Expr::Or(xs) => xs.iter().any(has_not),
        Expr::Not(_) => true,
    }
}

struct Eval<'a> {
    field: Field,
    positions: bool,
    max_doc: u32,
    run: &'a mut dyn FnMut(&dyn Query) -> Result<Vec<u32>>,
    exact: &'a mut bool,
}

impl Eval<'_> {
    /// The rows of `expr`; where that cannot be exact, more rows when
    /// `superset`, fewer otherwise (under an odd number of `NOT`s).
    fn eval(&mut self, expr: &Expr, superset: bool) -> Result<Vec<u32>> {
        if !has_not(expr) {
            let query = build(expr, self.field, self.positions, superset, self.exact);
            return (self.run)(query.as_ref());
        }
        let (plain, other): (Vec<&Expr>, Vec<&Expr>) = match expr {
            Expr::And(xs) | Expr::Or(xs) => xs.iter().partition(|x| !has_not(x)),
            _ => (Vec::new(), vec![expr]),
        };
        // Children without a negation go to tantivy as one query.
        let combined = match (expr, plain.len()) {
            (_, 0) => None,
            (_, 1) => Some(plain[0].clone()),
            (Expr::Or(_), _) => Some(Expr::Or(plain.into_iter().cloned().collect())),
            _ => Some(Expr::And(plain.into_iter().cloned().collect())),
        };
        let mut acc = match &combined {
            Some(e) => Some(self.eval(e, superset)?),
            None => None,
        };
        for x in other {
            acc = Some(match (expr, x) {
                (Expr::Not(inner), _) => {
                    let excluded = self.eval(inner, !superset)?;
                    difference(&all(self.max_doc), &excluded)
                }
                (Expr::And(_), Expr::Not(inner)) => {
                    let excluded = self.eval(inner, !superset)?;
                    let base = acc.take().unwrap_or_else(|| all(self.max_doc));
                    difference(&base, &excluded)
                }
                (Expr::And(_), x) => {
                    let rows = self.eval(x, superset)?;
                    match acc.take() {
                        Some(base) => intersection(&base, &rows),
                        None => rows,
                    }
                }
                (_, x) => {
                    let rows = self.eval(x, superset)?;
                    match acc.take() {
                        Some(base) => union(&base, &rows),
                        None => rows,
                    }
                }
            });
        }
        Ok(acc.unwrap_or_default())
    }
}

fn all(max_doc: u32) -> Vec<u32> {
    (0..max_doc).collect()
}

/// Rows in `a` but not in `b` (both sorted).
fn difference(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j >= b.len() || b[j] != x {
            out.push(x);
        }
    }
    out
}

/// Rows in both (sorted) `a` and `b`.
pub fn intersection(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

/// Rows in either (sorted) `a` or `b`.
fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let take_a = j >= b.len() || (i < a.len() && a[i] <= b[j]);
        let x = if take_a { a[i] } else { b[j] };
        if take_a {
            i += 1;
        }
        if !take_a || (j < b.len() && b[j] == x) {
            j += 1;
        }
        out.push(x);
    }
    out
}

fn describe(lexeme: &Lexeme) -> String {
    match lexeme {
        Lexeme::Open => "'('".into(),
        Lexeme::Close => "')'".into(),
        Lexeme::And => "AND".into(),
        Lexeme::Or => "OR".into(),
        Lexeme::Not => "NOT".into(),
        Lexeme::Word(w) => format!("word {w:?}"),
        Lexeme::Phrase(p) => format!("phrase {p:?}"),
    }
}

fn lex(text: &str) -> std::result::Result<Vec<Lexeme>, String> {
    let mut lexemes = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                lexemes.push(Lexeme::Open);
            }
            ')' => {
                chars.next();
                lexemes.push(Lexeme::Close);
            }
            '"' => {
                chars.next();
                let body_start = start + 1;
                let end = text[body_start..]
                    .find('"')
                    .ok_or_else(|| format!("unterminated quote at byte {start}"))?;
                lexemes.push(Lexeme::Phrase(
                    text[body_start..body_start + end].to_string(),
                ));
                while chars.next_if(|&(i, _)| i <= body_start + end).is_some() {}
            }
            _ => {
                let mut end = text.len();
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || matches!(c, '(' | ')' | '"') {
                        end = i;
                        break;
                    }
                    chars.next();
                }
                lexemes.push(match &text[start..end] {
                    "AND" => Lexeme::And,
                    "OR" => Lexeme::Or,
                    "NOT" => Lexeme::Not,
                    word => Lexeme::Word(word.to_string()),
                });
            }
        }
    }
    Ok(lexemes)
}

/// The tokens of a query word or phrase, as the index has them.
fn query_tokens(text: &str) -> std::result::Result<Vec<String>, String> {
    // Without the index's long-token filter, so a long token is refused
    // rather than silently dropped.
    let mut analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(LowerCaser)
        .build();
    let mut stream = analyzer.token_stream(text);
    let mut tokens = Vec::new();
    while let Some(token) = stream.next() {
        if token.text.len() > INDEX_MAX_TOKEN_BYTES {
            return Err(format!(
                "token {:?}… is longer than {INDEX_MAX_TOKEN_BYTES} bytes, which the index \
                 does not keep",
                token.text.chars().take(16).collect::<String>()
            ));
        }
        tokens.push(token.text.clone());
    }
    if tokens.is_empty() {
        return Err(format!(
            "{text:?} has no letters or digits, and the index only finds words"
        ));
    }
    Ok(tokens)
}

struct Parser {
    lexemes: Vec<Lexeme>,
    at: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Lexeme> {
        self.lexemes.get(self.at)
    }

    /// or := and ("OR" and)*
    fn or(&mut self) -> std::result::Result<Expr, String> {
        let mut terms = vec![self.and()?];
        while self.peek() == Some(&Lexeme::Or) {
            self.at += 1;
            terms.push(self.and()?);
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one")
        } else {
            Expr::Or(terms)
        })
    }

    /// and := unary (["AND"] unary)*
    fn and(&mut self) -> std::result::Result<Expr, String> {
        let mut terms = vec![self.unary()?];
        loop {
            match self.peek() {
                None | Some(Lexeme::Or) | Some(Lexeme::Close) => break,
                Some(Lexeme::And) => {
                    self.at += 1;
                    terms.push(self.unary()?);
                }
                Some(_) => terms.push(self.unary()?),
            }
        }
        Ok(if terms.len() == 1 {
            terms.pop().expect("one")
        } else {
            Expr::And(terms)
        })
    }

    /// unary := "NOT" unary | "(" or ")" | word | phrase
    fn unary(&mut self) -> std::result::Result<Expr, String> {
        let Some(lexeme) = self.lexemes.get(self.at).cloned() else {
            let after = match self.at.checked_sub(1).and_then(|i| self.lexemes.get(i)) {
                Some(last) => describe(last),
                None => "the start".into(),
            };
            return Err(format!("the query ends after {after}, expected a word"));
        };
        self.at += 1;
        match lexeme {
            Lexeme::Word(text) => {
                if let Some((name, value)) = text.split_once(':') {
                    // `trace_id:"…"`: the value is the phrase that follows.
                    let quoted = match (value, self.peek()) {
                        ("", Some(Lexeme::Phrase(p))) => Some(p.clone()),
                        _ => None,
                    };
                    let value = quoted.as_deref().unwrap_or(value);
                    if let Some(term) = FieldTerm::parse(name, value) {
                        if quoted.is_some() {
                            self.at += 1;
                        }
                        return Ok(Expr::Field(term?));
                    }
                }
                Ok(Expr::Tokens(query_tokens(&text)?))
            }
            Lexeme::Phrase(text) => Ok(Expr::Tokens(query_tokens(&text)?)),
            Lexeme::Not => {
                self.nest()?;
                let inner = self.unary()?;
                self.depth -= 1;
                Ok(Expr::Not(Box::new(inner)))
            }
            Lexeme::Open => {
                self.nest()?;
                let inner = self.or()?;
                self.depth -= 1;
                if self.peek() != Some(&Lexeme::Close) {
                    return Err("missing ')'".into());
                }
                self.at += 1;
                Ok(inner)
            }
            other => Err(format!("unexpected {}, expected a word", describe(&other))),
        }
    }

    fn nest(&mut self) -> std::result::Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("nested deeper than {MAX_DEPTH}"));
        }
        Ok(())
    }
}

fn eval(expr: &Expr, line: &[(usize, String)], parsed: Option<&Parsed>) -> bool {
    match expr {
        Expr::Field(term) => parsed.is_some_and(|p| term.matches(p)),
        Expr::Tokens(want) => line.windows(want.len()).any(|window| {
            let first = window[0].0;
            window
                .iter()
                .zip(want)
                .enumerate()
                .all(|(k, ((pos, text), want))| *pos == first + k && text == want)
        }),
        Expr::And(xs) => xs.iter().all(|x| eval(x, line, parsed)),
        Expr::Or(xs) => xs.iter().any(|x| eval(x, line, parsed)),
        Expr::Not(x) => !eval(x, line, parsed),
    }
}

fn term_query(field: Field, token: &str) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_text(field, token),
        IndexRecordOption::Basic,
    ))
}

/// The tantivy query of `expr`, which has no `NOT`. Where it cannot be
/// exact (a phrase without positions) it errs towards more rows when
/// `superset`, fewer otherwise, and clears `exact`.
fn build(
    expr: &Expr,
    field: Field,
    positions: bool,
    superset: bool,
    exact: &mut bool,
) -> Box<dyn Query> {
    match expr {
        Expr::Field(term) => {
            *exact = false;
            match (superset, term.tokens()) {
                (false, _) => Box::new(EmptyQuery),
                (true, Some(tokens)) => build(&Expr::Tokens(tokens), field, positions, true, exact),
                (true, None) => Box::new(AllQuery),
            }
        }
        Expr::Tokens(tokens) if tokens.len() == 1 => term_query(field, &tokens[0]),
        Expr::Tokens(tokens) if positions => Box::new(PhraseQuery::new_with_offset(
            tokens
                .iter()
                .enumerate()
                .map(|(i, t)| (i, Term::from_field_text(field, t)))
                .collect(),
        )),
        Expr::Tokens(tokens) => {
            *exact = false;
            if superset {
                Box::new(BooleanQuery::new(
                    tokens
                        .iter()
                        .map(|t| (Occur::Must, term_query(field, t)))
                        .collect(),
                ))
            } else {
                Box::new(EmptyQuery)
            }
        }
        Expr::And(xs) | Expr::Or(xs) => {
            let occur = if matches!(expr, Expr::And(_)) {
                Occur::Must
            } else {
                Occur::Should
            };
            Box::new(BooleanQuery::new(
                xs.iter()
                    .map(|x| (occur, build(x, field, positions, superset, exact)))
                    .collect(),
            ))
        }
        // `Eval` takes negations apart before building; match nothing
        // rather than panic if one ever gets here.
        Expr::Not(_) => Box::new(EmptyQuery),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tokens(words: &[&str]) -> Expr {
        Expr::Tokens(words.iter().map(|w| w.to_string()).collect())
    }

    fn parse(text: &str) -> Expr {
        SearchQuery::parse(text).unwrap().expr
    }

    fn problem(text: &str) -> String {
        match SearchQuery::parse(text) {
            Err(SplitError::Query { problem, .. }) => problem,
            other => panic!("{text:?} parsed: {other:?}"),
        }
    }

    #[test]
    fn grammar() {
        assert_eq!(parse("OOM"), tokens(&["oom"]));
        assert_eq!(
            parse("oom killed"),
            Expr::And(vec![tokens(&["oom"]), tokens(&["killed"])])
        );
        assert_eq!(
            parse("\"Out of  memory\""),
            tokens(&["out", "of", "memory"])
        );
        assert_eq!(
            parse("10.0.0.7:8080"),
            tokens(&["10", "0", "0", "7", "8080"])
        );
        assert_eq!(
            parse("a OR b c"),
            Expr::Or(vec![
                tokens(&["a"]),
                Expr::And(vec![tokens(&["b"]), tokens(&["c"])])
            ])
        );
        assert_eq!(
            parse("(a OR b) AND NOT c"),
            Expr::And(vec![
                Expr::Or(vec![tokens(&["a"]), tokens(&["b"])]),
                Expr::Not(Box::new(tokens(&["c"])))
            ])
        );
        assert_eq!(
            parse("not found"),
            Expr::And(vec![tokens(&["not"]), tokens(&["found"])])
        );
        assert_eq!(parse("status:500"), tokens(&["status", "500"]));
        assert_eq!(parse("-1608999"), tokens(&["1608999"]));
        assert_eq!(
            parse("a(b)"),
            Expr::And(vec![tokens(&["a"]), tokens(&["b"])])
        );
    }

    #[test]
    fn bad_queries_name_the_problem() {
        assert_eq!(problem("  "), "the query is empty");
        assert!(problem("\"oom").contains("unterminated quote"));
        assert_eq!(problem("(a"), "missing ')'");
        assert_eq!(problem("a)"), "unexpected ')'");
        assert_eq!(
            problem("a AND"),
            "the query ends after AND, expected a word"
        );
        assert_eq!(problem("OR a"), "unexpected OR, expected a word");
        assert!(problem("->").contains("no letters or digits"));
        assert!(problem(&"x".repeat(200)).contains("longer than 128 bytes"));
        assert!(problem(&"(".repeat(100)).contains("nested deeper"));
        assert!(problem(&"NOT ".repeat(100)).contains("nested deeper"));
    }

    #[test]
    fn matches_by_token_case_insensitively() {
        let q = |t: &str| SearchQuery::parse(t).unwrap();
        assert!(q("oom").matches("kernel: OOM killer"));
        assert!(!q("kill").matches("process killed"));
        assert!(q("\"out of memory\"").matches("Out of Memory: kill"));
        assert!(!q("\"out of memory\"").matches("out of the memory"));
        assert!(q("memory out").matches("out of the memory"));
        assert!(q("a OR b").matches("b"));
        assert!(q("NOT a").matches("b"));
        assert!(!q("NOT a").matches("A"));
        assert!(q("Grüße").matches("GRÜSSE grüße"));
        // A dropped long token leaves a gap a phrase does not jump.
        let long = "x".repeat(200);
        assert!(!q("\"a b\"").matches(&format!("a {long} b")));
    }

    #[test]
    fn has_phrases() {
        assert!(!SearchQuery::parse("a b OR NOT c").unwrap().has_phrases());
        assert!(SearchQuery::parse("a NOT \"b c\"").unwrap().has_phrases());
        assert!(SearchQuery::parse("a:b").unwrap().has_phrases());
    }

    /// Pieces of the syntax and awkward words that get a mutation past
    /// the lexer.
    #[rustfmt::skip]
    const PIECES: &[&str] = &[
        "(", ")", "\"", " ", "AND", "OR", "NOT", " AND ", " OR ", " NOT ", "and", "->", ":", "-",
        "*", "\u{0}", "\t", "\n", "é", "Grüße", "10.0.0.7:8080", "\"a b\"", "()", "\"\"", "((",
        "))", "NOT NOT", "\u{1F600}", "\u{301}",
    ];

    /// A query from words and pieces: mostly valid, often not.
    fn pieced() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            prop::sample::select(PIECES).prop_map(str::to_string),
            "[a-zA-Z0-9]{1,8}",
            Just("x".repeat(129)),
        ];
        prop::collection::vec(piece, 0..24).prop_map(|pieces| pieces.join(" "))
    }

    /// `valid` with characters flipped, inserted, deleted, or cut short.
    fn mutated(valid: &'static str) -> impl Strategy<Value = String> {
        let edit = (0..4u8, any::<prop::sample::Index>(), any::<char>());
        prop::collection::vec(edit, 1..5).prop_map(move |edits| {
            let mut chars: Vec<char> = valid.chars().collect();
            for (kind, at, c) in edits {
                let len = chars.len();
                match kind {
                    0 if len > 0 => chars[at.index(len)] = c,
                    1 => chars.insert(at.index(len + 1), c),
                    2 if len > 0 => drop(chars.remove(at.index(len))),
                    3 => chars.truncate(at.index(len + 1)),
                    _ => {}
                }
            }
            chars.into_iter().collect()
        })
    }

    /// Parses `text`: never a panic. An error names the query and what in
    /// it is wrong; a query that parses is matched and evaluated against
    /// an index stub without a panic, and evaluates to sorted rows.
    fn check_query(text: &str) -> std::result::Result<(), TestCaseError> {
        match SearchQuery::parse(text) {
            Err(SplitError::Query { query, problem }) => {
                prop_assert_eq!(&query, text);
                let named = [
                    "the query is empty",
                    "unterminated quote at byte ",
                    "missing ')'",
                    "unexpected ",
                    "the query ends after ",
                    "nested deeper than ",
                    "token ",
                ]
                .iter()
                .any(|start| problem.starts_with(start))
                    || problem
                        .ends_with("has no letters or digits, and the index only finds words");
                prop_assert!(named, "{:?}: unclear problem {:?}", text, problem);
            }
            Err(other) => prop_assert!(false, "{:?}: not a query error: {}", text, other),
            Ok(query) => {
                prop_assert_eq!(query.as_str(), text);
                let _ = query.matches(text);
                let _ = query.matches("kernel: OOM killer 10.0.0.7:8080 Grüße");
                let _ = query.has_phrases() || query.may_match(&|t| t.len() % 2 == 0);
                let field = tantivy::schema::Field::from_field_id(0);
                for positions in [false, true] {
                    let mut run = |_: &dyn Query| -> Result<Vec<u32>> { Ok(vec![1, 3, 5]) };
                    let (rows, _) = query.evaluate(field, positions, 8, &mut run).unwrap();
                    prop_assert!(rows.windows(2).all(|w| w[0] < w[1]), "{:?}", rows);
                    prop_assert!(rows.iter().all(|&r| r < 8), "{:?}", rows);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn search_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            check_query(&String::from_utf8_lossy(&bytes))?;
        }

        #[test]
        fn search_pieces_never_panic(text in pieced()) {
            check_query(&text)?;
        }

        #[test]
        fn search_mutations_never_panic(
            text in mutated("(oom OR \"out of memory\") AND NOT test 10.0.0.7:8080"),
        ) {
            check_query(&text)?;
        }
    }

    #[test]
    fn a_bad_query_names_the_query_and_the_word() {
        let err = SearchQuery::parse("error AND (timeout OR ->)").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid search query \"error AND (timeout OR ->)\": \"->\" has no letters or digits, \
             and the index only finds words"
        );
        assert_eq!(
            problem("a \"b c"),
            "unterminated quote at byte 2",
            "the position of the quote"
        );
    }
}
