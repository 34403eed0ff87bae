//! Job key globs: `www/prod/*`, `*/prod/web`, `www`.
//!
//! A job key is `role/env/name`. A glob is matched segment by segment: `*`
//! matches any run of characters and `?` one character, both within a
//! segment (never across a `/`). A glob with fewer segments matches any rest:
//! `www` is `www/*/*`, `www/prod` is `www/prod/*`; the empty glob and `*`
//! match every job. `tailll`, the Tail service and the scheduler's queries
//! share this one definition.

use std::fmt;

/// A parsed job key glob (see the module documentation); keeps its source text for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobGlob {
    source: String,
    segments: Vec<String>,
}

/// A glob that cannot be a job key pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job glob {glob:?}: {reason}")]
pub struct GlobError {
    /// The glob as given.
    pub glob: String,
    /// Which rule it breaks, e.g. `"empty segment"`.
    pub reason: &'static str,
}

impl JobGlob {
    /// Parses a glob of up to three non-empty `/`-separated segments of letters,
    /// digits, `_`, `.`, `-`, `*` and `?`; `""` and `*` match every job.
    pub fn parse(glob: &str) -> Result<JobGlob, GlobError> {
        let error = |reason| GlobError {
            glob: glob.to_string(),
            reason,
        };
        if glob.is_empty() || glob == "*" {
            return Ok(JobGlob {
                source: glob.to_string(),
                segments: Vec::new(),
            });
        }
        let segments: Vec<String> = glob.split('/').map(str::to_string).collect();
        if segments.len() > 3 {
            return Err(error("a job key has three segments, role/env/name"));
        }
        for segment in &segments {
            if segment.is_empty() {
                return Err(error("empty segment"));
            }
            if !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-*?".contains(&b))
            {
                return Err(error(
                    "segments hold only letters, digits, `_`, `.`, `-`, `*` and `?`",
                ));
            }
        }
        Ok(JobGlob {
            source: glob.to_string(),
            segments,
        })
    }

    /// Whether the job key `role/env/name` matches.
    pub fn matches(&self, job: &str) -> bool {
        let mut parts = job.split('/');
        for segment in &self.segments {
            match parts.next() {
                Some(part) if wildcard(segment.as_bytes(), part.as_bytes()) => {}
                _ => return false,
            }
        }
        true
    }

    /// The role this glob names exactly (no wildcard in it), if it does:
    /// a caller who may not read it is refused outright rather than shown
    /// nothing.
    pub fn exact_role(&self) -> Option<&str> {
        self.segments
            .first()
            .filter(|s| !s.contains(['*', '?']))
            .map(String::as_str)
    }

    /// The glob as parsed, `""` for the empty glob (which [`Display`](fmt::Display) shows as `*`).
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for JobGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.source.is_empty() {
            "*"
        } else {
            &self.source
        })
    }
}

impl std::str::FromStr for JobGlob {
    type Err = GlobError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobGlob::parse(s)
    }
}

/// `*` and `?` wildcard matching, iterative with one backtrack point
/// (linear for patterns with one `*`, never exponential).
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_segment_by_segment() {
        let cases = [
            ("www/prod/*", "www/prod/web", true),
            ("www/prod/*", "www/prod/web/extra", true),
            ("www/prod/*", "www/devel/web", false),
            ("*/prod/web", "ads/prod/web", true),
            ("www", "www/prod/web", true),
            ("www", "wwwx/prod/web", false),
            ("www/prod", "www/prod/anything", true),
            ("w?w/*/w*b", "www/prod/web", true),
            ("w?w/*/w*b", "www/prod/webs", false),
            ("*", "a/b/c", true),
            ("", "a/b/c", true),
            ("www/*/*", "www/prod", false),
            ("*/*/*-canary", "a/b/web-canary", true),
        ];
        for (glob, job, want) in cases {
            assert_eq!(
                JobGlob::parse(glob).unwrap().matches(job),
                want,
                "{glob} vs {job}"
            );
        }
    }

    #[test]
    fn bad_globs_are_refused_with_a_reason() {
        for bad in ["a/b/c/d", "a//c", "a/b c/d", "/a", "a/b/", "a;b"] {
            let e = JobGlob::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn exact_role_is_only_a_role_without_wildcards() {
        assert_eq!(JobGlob::parse("www/*/*").unwrap().exact_role(), Some("www"));
        assert_eq!(JobGlob::parse("w*/prod").unwrap().exact_role(), None);
        assert_eq!(JobGlob::parse("*").unwrap().exact_role(), None);
    }

    #[test]
    fn many_stars_do_not_blow_up() {
        let glob = JobGlob::parse(&format!("{}b", "*a".repeat(20))).unwrap();
        assert!(!glob.matches(&"a".repeat(60)));
    }
}
