//! UTC timestamps in milliseconds since the Unix epoch, and the two text
//! forms the project uses: compact in replica names
//! (`20261125T162230.123Z`) and RFC 3339 in listings and flags.

use std::time::{SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    h: u64,
    mi: u64,
    s: u64,
    ms: u64,
}

fn parts(ms: u64) -> Parts {
    let secs = ms / 1000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    Parts {
        y,
        mo,
        d,
        h: rem / 3600,
        mi: rem / 60 % 60,
        s: rem % 60,
        ms: ms % 1000,
    }
}

/// `20261125T162230.123Z`: sorts in time order, safe in any object name.
pub fn compact(ms: u64) -> String {
    let p = parts(ms);
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

/// `2026-11-25T16:22:30.123Z`.
pub fn rfc3339(ms: u64) -> String {
    let p = parts(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        p.y, p.mo, p.d, p.h, p.mi, p.s, p.ms
    )
}

fn num(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn from_fields(y: &str, mo: &str, d: &str, h: &str, mi: &str, s: &str, frac: &str) -> Option<u64> {
    let (y, mo, d) = (num(y)? as i64, num(mo)? as u32, num(d)? as u32);
    let (h, mi, s) = (num(h)?, num(mi)?, num(s)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 || y < 1970
    {
        return None;
    }
    let ms = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().chain("000".chars()).take(3).collect();
        num(&digits)?
    };
    let days = days_from_civil(y, mo, d);
    Some(days as u64 * 86_400_000 + (h * 3600 + mi * 60 + s) * 1000 + ms)
}

/// Parse the compact form written by `compact`.
pub fn parse_compact(t: &str) -> Option<u64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    if date.len() != 8 || hms.len() != 6 {
        return None;
    }
    from_fields(
        &date[..4],
        &date[4..6],
        &date[6..],
        &hms[..2],
        &hms[2..4],
        &hms[4..],
        frac,
    )
}

/// Parse RFC 3339 (`2026-11-25T16:22:30Z`, fractional seconds and a
/// `+hh:mm`/`-hh:mm` offset allowed).
pub fn parse_rfc3339(t: &str) -> Option<u64> {
    let (date, rest) = t.split_once(['T', 't', ' '])?;
    let mut ds = date.split('-');
    let (y, mo, d) = (ds.next()?, ds.next()?, ds.next()?);
    if ds.next().is_some() {
        return None;
    }
    let (clock, offset_min): (&str, i64) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else {
        let i = rest.rfind(['+', '-'])?;
        let (c, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (c, sign * (num(oh)? as i64 * 60 + num(om)? as i64))
    };
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut cs = hms.split(':');
    let (h, mi, s) = (cs.next()?, cs.next()?, cs.next()?);
    let utc = from_fields(y, mo, d, h, mi, s, frac)? as i64 - offset_min * 60_000;
    u64::try_from(utc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let t = 1_795_623_750_123; // 2026-11-25T16:22:30.123Z
        assert_eq!(compact(t), "20261125T162230.123Z");
        assert_eq!(rfc3339(t), "2026-11-25T16:22:30.123Z");
        assert_eq!(parse_compact(&compact(t)), Some(t));
        assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        assert_eq!(parse_rfc3339("2026-11-25T17:22:30.123+01:00"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-25T16:22:30Z"), Some(t - 123));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(compact(0), "19700101T000000.000Z");
    }
}
