//! Formatting shared by every noun: times and ages.

pub fn now_unix_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// `2026-11-25T17:32:29.123Z` from ns since the epoch (UTC).
pub fn timestamp(unix_nanos: i64) -> String {
    match jiff::Timestamp::from_nanosecond(unix_nanos.into()) {
        Ok(t) => format!("{t:.3}"),
        // Every i64 is in jiff's range; say something rather than panic.
        Err(_) => format!("{unix_nanos}ns"),
    }
}

/// Seconds from `then` to `now`, never negative: `2.5`.
pub fn seconds_ago(now: i64, then: i64) -> String {
    format!("{:.1}", now.saturating_sub(then).max(0) as f64 / 1e9)
}

/// The first 16 characters of a key or hash, enough to tell keys apart.
pub fn short(key: &str) -> &str {
    key.get(..16).unwrap_or(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso8601() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            timestamp(1_795_000_000_123_000_000),
            "2026-11-18T11:06:40.123Z"
        );
        assert_eq!(
            timestamp(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert!(timestamp(i64::MIN).starts_with("1677-09-21T"));
    }

    #[test]
    fn ages_never_go_negative() {
        assert_eq!(seconds_ago(3_500_000_000, 1_000_000_000), "2.5");
        assert_eq!(seconds_ago(0, 1_000_000_000), "0.0");
        // A heartbeat time from the wire cannot overflow the subtraction.
        assert_eq!(
            seconds_ago(0, i64::MIN),
            format!("{:.1}", i64::MAX as f64 / 1e9)
        );
        assert_eq!(seconds_ago(i64::MIN, i64::MAX), "0.0");
    }
}
