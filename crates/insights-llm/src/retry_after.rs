//! Reading the server's wait hint (`retry-after-ms`, `retry-after`, else the reset of an
//! exhausted `x-ratelimit-*` quota).

use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;

/// Cap on any hint we believe; a larger or nonsensical value (a year) is clamped, and the caller's
/// `max_inline_wait` then turns it into a reschedule.
const MAX_HINT: Duration = Duration::from_secs(24 * 3600);

/// The wait the server asked for: `retry-after-ms` (milliseconds, may be fractional) first, else
/// `retry-after` as seconds (may be fractional) or an HTTP date (a date in the past means
/// "now"), else, when `x-ratelimit-remaining-requests` or `-tokens` is 0, the matching
/// `x-ratelimit-reset-*` (`20ms`, `1.5s`, `6m0s`).
pub fn parse_retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header_str(headers, "retry-after-ms").and_then(parse_non_negative_f64) {
        return Some(clamp(ms / 1000.0));
    }
    let Some(value) = header_str(headers, "retry-after") else {
        return exhausted_quota_reset(headers);
    };
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

/// When the quota of requests or tokens is used up, the time until it resets.
fn exhausted_quota_reset(headers: &HeaderMap) -> Option<Duration> {
    ["requests", "tokens"].into_iter().find_map(|quota| {
        let remaining = header_str(headers, &format!("x-ratelimit-remaining-{quota}"))?;
        if remaining != "0" {
            return None;
        }
        header_str(headers, &format!("x-ratelimit-reset-{quota}"))
            .and_then(parse_go_duration)
            .map(|d| d.min(MAX_HINT))
    })
}

/// A duration as providers write it in `x-ratelimit-reset-*`: number-unit pairs with units
/// `h`, `m`, `s`, `ms` (`20ms`, `1.5s`, `6m0s`, `1h2m`).
fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut secs = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            _ => return None,
        };
        rest = &rest[unit_len..];
        secs += value * scale;
    }
    (secs.is_finite() && secs >= 0.0).then(|| clamp(secs))
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

    #[test]
    fn an_exhausted_quota_waits_for_its_reset() {
        let now = SystemTime::UNIX_EPOCH;
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "6m0.5s"),
        ]);
        assert_eq!(
            parse_retry_after(&h, now),
            Some(Duration::from_millis(360_500))
        );
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "20ms"),
        ]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_millis(20)));
        // Quota left: no hint from the reset.
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "3"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(parse_retry_after(&h, now), None);
        // retry-after wins over the reset.
        let h = headers(&[
            ("retry-after", "2"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "1s"),
        ]);
        assert_eq!(parse_retry_after(&h, now), Some(Duration::from_secs(2)));
        for bad in ["", "5", "1x", "ms", "1.2.3s"] {
            assert_eq!(parse_go_duration(bad), None, "{bad:?}");
        }
        assert_eq!(parse_go_duration("1h2m"), Some(Duration::from_secs(3720)));
    }
}
