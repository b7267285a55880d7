//! The instants that `/v1/usage` and `surge usage report` accept, parsed in one place so
//! that the API and the CLI agree on them. All times are UTC: a ledger's records carry
//! milliseconds since the epoch and no time zone, so a date means its UTC midnight.

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

/// What an instant may be written as, for error messages.
pub const INSTANT_FORMS: &str =
    "unix seconds, a YYYY-MM-DD date (UTC midnight) or an RFC 3339 date-time";

/// What a relative time may be written as, for error messages.
pub const RELATIVE_FORMS: &str = "a duration back from now (90m, 24h, 7d)";

/// Parses `s` as unix seconds, `YYYY-MM-DD` (UTC midnight) or an RFC 3339 date-time
/// (`2026-12-05T08:00:00Z`, any offset), into milliseconds since the epoch.
pub fn parse_instant(s: &str) -> Result<i64, String> {
    let s = s.trim();
    let bad = || format!("'{s}' is not a time: expected {INSTANT_FORMS}");
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        // Seconds beyond year 9999 are a typo (milliseconds), not a time.
        return s
            .parse::<i64>()
            .ok()
            .filter(|secs| *secs <= 253_402_300_799)
            .map(|secs| secs * 1000)
            .ok_or_else(bad);
    }
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let midnight = day.and_hms_opt(0, 0, 0).ok_or_else(bad)?;
        return Ok(midnight.and_utc().timestamp_millis());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|_| bad())
}

/// Parses a relative duration such as `90m`, `24h`, `7d` (also `s` and `w`) into
/// milliseconds; `None` when `s` is not one.
pub fn parse_duration(s: &str) -> Option<i64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let ms_per_unit: i64 = match unit {
        's' => 1000,
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        'w' => 7 * 86_400_000,
        _ => return None,
    };
    let n = &s[..s.len() - 1];
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse::<i64>().ok()?.checked_mul(ms_per_unit)
}

/// For the CLI: an instant (as [`parse_instant`]) or a duration back from `now_ms`.
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    if let Some(ago) = parse_duration(s) {
        return Ok(now_ms.saturating_sub(ago));
    }
    parse_instant(s).map_err(|_| {
        format!(
            "'{}' is not a time: expected {INSTANT_FORMS}, or {RELATIVE_FORMS}",
            s.trim()
        )
    })
}

/// `ms` as an RFC 3339 date-time in UTC (seconds precision), for people.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms"),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;
    /// 2026-12-05T00:00:00Z.
    const DEC5: i64 = 1_796_428_800_000;

    #[test]
    fn instants_in_every_form() {
        assert_eq!(parse_instant("1796428800"), Ok(DEC5));
        assert_eq!(parse_instant("2026-12-05"), Ok(DEC5));
        assert_eq!(parse_instant("2026-12-05T00:00:00Z"), Ok(DEC5));
        assert_eq!(
            parse_instant("2026-12-05T08:00:00Z"),
            Ok(DEC5 + 8 * 3_600_000)
        );
        assert_eq!(parse_instant("2026-12-05T08:00:00+08:00"), Ok(DEC5));
        assert_eq!(parse_instant(" 2026-12-05T00:00:00.250Z "), Ok(DEC5 + 250));
        assert_eq!(parse_instant("0"), Ok(0));
    }

    #[test]
    fn nonsense_is_not_an_instant() {
        for bad in [
            "",
            "yesterday",
            "2026-13-01",
            "2026-02-30",
            "2026-12-05T08:00:00",
            "-5",
            "1.5",
            "99999999999999999999",
            "1796428800000",
            "7d",
        ] {
            let e = parse_instant(bad).unwrap_err();
            assert!(e.contains("YYYY-MM-DD"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_count_back_from_now() {
        let now = DEC5 + DAY_MS;
        assert_eq!(parse_time("90m", now), Ok(now - 90 * 60_000));
        assert_eq!(parse_time("24h", now), Ok(DEC5));
        assert_eq!(parse_time("7d", now), Ok(now - 7 * DAY_MS));
        assert_eq!(parse_time("1w", now), Ok(now - 7 * DAY_MS));
        assert_eq!(parse_time("30s", now), Ok(now - 30_000));
        assert_eq!(parse_time("2026-12-05", now), Ok(DEC5));
        for bad in ["d", "7", "-7d", "7x", "7 d", "1.5h", "h7"] {
            if bad == "7" {
                // Bare digits are unix seconds, not a duration.
                assert_eq!(parse_time(bad, now), Ok(7000));
                continue;
            }
            let e = parse_time(bad, now).unwrap_err();
            assert!(e.contains("90m, 24h, 7d"), "{bad}: {e}");
        }
        assert_eq!(parse_duration("99999999999999999d"), None);
    }

    #[test]
    fn instants_render_as_rfc3339() {
        assert_eq!(rfc3339(DEC5), "2026-12-05T00:00:00Z");
        assert_eq!(parse_instant(&rfc3339(DEC5 + 1000)), Ok(DEC5 + 1000));
    }
}
