//! Small text helpers shared by the commands' human-readable output.

/// RFC 3339 UTC time with milliseconds, from Unix milliseconds ("-" for 0: never written).
pub fn wall_time(ms: u64) -> String {
    if ms == 0 {
        return "-".into();
    }
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        ms % 1000
    )
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian calendar).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// "3 s", "4 min", "2 h", "5 d": an approximate age for people.
pub fn age(ms: i64) -> String {
    let (sign, ms) = if ms < 0 { ("-", -ms) } else { ("", ms) };
    let s = ms / 1000;
    let text = if s < 120 {
        format!("{}.{} s", s, (ms % 1000) / 100)
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else if s < 172_800 {
        format!("{} h", s / 3600)
    } else {
        format!("{} d", s / 86_400)
    };
    format!("{sign}{text}")
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_time_formats_known_instants() {
        assert_eq!(wall_time(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(wall_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(wall_time(1_795_962_490_123), "2026-11-29T14:28:10.123Z");
    }

    #[test]
    fn ages() {
        assert_eq!(age(3_450), "3.4 s");
        assert_eq!(age(-1_000), "-1.0 s");
        assert_eq!(age(600_000), "10 min");
    }
}
