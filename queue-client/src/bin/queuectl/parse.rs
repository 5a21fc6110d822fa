//! Parsers of flag values: durations, times, headers, limit settings.

use std::time::Duration;

use queue_client::{CallbackState, EventType, JobState};

/// A duration: one or more `<number><unit>` parts, units `ms`, `s`, `m`,
/// `h`, `d` (`1h30m`, `250ms`, `7d`); a bare `0` is zero.
pub fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("{text:?} is not a duration (e.g. 500ms, 30s, 5m, 1h30m, 7d)");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let factor: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(factor)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
    }
    Ok(Duration::from_millis(total))
}

/// A point in time as unix milliseconds: RFC 3339
/// (`2026-12-01T10:00:00Z`, `2026-12-01T11:00:00+01:00`) or a unix
/// millisecond count.
pub fn time(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse()
            .map_err(|_| format!("{text:?} is too large a unix millisecond count"));
    }
    let at: jiff::Timestamp = text.parse().map_err(|e| {
        format!("{text:?} is not a time: give RFC 3339 (2026-12-01T10:00:00Z) or unix ms ({e})")
    })?;
    u64::try_from(at.as_millisecond()).map_err(|_| format!("{text:?} is before 1970"))
}

/// A point in time as [`time`] reads it, or a duration meaning that long
/// before now (`6h`, `30m`).
pub fn time_or_ago(text: &str) -> Result<u64, String> {
    let digits_only = text.trim().bytes().all(|b| b.is_ascii_digit());
    match duration(text) {
        Ok(ago) if !digits_only => {
            let ago = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
            Ok(crate::output::now_ms().saturating_sub(ago))
        }
        _ => time(text).map_err(|e| format!("{e}, or how long ago (e.g. 6h)")),
    }
}

/// A header `KEY=VALUE`.
pub fn header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

/// A count limit: a positive number, or `none`.
pub fn count_setting(text: &str) -> Result<Setting<u32>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Setting::Remove);
    }
    match text.parse::<u32>() {
        Ok(n) if n > 0 => Ok(Setting::Set(n)),
        _ => Err(format!("{text:?} is not a positive number or \"none\"")),
    }
}

/// A rate limit `JOBS/DURATION` (`100/1s`, `5/m` meaning 5 a minute), or
/// `none`.
pub fn rate_setting(text: &str) -> Result<Setting<(u32, Duration)>, String> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(Setting::Remove);
    }
    let bad = || format!("{text:?} is not JOBS/DURATION (e.g. 100/1s, 5/1m) or \"none\"");
    let (jobs, per) = text.split_once('/').ok_or_else(bad)?;
    let jobs: u32 = jobs.trim().parse().map_err(|_| bad())?;
    let per = per.trim();
    // `100/s` reads as "100 a second".
    let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
        duration(per)?
    } else {
        duration(&format!("1{per}"))?
    };
    if jobs == 0 || per.is_zero() {
        return Err(bad());
    }
    Ok(Setting::Set((jobs, per)))
}

/// An event type: a state or `progress`.
pub fn event_type(text: &str) -> Result<EventType, String> {
    text.parse()
}

/// A job state.
pub fn job_state(text: &str) -> Result<JobState, String> {
    text.parse::<JobState>().map_err(|e| {
        let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        format!("{e}; one of {}", names.join(", "))
    })
}

/// A callback delivery state.
pub fn callback_state(text: &str) -> Result<CallbackState, String> {
    text.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_add_their_parts() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(duration("0"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "5x", "1h 30m", "-1s"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_are_rfc3339_or_unix_ms() {
        assert_eq!(time("1764000000000"), Ok(1_764_000_000_000));
        assert_eq!(time("2026-12-01T10:00:00Z"), Ok(1_796_119_200_000));
        assert_eq!(time("2026-12-01T11:00:00+01:00"), Ok(1_796_119_200_000));
        assert!(time("yesterday").is_err());
        assert_eq!(time_or_ago("1764000000000"), Ok(1_764_000_000_000));
        let ago = time_or_ago("1h").unwrap();
        let expected = crate::output::now_ms() - 3_600_000;
        assert!(ago.abs_diff(expected) < 60_000, "{ago} vs {expected}");
        assert!(time_or_ago("soon").is_err());
    }

    #[test]
    fn limits_take_a_value_or_none() {
        assert_eq!(count_setting("none"), Ok(Setting::Remove));
        assert_eq!(count_setting("3"), Ok(Setting::Set(3)));
        assert!(count_setting("0").is_err());
        assert_eq!(
            rate_setting("100/1s"),
            Ok(Setting::Set((100, Duration::from_secs(1))))
        );
        assert_eq!(
            rate_setting("5/m"),
            Ok(Setting::Set((5, Duration::from_secs(60))))
        );
        assert_eq!(rate_setting("NONE"), Ok(Setting::Remove));
        assert!(rate_setting("100").is_err());
        assert!(rate_setting("0/1s").is_err());
    }
}

/// A limit's new value: a number, or `none` to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting<T> {
    /// Set to this.
    Set(T),
    /// Remove the limit.
    Remove,
}
