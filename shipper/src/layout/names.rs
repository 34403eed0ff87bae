//! Rules every layout applies to the names it reads from paths and metadata:
//! which path components are plain names, how an untrusted name becomes a
//! job-key component, how numbers in names are read, and how small
//! metadata files beside the logs are read.
//!
//! A path component is *plain* when it is not empty, not `.` or `..` and
//! holds no control character; a path with any other component is not a log
//! file of any layout. Job-key components derived from paths or container
//! metadata are *sanitized*, never refused, so logs are never dropped for a
//! name: every character outside `[A-Za-z0-9_.-]` becomes `_`, and a result
//! that is empty or all dots becomes underscores. Job keys read from an
//! authority (a native manifest, a `sluice.job` container label) are
//! *checked* instead: they must already be three such components.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use sluice_schema::pb::Stream;

use super::components;

/// Label set on an identity that had to be guessed, saying why.
pub(crate) const IDENTITY_PROBLEM: &str = "identity_problem";

/// Largest metadata file (manifest, container config) a layout reads.
pub(crate) const MAX_METADATA_BYTES: u64 = 1 << 20;

/// `path` relative to `root` as plain UTF-8 names; `None` when it is not
/// under `root`, not UTF-8 or has a component that is not plain.
pub(crate) fn plain_components<'a>(root: &Path, path: &'a Path) -> Option<Vec<&'a str>> {
    let parts = components(root, path)?;
    parts.iter().all(|p| is_plain(p)).then_some(parts)
}

pub(crate) fn is_plain(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(char::is_control)
}

fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// A job-key component made from an untrusted name (see the module doc).
pub(crate) fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if is_key_char(c) { c } else { '_' })
        .collect();
    if cleaned.is_empty() {
        "_".to_string()
    } else if cleaned.chars().all(|c| c == '.') {
        cleaned.replace('.', "_")
    } else {
        cleaned
    }
}

/// `role/env/name` from untrusted components, each sanitized.
pub(crate) fn job_key(role: &str, env: &str, name: &str) -> String {
    format!("{}/{}/{}", sanitize(role), sanitize(env), sanitize(name))
}

/// Why `key` is not a trusted job key `role/env/name`, if it is not.
pub(crate) fn check_job_key(key: &str) -> Result<(), String> {
    let parts: Vec<&str> = key.split('/').collect();
    if parts.len() != 3 {
        return Err(format!("job key {key:?} is not role/env/name"));
    }
    for part in parts {
        if part.is_empty() || part.chars().all(|c| c == '.') || !part.chars().all(is_key_char) {
            return Err(format!(
                "job key {key:?} has a component outside [A-Za-z0-9_.-]"
            ));
        }
    }
    Ok(())
}

/// A decimal number as written by a scheduler: digits only, no sign, no
/// leading zero (except `0` itself), fits in `u32`.
pub(crate) fn parse_index(digits: &str) -> Option<u32> {
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// `stdout` / `stderr`.
pub(crate) fn parse_stream(name: &str) -> Option<Stream> {
    match name {
        "stdout" => Some(Stream::Stdout),
        "stderr" => Some(Stream::Stderr),
        _ => None,
    }
}

/// `stdout`, `stderr` and their numbered rotations (`stdout.1`, as written
/// by Thermos' and Mesos' rotating loggers). Compressed rotations are not.
pub(crate) fn parse_rotated_stream(name: &str) -> Option<Stream> {
    match name.split_once('.') {
        None => parse_stream(name),
        Some((stream, n)) => {
            parse_index(n)?;
            parse_stream(stream)
        }
    }
}

/// Whether `text` is a UUID, `8-4-4-4-12` hex digits (either case).
pub(crate) fn is_uuid(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Reads a metadata file of at most [`MAX_METADATA_BYTES`].
pub(crate) fn read_metadata(path: &Path) -> Result<Vec<u8>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("failed to open: {e}"))?;
    let mut bytes = Vec::new();
    file.take(MAX_METADATA_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("failed to read: {e}"))?;
    if bytes.len() as u64 > MAX_METADATA_BYTES {
        return Err(format!("larger than {MAX_METADATA_BYTES} bytes"));
    }
    Ok(bytes)
}

/// Labels from `(key, value)` pairs.
pub(crate) fn labels<const N: usize>(pairs: [(&str, &str); N]) -> BTreeMap<String, String> {
    pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_refuse_traversal_and_control_characters() {
        for ok in ["web", "0", ".logs", "a b", "café", "-x"] {
            assert!(is_plain(ok), "{ok}");
        }
        for bad in ["", ".", "..", "a\nb", "a\0b", "a/b", "\u{1b}[31m"] {
            assert!(!is_plain(bad), "{bad:?}");
        }
        let root = Path::new("/r");
        assert_eq!(
            plain_components(root, Path::new("/r/a/b")),
            Some(vec!["a", "b"])
        );
        assert_eq!(
            plain_components(root, Path::new("/r/a/../../etc/passwd")),
            None
        );
        assert_eq!(plain_components(root, Path::new("/elsewhere/a")), None);
    }

    #[test]
    fn sanitizing_keeps_safe_names_and_defuses_others() {
        assert_eq!(sanitize("web-frontend_v2.1"), "web-frontend_v2.1");
        assert_eq!(sanitize("a/b c"), "a_b_c");
        assert_eq!(sanitize(".."), "__");
        assert_eq!(sanitize(""), "_");
        assert_eq!(sanitize("café"), "caf_");
        assert_eq!(job_key("www-data", "prod", "../x"), "www-data/prod/.._x");
    }

    #[test]
    fn job_keys_are_checked() {
        assert_eq!(check_job_key("www-data/prod/hello.world"), Ok(()));
        for bad in ["a/b", "a/b/c/d", "a//c", "a/../c", "a/b c/d", "a/b/ć"] {
            assert!(check_job_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn indexes_are_canonical_decimals() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("17"), Some(17));
        for bad in ["", "01", "-1", "+1", "1a", "4294967296", "١"] {
            assert_eq!(parse_index(bad), None, "{bad}");
        }
    }

    #[test]
    fn streams_and_rotations() {
        assert_eq!(parse_rotated_stream("stdout"), Some(Stream::Stdout));
        assert_eq!(parse_rotated_stream("stderr.3"), Some(Stream::Stderr));
        for bad in ["stdin", "stdout.gz", "stdout.1.gz", "stdout.", "stdout.01"] {
            assert_eq!(parse_rotated_stream(bad), None, "{bad}");
        }
    }

    #[test]
    fn uuids() {
        assert!(is_uuid("8f1c2b4e-3a5d-4c6e-9f7a-1b2c3d4e5f60"));
        assert!(!is_uuid("8f1c2b4e-3a5d-4c6e-9f7a-1b2c3d4e5f6"));
        assert!(!is_uuid("8f1c2b4e_3a5d-4c6e-9f7a-1b2c3d4e5f60"));
        assert!(!is_uuid("8f1c2b4e-3a5d-4c6e-9f7a-1b2c3d4e5f6g"));
    }
}
