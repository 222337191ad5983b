//! The `cd.doco.job.schedule` label: upstream's formats (robfig/cron's standard parser), a 5-field
//! cron pattern without seconds, the descriptors `@yearly`/`@annually`, `@monthly`, `@weekly`,
//! `@daily`/`@midnight`, `@hourly`, and `@every <duration>` (Go durations such as `30m`, `1h30m`,
//! `10s`). Cron patterns are evaluated in the daemon's time zone (`TZ`, UTC when unset), as
//! upstream's are; `@every` counts from the previous slot, whatever the zone.
//!
//! croner evaluates the patterns (maintained, no seconds field when told so, day-of-month and
//! day-of-week combined with OR as in Vixie cron and robfig); jiff supplies the zones, with the tz
//! database bundled so `TZ` works in an image without `/usr/share/zoneinfo`.

use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron pattern (descriptors included).
    Cron(Box<Cron>),
    /// `@every <duration>`.
    Every(Duration),
}

/// Why a schedule was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The label is empty.
    #[error("the schedule is empty")]
    Empty,
    /// `@every` without a valid, positive duration.
    #[error("{0:?} is not a valid interval: expected @every <duration>, e.g. @every 30m")]
    Every(String),
    /// Not a cron pattern of five fields.
    #[error(
        "{0:?} is not a valid schedule: expected a 5-field cron pattern (minute hour day-of-month month day-of-week), @hourly, @daily, @weekly, @monthly, @yearly or @every <duration> ({1})"
    )]
    Cron(String, String),
}

impl Schedule {
    /// Parses a schedule label value.
    pub fn parse(raw: &str) -> Result<Schedule, ScheduleError> {
        let value = raw.trim();
        if value.is_empty() {
            return Err(ScheduleError::Empty);
        }
        if let Some(interval) = strip_prefix_ignore_case(value, "@every") {
            return parse_every(interval.trim())
                .map(Schedule::Every)
                .ok_or_else(|| ScheduleError::Every(value.to_string()));
        }
        let pattern = if value.eq_ignore_ascii_case("@midnight") {
            "@daily"
        } else {
            value
        };
        if !pattern.starts_with('@') && pattern.split_whitespace().count() != 5 {
            let fields = pattern.split_whitespace().count();
            return Err(ScheduleError::Cron(
                value.to_string(),
                format!("it has {fields} fields"),
            ));
        }
        CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map(|cron| Schedule::Cron(Box::new(cron)))
            .map_err(|e| ScheduleError::Cron(value.to_string(), e.to_string()))
    }

    /// The first slot strictly after `after`, in zone `tz`; `None` when the pattern never matches
    /// again (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        match self {
            Schedule::Every(every) => after.checked_add(*every).ok(),
            Schedule::Cron(cron) => cron
                .find_next_occurrence(&after.to_zoned(tz.clone()), false)
                .ok()
                .map(|zoned| zoned.timestamp()),
        }
    }
}

fn strip_prefix_ignore_case<'a>(value: &'a str, prefix: &str) -> Option<&'a str> {
    let head = value.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &value[prefix.len()..])
}

/// A Go duration (`90s`, `1h30m`, `1.5h`), whole seconds at least one second long, as robfig's
/// `@every` rounds to seconds.
fn parse_every(raw: &str) -> Option<Duration> {
    let duration = parse_go_duration(raw)?;
    let seconds = duration.as_secs();
    (seconds >= 1).then(|| Duration::from_secs(seconds))
}

/// Go's `time.ParseDuration` for non-negative values: a sequence of decimal numbers, each with a
/// unit (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`).
fn parse_go_duration(raw: &str) -> Option<Duration> {
    let mut rest = raw;
    let mut total = 0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..number_len].parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(schedule: &str, after: &str, tz: &TimeZone) -> String {
        Schedule::parse(schedule)
            .unwrap()
            .next_after(ts(after), tz)
            .unwrap()
            .to_string()
    }

    #[test]
    fn cron_edges_in_utc() {
        let utc = TimeZone::UTC;
        let cases = [
            (
                "*/15 * * * *",
                "2026-01-01T00:14:59Z",
                "2026-01-01T00:15:00Z",
            ),
            (
                "*/15 * * * *",
                "2026-01-01T00:15:00Z",
                "2026-01-01T00:30:00Z",
            ),
            (
                "30 2 * * 1-5",
                "2026-01-02T03:00:00Z",
                "2026-01-05T02:30:00Z",
            ),
            ("0 0 1 * *", "2026-01-31T23:59:00Z", "2026-02-01T00:00:00Z"),
            ("@hourly", "2026-01-01T10:59:59Z", "2026-01-01T11:00:00Z"),
            ("@daily", "2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z"),
            ("@midnight", "2026-12-31T23:00:00Z", "2027-01-01T00:00:00Z"),
            ("@weekly", "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
            ("@monthly", "2026-02-15T00:00:00Z", "2026-03-01T00:00:00Z"),
            ("@yearly", "2026-02-15T00:00:00Z", "2027-01-01T00:00:00Z"),
            // 29 February: the next leap year.
            (
                "0 12 29 2 *",
                "2026-03-01T00:00:00Z",
                "2028-02-29T12:00:00Z",
            ),
            // Day-of-month OR day-of-week, as cron and robfig.
            ("0 0 13 * 5", "2026-02-01T00:00:00Z", "2026-02-06T00:00:00Z"),
        ];
        for (schedule, after, want) in cases {
            assert_eq!(
                next(schedule, after, &utc),
                want,
                "{schedule} after {after}"
            );
        }
    }

    #[test]
    fn cron_in_a_time_zone() {
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 02:30 in Berlin (winter, UTC+1) is 01:30 UTC.
        assert_eq!(
            next("30 2 * * *", "2026-01-10T00:00:00Z", &berlin),
            "2026-01-10T01:30:00Z"
        );
        // Summer time (UTC+2).
        assert_eq!(
            next("30 2 * * *", "2026-07-10T00:00:00Z", &berlin),
            "2026-07-10T00:30:00Z"
        );
        let tokyo = TimeZone::get("Asia/Tokyo").unwrap();
        assert_eq!(
            next("@daily", "2026-01-10T16:00:00Z", &tokyo),
            "2026-01-11T15:00:00Z"
        );
    }

    #[test]
    fn every_counts_from_the_previous_slot() {
        let utc = TimeZone::UTC;
        assert_eq!(
            next("@every 10s", "2026-01-01T00:00:03Z", &utc),
            "2026-01-01T00:00:13Z"
        );
        assert_eq!(
            next("@every 1h30m", "2026-01-01T00:00:00Z", &utc),
            "2026-01-01T01:30:00Z"
        );
        assert_eq!(
            next("@EVERY 1.5m", "2026-01-01T00:00:00Z", &utc),
            "2026-01-01T00:01:30Z"
        );
    }

    #[test]
    fn refuses_what_upstream_refuses() {
        for bad in [
            "",
            "   ",
            "* * * *",
            "0 * * * * *",
            "61 * * * *",
            "* 25 * * *",
            "@every",
            "@every 0s",
            "@every 500ms",
            "@every ten",
            "@every -5m",
            "@fortnightly",
            "often",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad:?} was accepted");
        }
        let err = Schedule::parse("* * * *").unwrap_err().to_string();
        assert!(err.contains("5-field cron pattern"), "{err}");
        assert!(err.contains("4 fields"), "{err}");
    }
}
