//! Scalar value parsers shared by the environment and YAML layers.
//!
//! Upstream reads booleans, durations and poll intervals with Go's parsers; these functions accept
//! the same spellings (plus the `yes`/`no` booleans the brief asks for) so that existing
//! configurations keep working, and return short reasons that callers wrap with the variable or
//! field name.

use std::time::Duration;

/// Parses a boolean: `true/false/1/0/yes/no/on/off`, case-insensitive, surrounding blanks ignored.
pub fn parse_bool(raw: &str) -> Result<bool, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" | "t" => Ok(true),
        "false" | "0" | "no" | "off" | "f" => Ok(false),
        _ => Err("expected a boolean (true/false, 1/0, yes/no)".to_owned()),
    }
}

/// Parses a Go-style duration such as `90s`, `5m`, `1h30m`, `1.5h` or `300ms`.
///
/// A bare `0` is accepted (as Go does). Negative durations are refused: nothing in doco-cd's
/// configuration has a meaning for them.
pub fn parse_go_duration(raw: &str) -> Result<Duration, String> {
    let s = raw.trim();
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if s.starts_with('-') {
        return Err(format!("negative duration {raw:?} is not allowed"));
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total_nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let (number, after_number) = split_number(rest).ok_or_else(|| {
            format!(
                "invalid duration {raw:?}: expected a number before each unit (e.g. 90s, 5m, 1h30m)"
            )
        })?;
        let (unit_nanos, after_unit) = split_unit(after_number).ok_or_else(|| {
            format!("invalid duration {raw:?}: missing or unknown unit (use ns, us, ms, s, m or h)")
        })?;
        total_nanos = total_nanos
            .checked_add(
                scale(number, unit_nanos)
                    .ok_or_else(|| format!("duration {raw:?} is out of range"))?,
            )
            .ok_or_else(|| format!("duration {raw:?} is out of range"))?;
        rest = after_unit;
    }
    let secs = u64::try_from(total_nanos / 1_000_000_000)
        .map_err(|_| format!("duration {raw:?} is out of range"))?;
    // The remainder of a division by 1e9 always fits in u32.
    let nanos = u32::try_from(total_nanos % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// A decimal number as (integer part, fraction digits).
struct Number<'a> {
    int: &'a str,
    frac: &'a str,
}

fn split_number(s: &str) -> Option<(Number<'_>, &str)> {
    let int_end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (int, rest) = s.split_at(int_end);
    let (frac, rest) = match rest.strip_prefix('.') {
        Some(after_dot) => {
            let end = after_dot
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(after_dot.len());
            after_dot.split_at(end)
        }
        None => ("", rest),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    Some((Number { int, frac }, rest))
}

fn split_unit(s: &str) -> Option<(u128, &str)> {
    // Longest units first so that "ms" is not read as "m" followed by "s".
    const UNITS: [(&str, u128); 8] = [
        ("ns", 1),
        ("us", 1_000),
        ("µs", 1_000),
        ("μs", 1_000),
        ("ms", 1_000_000),
        ("s", 1_000_000_000),
        ("m", 60_000_000_000),
        ("h", 3_600_000_000_000),
    ];
    UNITS
        .iter()
        .find_map(|(name, nanos)| s.strip_prefix(name).map(|rest| (*nanos, rest)))
}

fn scale(number: Number<'_>, unit_nanos: u128) -> Option<u128> {
    let int: u128 = if number.int.is_empty() {
        0
    } else {
        number.int.parse().ok()?
    };
    let mut total = int.checked_mul(unit_nanos)?;
    let mut place = unit_nanos;
    for digit in number.frac.chars() {
        place /= 10;
        if place == 0 {
            break;
        }
        total = total.checked_add(u128::from(digit.to_digit(10)?) * place)?;
    }
    Some(total)
}

/// Parses a poll interval given as text: whole seconds (`"180"`) or a Go duration (`"5m"`).
/// The result must be whole seconds.
pub fn parse_interval_str(raw: &str) -> Result<Duration, String> {
    let value = raw.trim();
    if value.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Ok(seconds) = value.parse::<i64>() {
        return interval_from_seconds(seconds);
    }
    let duration = parse_go_duration(value).map_err(|_| {
        format!(
            "invalid value {raw:?}: expected seconds (e.g. 180) or a duration (e.g. 90s, 5m, 1h30m)"
        )
    })?;
    if duration.subsec_nanos() != 0 {
        return Err(format!(
            "invalid value {raw:?}: must be a whole number of seconds"
        ));
    }
    Ok(duration)
}

/// Converts an integer number of seconds to an interval, refusing negative values.
pub fn interval_from_seconds(seconds: i64) -> Result<Duration, String> {
    u64::try_from(seconds)
        .map(Duration::from_secs)
        .map_err(|_| format!("invalid value {seconds}: must not be negative"))
}

/// Converts a float number of seconds to an interval; it must be whole and not negative.
pub fn interval_from_float(seconds: f64) -> Result<Duration, String> {
    if !seconds.is_finite() || seconds.fract() != 0.0 {
        return Err(format!(
            "invalid value {seconds}: must be a whole number of seconds"
        ));
    }
    if seconds < 0.0 {
        return Err(format!("invalid value {seconds}: must not be negative"));
    }
    if seconds > u64::MAX as f64 {
        return Err(format!("invalid value {seconds}: out of range"));
    }
    // Checked above: finite, whole, within 0..=u64::MAX.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(Duration::from_secs(seconds as u64))
}

/// Levenshtein distance, used to suggest the closest known key for a misspelt one.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b_chars: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b_chars.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b_chars.len() + 1];
        for (j, cb) in b_chars.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            current[j + 1] = (previous[j] + cost)
                .min(previous[j + 1] + 1)
                .min(current[j] + 1);
        }
        previous = current;
    }
    previous[b_chars.len()]
}

/// The closest candidate to `key`, if it is close enough to be a plausible typo.
pub fn closest<'a>(key: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(key, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn booleans() {
        for (raw, want) in [
            ("true", Some(true)),
            ("TRUE", Some(true)),
            ("1", Some(true)),
            ("yes", Some(true)),
            ("Yes", Some(true)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("no", Some(false)),
            ("NO", Some(false)),
            ("maybe", None),
            ("", None),
            ("2", None),
        ] {
            assert_eq!(parse_bool(raw).ok(), want, "{raw:?}");
        }
    }

    #[test]
    fn go_durations() {
        for (raw, want) in [
            ("90s", Some(Duration::from_secs(90))),
            ("5m", Some(Duration::from_secs(300))),
            ("1h30m", Some(Duration::from_secs(5400))),
            ("1.5h", Some(Duration::from_secs(5400))),
            ("300ms", Some(Duration::from_millis(300))),
            ("1m30.5s", Some(Duration::from_millis(90_500))),
            ("0", Some(Duration::ZERO)),
            ("72h", Some(Duration::from_secs(72 * 3600))),
            ("", None),
            ("5", None),
            ("5x", None),
            ("-5s", None),
            ("h", None),
        ] {
            assert_eq!(parse_go_duration(raw).ok(), want, "{raw:?}");
        }
    }

    #[test]
    fn intervals_from_text() {
        for (raw, want) in [
            ("180", Ok(Duration::from_secs(180))),
            ("0", Ok(Duration::ZERO)),
            ("90s", Ok(Duration::from_secs(90))),
            ("1h30m", Ok(Duration::from_secs(5400))),
            ("1.5s", Err("whole number of seconds")),
            ("1500ms", Err("whole number of seconds")),
            ("-5", Err("negative")),
            ("soon", Err("expected seconds")),
            ("", Err("empty")),
        ] {
            match (parse_interval_str(raw), want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{raw:?}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{raw:?}: {got}"),
                (got, want) => panic!("{raw:?}: got {got:?}, want {want:?}"),
            }
        }
        assert!(interval_from_float(1.5).is_err());
        assert_eq!(interval_from_float(60.0), Ok(Duration::from_secs(60)));
    }

    #[test]
    fn suggestions() {
        let keys = ["compose_files", "env_files", "name", "reference"];
        assert_eq!(closest("compose_file", &keys), Some("compose_files"));
        assert_eq!(closest("refrence", &keys), Some("reference"));
        assert_eq!(closest("completely_else", &keys), None);
    }
}
