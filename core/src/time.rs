//! Timestamps and durations in the forms Feast uses: RFC 3339 text, protobuf `Timestamp`, and
//! the short durations of definitions (`2h`, `1d`, `0`).
//!
//! The calendar arithmetic is the proleptic Gregorian one (Howard Hinnant's `days_from_civil`),
//! which is all RFC 3339 in UTC needs; no time-zone database is involved.

use std::fmt::Write as _;
use std::time::Duration;

pub use prost_types::Timestamp;

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a count of days since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Appends `seconds.nanos` since the epoch as RFC 3339 in UTC with a `Z` suffix, the way Feast's
/// HTTP server prints event timestamps: fractional digits only when non-zero, in groups of 3
/// (`2026-01-01T00:00:00Z`, `...00.250Z`, `...00.000001Z`).
pub fn write_rfc3339(out: &mut String, seconds: i64, nanos: u32) {
    let days = seconds.div_euclid(86_400);
    let secs_of_day = seconds.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        // Outside RFC 3339's four-digit years: rare enough for the formatting machinery.
        let (h, m, s) = (secs_of_day / 3600, secs_of_day / 60 % 60, secs_of_day % 60);
        let _ = write!(out, "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    } else {
        let mut b = *b"0000-00-00T00:00:00";
        put_digits(&mut b[0..4], year as u64);
        put_digits(&mut b[5..7], u64::from(month));
        put_digits(&mut b[8..10], u64::from(day));
        put_digits(&mut b[11..13], (secs_of_day / 3600) as u64);
        put_digits(&mut b[14..16], (secs_of_day / 60 % 60) as u64);
        put_digits(&mut b[17..19], (secs_of_day % 60) as u64);
        // Only ASCII digits and separators were written.
        out.push_str(std::str::from_utf8(&b).unwrap_or_default());
    }
    let nanos = nanos.min(999_999_999);
    if nanos != 0 {
        let (value, width) = if nanos.is_multiple_of(1_000_000) {
            (nanos / 1_000_000, 3)
        } else if nanos.is_multiple_of(1_000) {
            (nanos / 1_000, 6)
        } else {
            (nanos, 9)
        };
        let mut f = [b'0'; 10];
        f[0] = b'.';
        put_digits(&mut f[1..=width], u64::from(value));
        out.push_str(std::str::from_utf8(&f[..=width]).unwrap_or_default());
    }
    out.push('Z');
}

/// Writes `n` as decimal digits right-aligned in `buf`, zero-padded (digits beyond are cut).
fn put_digits(buf: &mut [u8], mut n: u64) {
    for slot in buf.iter_mut().rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// RFC 3339 text for a protobuf timestamp (see [`write_rfc3339`]).
pub fn format_rfc3339(ts: &Timestamp) -> String {
    let mut s = String::with_capacity(30);
    write_rfc3339(&mut s, ts.seconds, ts.nanos.clamp(0, 999_999_999) as u32);
    s
}

/// Parses an ISO 8601 / RFC 3339 date-time: `2026-01-01`, `2026-01-01T00:00:00`,
/// `2026-01-01 00:00:00.5`, with an optional `Z` or `±HH:MM` offset. No offset means UTC, as in
/// Feast. Returns `None` for anything else.
pub fn parse_datetime(text: &str) -> Option<Timestamp> {
    let b = text.trim().as_bytes();
    let num = |s: &[u8]| -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(s).ok()?.parse().ok()
    };
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = num(&b[0..4])?;
    let month = num(&b[5..7])? as u32;
    let day = num(&b[8..10])? as u32;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let mut seconds = days_from_civil(year, month, day) * 86_400;
    let mut nanos = 0u32;
    let mut rest = &b[10..];
    if let Some((&sep, tail)) = rest.split_first() {
        if sep != b'T' && sep != b't' && sep != b' ' {
            return None;
        }
        if tail.len() < 8 || tail[2] != b':' || tail[5] != b':' {
            return None;
        }
        let (h, m, s) = (num(&tail[0..2])?, num(&tail[3..5])?, num(&tail[6..8])?);
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        seconds += h * 3600 + m * 60 + s;
        rest = &tail[8..];
        if let Some(frac) = rest.strip_prefix(b".") {
            let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
            if digits == 0 {
                return None;
            }
            for (i, d) in frac[..digits].iter().take(9).enumerate() {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - i as u32);
            }
            rest = &frac[digits..];
        }
        match rest {
            [] | [b'Z'] | [b'z'] => {}
            [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
                let offset = num(&[*oh1, *oh2])? * 3600 + num(&[*om1, *om2])? * 60;
                seconds += if *sign == b'+' { -offset } else { offset };
            }
            _ => return None,
        }
    }
    Some(Timestamp {
        seconds,
        nanos: nanos as i32,
    })
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parses a duration, the one grammar of every duration in quiver (definitions' `ttl`, every
/// flag): `0`, `250ms`, `30s`, `15m`, `2h`, `1d`, `2w`, or a sum such as `1h30m` or `1s500ms`.
/// A bare integer is seconds. Returns a message saying what is accepted on error.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let expected = || {
        format!(
            "invalid duration {text:?}: expected a number of seconds or a sum like 1d, 2h, 1h30m, 45s, 2w, 500ms, or 0 for no expiry"
        )
    };
    if t.is_empty() {
        return Err(expected());
    }
    if let Ok(secs) = t.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total_ms: u64 = 0;
    let mut rest = t;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(digits);
        let unit_len = after
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let ms_per_unit: u64 = match unit {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            _ => return Err(expected()),
        };
        let n: u64 = number.parse().map_err(|_| expected())?;
        total_ms = n
            .checked_mul(ms_per_unit)
            .and_then(|v| total_ms.checked_add(v))
            .ok_or_else(expected)?;
        rest = after;
    }
    Ok(Duration::from_millis(total_ms))
}

/// The shortest definition text for a duration (`0`, `1d`, `1h30m`), the inverse of
/// [`parse_duration`] for whole seconds.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0".to_owned();
    }
    let mut out = String::new();
    for (unit, suffix) in [(86_400, 'd'), (3600, 'h'), (60, 'm'), (1, 's')] {
        if secs >= unit {
            let _ = write!(out, "{}{suffix}", secs / unit);
            secs %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-800_000, -1, 0, 1, 59, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn rfc3339_fraction_groups() {
        let f = |s, n| {
            format_rfc3339(&Timestamp {
                seconds: s,
                nanos: n,
            })
        };
        assert_eq!(f(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(f(1_795_651_200, 0), "2026-11-26T00:00:00Z");
        assert_eq!(f(1_795_651_200, 250_000_000), "2026-11-26T00:00:00.250Z");
        assert_eq!(f(1_795_651_200, 1_000), "2026-11-26T00:00:00.000001Z");
        assert_eq!(f(1_795_651_200, 7), "2026-11-26T00:00:00.000000007Z");
        assert_eq!(f(-1, 0), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn parse_datetimes() {
        let p = |s| parse_datetime(s).map(|t| (t.seconds, t.nanos));
        assert_eq!(p("2026-11-26"), Some((1_795_651_200, 0)));
        assert_eq!(p("2026-11-26T00:00:00"), Some((1_795_651_200, 0)));
        assert_eq!(p("2026-11-26 01:00:00+01:00"), Some((1_795_651_200, 0)));
        assert_eq!(
            p("2026-11-26T00:00:00.5Z"),
            Some((1_795_651_200, 500_000_000))
        );
        assert_eq!(p("2026-11-25T19:00:00-05:00"), Some((1_795_651_200, 0)));
        for bad in [
            "",
            "2026",
            "2026-13-01",
            "2026-02-30",
            "2026-01-01T25:00:00",
            "2026-01-01T00:00:00+1",
            "2026-01-01X",
        ] {
            assert_eq!(p(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations() {
        let secs = |s| parse_duration(s).map(|d| d.as_secs());
        assert_eq!(secs("0"), Ok(0));
        assert_eq!(secs("3600"), Ok(3600));
        assert_eq!(secs("2h"), Ok(7200));
        assert_eq!(secs("1d"), Ok(86_400));
        assert_eq!(secs("1h30m"), Ok(5400));
        assert_eq!(secs("2w"), Ok(1_209_600));
        for bad in ["", "h", "1x", "1.5h", "-1h", "2h3"] {
            assert!(secs(bad).is_err(), "{bad}");
        }
        // Milliseconds, alone or in a sum (what `quiver serve`'s own wrapper added).
        let ms = |s| parse_duration(s).map(|d| d.as_millis());
        assert_eq!(ms("50ms"), Ok(50));
        assert_eq!(ms("0ms"), Ok(0));
        assert_eq!(ms("1s500ms"), Ok(1500));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("5m"), Ok(300_000));
        for bad in [
            "ms",
            "5 parsecs",
            "1mss",
            "1 ms",
            "1h 30m",
            "5M",
            "1sms",
            "99999999999999999999ms",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("500ms"), "{bad}: {err}");
        }
        for s in [0, 59, 3600, 5400, 86_400, 90_061] {
            assert_eq!(
                parse_duration(&format_duration(Duration::from_secs(s)))
                    .unwrap()
                    .as_secs(),
                s
            );
        }
    }
}
