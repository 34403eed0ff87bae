//! Time, in one place: the clock ([`now_unix_nanos`]), RFC 3339 timestamps
//! (rendering Unix nanoseconds for human and JSON output, parsing the
//! timestamps log framings carry), durations (`90s`, `1h30m`) and civil
//! dates (proleptic Gregorian, by Hinnant's arithmetic). No I/O.

/// `2026-11-21T07:07:00.123456789Z` from nanoseconds since the Unix epoch.
pub fn rfc3339_nanos(unix_nanos: i64) -> String {
    let secs = unix_nanos.div_euclid(1_000_000_000);
    let nanos = unix_nanos.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A duration written as numbers with units: `500ms`, `90s`, `15m` (`m` is
/// minutes), `2h`, `30d`, `2w`, `1h30m`, or `0`; a unit is required except
/// for zero. The error quotes the text and says what is wrong.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let bad = |why: &str| {
        format!("invalid duration {text:?}: {why} (e.g. 90s, 15m, 2h, 7d, 1h30m, 500ms)")
    };
    let text = text.trim();
    if text == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    if text.is_empty() {
        return Err(bad("empty"));
    }
    let mut total = std::time::Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad("expected a number"));
        }
        let value: u64 = rest[..digits]
            .parse()
            .map_err(|_| bad("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = match &rest[..unit_len] {
            "ms" => std::time::Duration::from_millis(1),
            "s" => std::time::Duration::from_secs(1),
            "m" => std::time::Duration::from_secs(60),
            "h" => std::time::Duration::from_secs(3600),
            "d" => std::time::Duration::from_secs(86_400),
            "w" => std::time::Duration::from_secs(7 * 86_400),
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit")),
        };
        rest = &rest[unit_len..];
        let part = u32::try_from(value)
            .ok()
            .and_then(|v| unit.checked_mul(v))
            .ok_or_else(|| bad("too long"))?;
        total = total.checked_add(part).ok_or_else(|| bad("too long"))?;
    }
    Ok(total)
}

/// Why a timestamp is not RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid rfc 3339 timestamp {text:?}: {problem}")]
pub struct TimeError {
    /// The text that was parsed, shortened to 64 bytes.
    pub text: String,
    /// What is wrong with it, a fixed phrase such as `"month out of range"`.
    pub problem: &'static str,
}

/// Nanoseconds since the Unix epoch of an RFC 3339 timestamp:
/// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, with 0 to 9 fractional
/// digits. `t` and `z` are accepted for `T` and `Z` (RFC 3339 allows them);
/// a space instead of `T` is not. A leap second (`:60`) is refused. Instants
/// outside the range of `i64` nanoseconds (about years 1677 to 2262) are
/// refused.
pub fn parse_rfc3339_nanos(text: &str) -> Result<i64, TimeError> {
    parse(text.as_bytes()).map_err(|problem| {
        let mut end = text.len().min(64);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        TimeError {
            text: text[..end].to_string(),
            problem,
        }
    })
}

fn parse(b: &[u8]) -> Result<i64, &'static str> {
    if b.len() < 20 {
        return Err("too short");
    }
    let year = digits(b, 0, 4).ok_or("bad year")?;
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2).ok_or("bad month")?;
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2).ok_or("bad day")?;
    if !matches!(b[10], b'T' | b't') {
        return Err("expected 'T' between date and time");
    }
    let hour = digits(b, 11, 2).ok_or("bad hour")?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2).ok_or("bad minute")?;
    expect(b, 16, b':')?;
    let second = digits(b, 17, 2).ok_or("bad second")?;
    if !(1..=12).contains(&month) {
        return Err("month out of range");
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err("day out of range");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("time of day out of range");
    }

    let mut i = 19;
    let mut nanos = 0i64;
    if b[i] == b'.' {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return Err("no digits after '.'");
        }
        if n > 9 {
            return Err("more than 9 fractional digits");
        }
        nanos = digits(b, start, n).ok_or("bad fraction")? * 10i64.pow(9 - n as u32);
    }

    let offset_secs = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(b'Z' | b'z') => return Err("trailing characters after 'Z'"),
        Some(&sign @ (b'+' | b'-')) => {
            if b.len() != i + 6 || b[i + 3] != b':' {
                return Err("offset is not +HH:MM or -HH:MM");
            }
            let oh = digits(b, i + 1, 2).ok_or("bad offset hours")?;
            let om = digits(b, i + 4, 2).ok_or("bad offset minutes")?;
            if oh > 23 || om > 59 {
                return Err("offset out of range");
            }
            let off = oh * 3600 + om * 60;
            if sign == b'-' { -off } else { off }
        }
        Some(_) => return Err("expected 'Z' or an offset like +01:00"),
        None => return Err("missing offset ('Z' or +HH:MM)"),
    };

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let total = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    i64::try_from(total).map_err(|_| "out of range of nanoseconds since 1970")
}

fn digits(b: &[u8], at: usize, n: usize) -> Option<i64> {
    let s = b.get(at..at + n)?;
    s.iter().try_fold(0i64, |acc, &c| {
        c.is_ascii_digit().then(|| acc * 10 + i64::from(c - b'0'))
    })
}

fn expect(b: &[u8], at: usize, want: u8) -> Result<(), &'static str> {
    match b.get(at) {
        Some(&c) if c == want => Ok(()),
        _ => Err(match want {
            b'-' => "expected '-' in the date",
            b':' => "expected ':' in the time or offset",
            _ => "unexpected character",
        }),
    }
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Nanoseconds since the Unix epoch, now (0 if the clock is before it).
pub fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_unix_ms() -> u64 {
    (now_unix_nanos() / 1_000_000) as u64
}

/// The UTC (year, month, day) of an instant, proleptic Gregorian.
pub fn utc_date(unix_nanos: i64) -> (i64, u32, u32) {
    civil_from_days(unix_nanos.div_euclid(86_400 * 1_000_000_000))
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01, proleptic Gregorian
/// (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn renders_known_instants() {
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339_nanos(1_763_708_820_123_456_789),
            "2025-11-21T07:07:00.123456789Z"
        );
        assert_eq!(
            rfc3339_nanos(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
        assert_eq!(rfc3339_nanos(-1), "1969-12-31T23:59:59.999999999Z");
    }

    #[test]
    fn parses_framing_timestamps() {
        // CRI (kubelet) and Docker json-file timestamps as written on disk.
        assert_eq!(
            parse_rfc3339_nanos("2025-11-21T07:07:00.123456789Z"),
            Ok(1_763_708_820_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_nanos("2025-11-21T08:07:00.123456789+01:00"),
            Ok(1_763_708_820_123_456_789)
        );
        assert_eq!(
            parse_rfc3339_nanos("2025-11-21T02:37:00.5-04:30"),
            Ok(1_763_708_820_500_000_000)
        );
        assert_eq!(parse_rfc3339_nanos("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(
            parse_rfc3339_nanos("1970-01-01t00:00:00.1z"),
            Ok(100_000_000)
        );
        assert_eq!(
            parse_rfc3339_nanos("1969-12-31T23:59:59.999999999Z"),
            Ok(-1)
        );
        assert_eq!(
            parse_rfc3339_nanos("2000-02-29T00:00:00Z"),
            Ok(951_782_400_000_000_000)
        );
    }

    #[test]
    fn refuses_malformed_timestamps_naming_the_problem() {
        for (text, problem) in [
            ("", "too short"),
            ("2025-11-21 07:07:00Z", "expected 'T' between date and time"),
            ("2025-11-21T07:07:00", "too short"),
            ("2025-11-21T07:07:00.1", "missing offset ('Z' or +HH:MM)"),
            ("2025-11-21T07:07:00.Z", "no digits after '.'"),
            (
                "2025-11-21T07:07:00.1234567890Z",
                "more than 9 fractional digits",
            ),
            ("2025-13-21T07:07:00Z", "month out of range"),
            ("2025-02-29T07:07:00Z", "day out of range"),
            ("2025-11-21T24:00:00Z", "time of day out of range"),
            ("2025-11-21T23:59:60Z", "time of day out of range"),
            ("2025-11-21T07:07:00+0100", "offset is not +HH:MM or -HH:MM"),
            ("2025-11-21T07:07:00Zjunk", "trailing characters after 'Z'"),
            (
                "2025-11-21T07:07:00+01:00x",
                "offset is not +HH:MM or -HH:MM",
            ),
            ("2025-11-21T07:07:00+24:00", "offset out of range"),
            (
                "2025-11-21T07:07:00 UTC",
                "expected 'Z' or an offset like +01:00",
            ),
            ("2025-11-2xT07:07:00Z", "bad day"),
            (
                "9999-12-31T23:59:59Z",
                "out of range of nanoseconds since 1970",
            ),
            ("２０２5-11-21T07:07:00Z", "bad year"),
        ] {
            let err = parse_rfc3339_nanos(text).expect_err(text);
            assert_eq!(err.problem, problem, "{text}");
        }
        let err = parse_rfc3339_nanos("2025-11-21T07:07:00").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid rfc 3339 timestamp \"2025-11-21T07:07:00\": too short"
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(nanos in any::<i64>()) {
            prop_assert_eq!(parse_rfc3339_nanos(&rfc3339_nanos(nanos)), Ok(nanos));
        }

        #[test]
        fn offsets_name_the_same_instant(
            secs in -2_000_000_000i64..7_000_000_000,
            offset_min in -1439i64..=1439,
        ) {
            // Render `secs` in local time at `offset_min`, then parse it back.
            let local = rfc3339_nanos((secs + offset_min * 60) * 1_000_000_000);
            let sign = if offset_min < 0 { '-' } else { '+' };
            let text = format!(
                "{}{sign}{:02}:{:02}",
                &local[..local.len() - 1],
                offset_min.abs() / 60,
                offset_min.abs() % 60
            );
            prop_assert_eq!(parse_rfc3339_nanos(&text), Ok(secs * 1_000_000_000));
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_rfc3339_nanos(&text);
        }
    }
}
