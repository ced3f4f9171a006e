//! Reading the server's wait hint (`retry-after-ms`, `retry-after`).

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// Cap on any hint we believe; a larger or nonsensical value (a year) is clamped, and the caller's
/// `max_inline_wait` then turns it into a reschedule.
const MAX_HINT: Duration = Duration::from_secs(24 * 3600);

/// The wait the server asked for: `retry-after-ms` (milliseconds, may be fractional) first, else
/// `retry-after` as seconds (may be fractional) or an HTTP date. A date in the past means "now".
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(parse_non_negative_f64) {
        return Some(clamp(ms / 1000.0));
    }
    let value = header_str(headers, "retry-after")?;
    if let Some(secs) = parse_non_negative_f64(value) {
        return Some(clamp(secs));
    }
    let date = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let at = SystemTime::from(date.with_timezone(&chrono::Utc));
    Some(
        at.duration_since(now)
            .unwrap_or(Duration::ZERO)
            .min(MAX_HINT),
    )
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

fn parse_non_negative_f64(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

fn clamp(secs: f64) -> Duration {
    Duration::from_secs_f64(secs.min(MAX_HINT.as_secs_f64()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn prefers_ms_then_seconds_then_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // 1994-11-06 08:49:37Z
        let h = headers(&[("retry-after-ms", "250.5"), ("retry-after", "9")]);
        assert_eq!(
            parse_retry_after(&h, now),
            Some(Duration::from_micros(250_500))
        );
        let h = headers(&[("retry-after", "1.5")]);
        assert_eq!(
            parse_retry_after(&h, now),
            Some(Duration::from_millis(1500))
        );
        let h = headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:40 GMT")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(3)));
        let h = headers(&[("retry-after", "Sun, 06 Nov 1994 08:00:00 GMT")]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::ZERO));
        let h = headers(&[("retry-after", "soon"), ("retry-after-ms", "-5")]);
        assert_eq!(parse_retry_after(&h, now), None);
        assert_eq!(parse_retry_after(&HeaderMap::new(), now), None);
        let h = headers(&[("retry-after", "1e300")]);
        assert_eq!(parse_retry_after(&h, now), Some(MAX_HINT));
    }
}
