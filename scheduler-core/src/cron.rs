//! Five-field cron schedules for cron jobs, evaluated in UTC.
//!
//! A [`Schedule`] is parsed from the usual `minute hour day-of-month month
//! day-of-week` line (or a macro such as `@daily`) and answers one question:
//! which minute is the next tick after a given instant ([`Schedule::next_after`]).
//! The scheduler is to start one run per tick and skip a tick whose previous
//! run is still going, so a cron job never overlaps itself; that policy
//! lives in the scheduler, this module only does the calendar.
//!
//! The syntax is Vixie cron's: `*`, numbers, lists `a,b`, ranges `a-b`, steps
//! `*/n`, `a-b/n` and `a/n` (from `a` to the field's maximum), month names
//! `jan`..`dec` and weekday names `sun`..`sat` (any case), weekday `7` for
//! Sunday. When both day of month and day of week are restricted, a day
//! matches if *either* matches; a field that starts with `*` (`*` or `*/n`)
//! counts as unrestricted for this rule, as in Vixie cron. The calendar math
//! is Howard Hinnant's days-from-civil algorithms, so no date crate is needed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{Error, Result};

/// How far [`Schedule::next_after`] looks ahead: five years of 366 days.
pub const SEARCH_DAYS: i64 = 5 * 366;

const SECS_PER_DAY: i64 = 86_400;

/// A parsed five-field cron schedule, in UTC.
///
/// Serialized as its source text; equality compares the source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    source: String,
    /// Bit `n` set: minute `n` (0..=59) matches.
    minutes: u64,
    /// Bit `n`: hour `n` (0..=23).
    hours: u32,
    /// Bit `n`: day of month `n` (1..=31).
    days: u32,
    /// Bit `n`: month `n` (1..=12).
    months: u16,
    /// Bit `n`: weekday `n` (0 = Sunday ..= 6).
    weekdays: u8,
    /// Day of month starts with `*`: unrestricted for the Vixie OR rule.
    days_star: bool,
    /// Day of week starts with `*`.
    weekdays_star: bool,
}

/// One of the five fields: its name in messages, range and value names.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names of the values `min`, `min + 1`, ...
    names: &'static [&'static str],
}

const MINUTE: Field = Field {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Field = Field {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DAY_OF_MONTH: Field = Field {
    name: "day of month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
/// 0 and 7 are both Sunday; 7 is folded into 0 after parsing.
const DAY_OF_WEEK: Field = Field {
    name: "day of week",
    min: 0,
    max: 7,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parses a five-field line or a macro (`@hourly`, `@daily`, `@midnight`,
    /// `@weekly`, `@monthly`, `@yearly`, `@annually`).
    ///
    /// Errors are [`Error::Spec`] on the field `cron`; the message names the
    /// cron field and the token that is wrong. A schedule whose days can
    /// never exist (`0 0 30 2 *`) is refused as never firing.
    pub fn parse(source: &str) -> Result<Schedule> {
        let source = source.trim();
        let bad = |message: String| Error::spec("cron", message);
        if source.is_empty() {
            return Err(bad("the schedule is empty".into()));
        }
        let expanded = if source.starts_with('@') {
            match source.to_ascii_lowercase().as_str() {
                "@hourly" => "0 * * * *",
                "@daily" | "@midnight" => "0 0 * * *",
                "@weekly" => "0 0 * * 0",
                "@monthly" => "0 0 1 * *",
                "@yearly" | "@annually" => "0 0 1 1 *",
                _ => {
                    return Err(bad(format!(
                        "unknown macro {source:?}, expected one of @hourly, @daily, @midnight, \
                         @weekly, @monthly, @yearly, @annually"
                    )));
                }
            }
        } else {
            source
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, dom, month, dow] = fields[..] else {
            return Err(bad(format!(
                "expected five fields (minute hour day-of-month month day-of-week), got {}",
                fields.len()
            )));
        };
        let field = |spec: &Field, text: &str| -> Result<u64> {
            parse_field(spec, text).map_err(|message| bad(format!("{}: {message}", spec.name)))
        };
        let mut weekdays = field(&DAY_OF_WEEK, dow)?;
        if weekdays & (1 << 7) != 0 {
            weekdays = (weekdays | 1) & 0x7f;
        }
        let schedule = Schedule {
            source: source.to_string(),
            minutes: field(&MINUTE, minute)?,
            hours: field(&HOUR, hour)? as u32,
            days: field(&DAY_OF_MONTH, dom)? as u32,
            months: field(&MONTH, month)? as u16,
            weekdays: weekdays as u8,
            days_star: dom.starts_with('*'),
            weekdays_star: dow.starts_with('*'),
        };
        if !schedule.some_day_exists() {
            return Err(bad(format!(
                "day of month: the schedule never fires, no selected month has day {dom:?}"
            )));
        }
        Ok(schedule)
    }

    /// The source text, trimmed.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the minute holding `unix_secs` is a tick.
    pub fn matches(&self, unix_secs: i64) -> bool {
        let day = unix_secs.div_euclid(SECS_PER_DAY);
        let secs = unix_secs.rem_euclid(SECS_PER_DAY);
        let (_, month, dom) = civil_from_days(day);
        self.months & (1 << month) != 0
            && self.day_matches(dom, weekday(day))
            && self.hours & (1 << (secs / 3600)) != 0
            && self.minutes & (1 << (secs % 3600 / 60)) != 0
    }

    /// The first tick (Unix seconds, a whole minute) strictly after
    /// `unix_secs`, or `None` if there is none within [`SEARCH_DAYS`] days
    /// (a schedule for Feb 29 on a Monday, say).
    ///
    /// Skips whole months, days and hours that cannot match, so a call costs
    /// at most a few thousand steps whatever the schedule.
    pub fn next_after(&self, unix_secs: i64) -> Option<i64> {
        let start = unix_secs.div_euclid(60).checked_add(1)?.checked_mul(60)?;
        let limit = start.saturating_add(SEARCH_DAYS * SECS_PER_DAY);
        let last_day = limit.div_euclid(SECS_PER_DAY);
        let mut day = start.div_euclid(SECS_PER_DAY);
        let secs = start.rem_euclid(SECS_PER_DAY);
        let (mut hour, mut minute) = ((secs / 3600) as u32, (secs % 3600 / 60) as u32);
        while day <= last_day {
            let (year, month, dom) = civil_from_days(day);
            if self.months & (1 << month) == 0 {
                let (y, m) = if month == 12 {
                    (year + 1, 1)
                } else {
                    (year, month + 1)
                };
                day = days_from_civil(y, m, 1);
                (hour, minute) = (0, 0);
                continue;
            }
            if !self.day_matches(dom, weekday(day)) {
                day += 1;
                (hour, minute) = (0, 0);
                continue;
            }
            match next_bit(u64::from(self.hours), hour) {
                None => {
                    day += 1;
                    (hour, minute) = (0, 0);
                    continue;
                }
                Some(h) if h != hour => (hour, minute) = (h, 0),
                Some(_) => {}
            }
            match next_bit(self.minutes, minute) {
                None => {
                    (hour, minute) = (hour + 1, 0);
                    if hour == 24 {
                        day += 1;
                        hour = 0;
                    }
                }
                Some(m) => {
                    let time = i128::from(hour) * 3600 + i128::from(m) * 60;
                    let tick = i64::try_from(i128::from(day) * 86_400 + time).ok()?;
                    return (tick < limit).then_some(tick);
                }
            }
        }
        None
    }

    /// Day of month and weekday rules, with Vixie's OR when both are
    /// restricted.
    fn day_matches(&self, dom: u32, weekday: u32) -> bool {
        let by_dom = self.days & (1 << dom) != 0;
        let by_dow = self.weekdays & (1 << weekday) != 0;
        if self.days_star || self.weekdays_star {
            by_dom && by_dow
        } else {
            by_dom || by_dow
        }
    }

    /// False when the days of month can never occur in the selected months
    /// (and the weekdays cannot rescue them through the OR rule).
    fn some_day_exists(&self) -> bool {
        if !self.days_star && !self.weekdays_star {
            return true;
        }
        (1..=12u32)
            .filter(|m| self.months & (1 << m) != 0)
            .any(|m| {
                let longest = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31][m as usize - 1];
                self.days & ((1u64 << (longest + 1)) - 2) as u32 != 0
            })
    }
}

/// Parses one field into a bit set of its values.
fn parse_field(field: &Field, text: &str) -> std::result::Result<u64, String> {
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(format!("{text:?} has an empty list item"));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(step)),
            None => (item, None),
        };
        let step = match step {
            None => 1,
            Some(step) => match step.parse::<u32>() {
                Ok(n) if (1..=field.max.max(1)).contains(&n) => n,
                _ => {
                    return Err(format!(
                        "step {step:?} in {item:?} is not a number from 1 to {}",
                        field.max.max(1)
                    ));
                }
            },
        };
        let (low, high) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(field, a)?, value(field, b)?);
            if a > b {
                return Err(format!("range {item:?} is backwards"));
            }
            (a, b)
        } else {
            let a = value(field, range)?;
            (a, if item.contains('/') { field.max } else { a })
        };
        let mut v = low;
        while v <= high {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

/// A number in the field's range or one of its names.
fn value(field: &Field, token: &str) -> std::result::Result<u32, String> {
    if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
        return match token.parse::<u32>() {
            Ok(v) if (field.min..=field.max).contains(&v) => Ok(v),
            _ => Err(format!(
                "{token:?} is out of range {}-{}",
                field.min, field.max
            )),
        };
    }
    let name = field
        .names
        .iter()
        .position(|name| name.eq_ignore_ascii_case(token));
    match name {
        Some(i) => Ok(field.min + i as u32),
        None if field.names.is_empty() => Err(format!("{token:?} is not a number")),
        None => Err(format!(
            "{token:?} is not a number or a name ({}..{})",
            field.names[0],
            field.names[field.names.len() - 1]
        )),
    }
}

/// The lowest set bit of `bits` at `from` or above.
fn next_bit(bits: u64, from: u32) -> Option<u32> {
    let rest = bits.checked_shr(from)?;
    (rest != 0).then(|| from + rest.trailing_zeros())
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    sluice_schema::time::days_from_civil(year, i64::from(month), i64::from(day))
}

pub(crate) use sluice_schema::time::civil_from_days;

/// Weekday of a day count since 1970-01-01 (a Thursday), 0 = Sunday.
fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl FromStr for Schedule {
    type Err = Error;

    fn from_str(s: &str) -> Result<Schedule> {
        Schedule::parse(s)
    }
}

impl Serialize for Schedule {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Schedule::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Unix seconds of a UTC date and time.
    fn at(year: i64, month: u32, day: u32, hour: i64, minute: i64) -> i64 {
        days_from_civil(year, month, day) * SECS_PER_DAY + hour * 3600 + minute * 60
    }

    fn next(schedule: &str, after: i64) -> Option<i64> {
        Schedule::parse(schedule).unwrap().next_after(after)
    }

    #[test]
    fn civil_conversions_agree_with_counting_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2024, 1, 1), 1_704_067_200 / SECS_PER_DAY);
        assert_eq!(weekday(days_from_civil(2024, 1, 1)), 1, "a monday");
        let (mut y, mut m, mut d) = (1600i64, 1u32, 1u32);
        let mut days = days_from_civil(1600, 1, 1);
        while y < 2500 {
            assert_eq!(civil_from_days(days), (y, m, d));
            assert_eq!(days_from_civil(y, m, d), days);
            let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
            let len = match m {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            days += 1;
            d += 1;
            if d > len {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
    }

    #[test]
    fn known_schedules() {
        let jan1 = at(2024, 1, 1, 0, 0);
        assert_eq!(next("*/15 * * * *", jan1), Some(at(2024, 1, 1, 0, 15)));
        assert_eq!(next("*/15 * * * *", jan1 - 1), Some(jan1));
        assert_eq!(
            next("*/15 * * * *", jan1 + 450),
            Some(at(2024, 1, 1, 0, 15))
        );
        assert_eq!(
            next("*/15 * * * *", at(2024, 12, 31, 23, 45)),
            Some(at(2025, 1, 1, 0, 0))
        );
        // 2024-01-05 is a friday.
        let friday = at(2024, 1, 5, 10, 0);
        assert_eq!(next("0 9 * * mon-fri", friday), Some(at(2024, 1, 8, 9, 0)));
        assert_eq!(
            next("0 9 * * 1-5", at(2024, 1, 8, 8, 59)),
            Some(at(2024, 1, 8, 9, 0))
        );
        assert_eq!(
            next("0 0 1 1 *", at(2024, 6, 1, 0, 0)),
            Some(at(2025, 1, 1, 0, 0))
        );
        assert_eq!(
            next("@yearly", at(2024, 6, 1, 0, 0)),
            Some(at(2025, 1, 1, 0, 0))
        );
        assert_eq!(
            next("@hourly", at(2024, 6, 1, 0, 0)),
            Some(at(2024, 6, 1, 1, 0))
        );
        assert_eq!(
            next("@daily", at(2024, 6, 1, 0, 0)),
            Some(at(2024, 6, 2, 0, 0))
        );
        assert_eq!(
            next("@monthly", at(2024, 12, 5, 0, 0)),
            Some(at(2025, 1, 1, 0, 0))
        );
        assert_eq!(next("@weekly", jan1), Some(at(2024, 1, 7, 0, 0)));
        assert_eq!(next("0 0 * * 7", jan1), Some(at(2024, 1, 7, 0, 0)));
        assert_eq!(next("0 0 * * 5-7", jan1), Some(at(2024, 1, 5, 0, 0)));
        // Names in any case, a step from a value, lists.
        assert_eq!(
            next("30 6 * FEB-mar sun", jan1),
            Some(at(2024, 2, 4, 6, 30))
        );
        assert_eq!(next("50/5 * * * *", jan1), Some(at(2024, 1, 1, 0, 50)));
        assert_eq!(
            next("5,7 3 * * *", at(2024, 1, 1, 3, 5)),
            Some(at(2024, 1, 1, 3, 7))
        );
        assert_eq!(next("0 22-23/1,1 * * *", jan1), Some(at(2024, 1, 1, 1, 0)));
        // Before 1970.
        assert_eq!(next("0 0 1 1 *", at(1969, 6, 1, 0, 0)), Some(0));
    }

    #[test]
    fn february_29_fires_in_leap_years_only() {
        let feb29 = "0 12 29 2 *";
        assert_eq!(
            next(feb29, at(2024, 3, 1, 0, 0)),
            Some(at(2028, 2, 29, 12, 0))
        );
        assert_eq!(
            next(feb29, at(2000, 1, 1, 0, 0)),
            Some(at(2000, 2, 29, 12, 0))
        );
        // 2100 is not a leap year and 2104 is more than five years away.
        assert_eq!(next(feb29, at(2096, 3, 1, 0, 0)), None);
        assert!(
            Schedule::parse(feb29)
                .unwrap()
                .matches(at(2024, 2, 29, 12, 0))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_are_restricted() {
        let jan1 = at(2024, 1, 1, 0, 0);
        // The 13th or any friday: friday the 5th comes first.
        assert_eq!(next("0 0 13 * fri", jan1), Some(at(2024, 1, 5, 0, 0)));
        assert_eq!(
            next("0 0 13 * fri", at(2024, 1, 12, 0, 0)),
            Some(at(2024, 1, 13, 0, 0))
        );
        assert_eq!(next("0 0 13 * *", jan1), Some(at(2024, 1, 13, 0, 0)));
        // A field starting with `*` is unrestricted: odd days that are saturdays.
        assert_eq!(next("0 0 */2 * sat", jan1), Some(at(2024, 1, 13, 0, 0)));
        // Feb 31 never exists, but mondays of february do.
        assert_eq!(next("0 0 31 2 mon", jan1), Some(at(2024, 2, 5, 0, 0)));
    }

    #[test]
    fn parse_errors_name_the_field_and_token() {
        for (source, words) in [
            ("", &["empty"][..]),
            ("* * * *", &["five fields", "got 4"]),
            ("* * * * * *", &["five fields", "got 6"]),
            ("@reboot", &["unknown macro", "@reboot"]),
            ("61 * * * *", &["minute", "\"61\"", "0-59"]),
            ("* 24 * * *", &["hour", "\"24\""]),
            ("* * 0 * *", &["day of month", "\"0\""]),
            ("* * 32 * *", &["day of month", "\"32\""]),
            ("* * * 13 *", &["month", "\"13\""]),
            ("* * * foo *", &["month", "\"foo\"", "jan..dec"]),
            ("* * * * 8", &["day of week", "\"8\""]),
            ("* * * * funday", &["day of week", "\"funday\"", "sun..sat"]),
            ("*/0 * * * *", &["minute", "step \"0\""]),
            ("*/x * * * *", &["minute", "step \"x\""]),
            ("5-2 * * * *", &["minute", "\"5-2\"", "backwards"]),
            ("1,,2 * * * *", &["minute", "empty list item"]),
            ("99999999999 * * * *", &["minute", "out of range"]),
            ("-1 * * * *", &["minute", "\"\""]),
            ("0 0 30 2 *", &["day of month", "never fires"]),
            ("0 0 31 4,6,9,11 *", &["day of month", "never fires"]),
        ] {
            let err = Schedule::parse(source).unwrap_err();
            let Error::Spec { field, message } = &err else {
                panic!("{source:?}: {err}");
            };
            assert_eq!(field, "cron", "{source:?}");
            for word in words {
                assert!(
                    message.contains(word),
                    "{source:?}: {message:?} lacks {word:?}"
                );
            }
        }
    }

    #[test]
    fn serde_and_display_use_the_source() {
        let schedule = Schedule::parse("  0 9 * * mon-fri ").unwrap();
        assert_eq!(schedule.to_string(), "0 9 * * mon-fri");
        let json = serde_json::to_string(&schedule).unwrap();
        assert_eq!(json, "\"0 9 * * mon-fri\"");
        assert_eq!(serde_json::from_str::<Schedule>(&json).unwrap(), schedule);
        assert!(serde_json::from_str::<Schedule>("\"0 0 30 2 *\"").is_err());
    }

    #[test]
    fn extreme_instants_do_not_overflow() {
        let every = Schedule::parse("* * * * *").unwrap();
        assert_eq!(every.next_after(i64::MAX), None);
        let last_minute = i64::MAX / 60 * 60;
        assert_eq!(every.next_after(last_minute - 1), Some(last_minute));
        assert_eq!(every.next_after(last_minute), None);
        assert!(every.next_after(i64::MIN).is_some());
    }

    fn field(min: u32, max: u32) -> impl Strategy<Value = String> {
        let item = prop_oneof![
            3 => Just("*".to_string()),
            1 => (1..=max).prop_map(|n| format!("*/{n}")),
            2 => (min..=max).prop_map(|a| a.to_string()),
            1 => (min..=max, min..=max).prop_map(|(a, b)| format!("{}-{}", a.min(b), a.max(b))),
            1 => (min..=max, min..=max, 1..=max)
                .prop_map(|(a, b, n)| format!("{}-{}/{n}", a.min(b), a.max(b))),
            1 => (min..=max, 1..=max).prop_map(|(a, n)| format!("{a}/{n}")),
        ];
        prop::collection::vec(item, 1..=3).prop_map(|items| items.join(","))
    }

    fn schedule() -> impl Strategy<Value = Schedule> {
        (
            field(0, 59),
            field(0, 23),
            field(1, 31),
            field(1, 12),
            field(0, 7),
        )
            .prop_filter_map("never fires", |(mi, h, dom, mo, dow)| {
                Schedule::parse(&format!("{mi} {h} {dom} {mo} {dow}")).ok()
            })
    }

    /// Unix seconds from 1843 to 2223.
    fn instant() -> impl Strategy<Value = i64> {
        -4_000_000_000i64..8_000_000_000
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// `next_after` finds what a minute-by-minute scan finds.
        #[test]
        fn next_after_matches_a_minute_by_minute_scan(s in schedule(), after in instant()) {
            const MINUTES: i64 = 40_000;
            let first = (after.div_euclid(60) + 1) * 60;
            let scanned = (0..MINUTES).map(|i| first + i * 60).find(|&t| s.matches(t));
            let found = s.next_after(after);
            match scanned {
                Some(t) => prop_assert_eq!(found, Some(t), "{}", s),
                None => prop_assert!(
                    found.is_none_or(|t| t >= first + MINUTES * 60),
                    "{} found {:?}", s, found
                ),
            }
        }

        /// Over the whole search window, with a scan that skips days that
        /// do not match, for rare schedules too.
        #[test]
        fn next_after_matches_a_day_by_day_scan(s in schedule(), after in instant()) {
            let first = (after.div_euclid(60) + 1) * 60;
            let limit = first + SEARCH_DAYS * SECS_PER_DAY;
            let mut scanned = None;
            for day in first.div_euclid(SECS_PER_DAY)..=limit.div_euclid(SECS_PER_DAY) {
                let (_, month, dom) = civil_from_days(day);
                if s.months & (1 << month) == 0 || !s.day_matches(dom, weekday(day)) {
                    continue;
                }
                let from = (day * SECS_PER_DAY).max(first);
                let to = ((day + 1) * SECS_PER_DAY).min(limit);
                scanned = (from..to).step_by(60).find(|&t| s.matches(t));
                if scanned.is_some() {
                    break;
                }
            }
            prop_assert_eq!(s.next_after(after), scanned, "{}", s);
        }

        #[test]
        fn ticks_are_whole_matching_minutes(s in schedule(), after in instant()) {
            if let Some(t) = s.next_after(after) {
                prop_assert!(t > after && t % 60 == 0 && s.matches(t));
            }
        }
    }
}
