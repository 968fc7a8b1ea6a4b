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

/// How a table column's cells are aligned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A text table: each column as wide as its widest cell (or header), columns two spaces apart,
/// so every row's columns start at the same offsets whatever the cells hold. The last column
/// is not padded.
pub fn table(header: &[(&str, Align)], rows: &[Vec<String>]) -> Vec<String> {
    let mut widths: Vec<usize> = header.iter().map(|(h, _)| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let last = header.len().saturating_sub(1);
        let mut out = String::new();
        for (i, ((_, align), cell)) in header.iter().zip(cells).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let w = widths[i];
            match align {
                Align::Left if i == last => out.push_str(cell),
                Align::Left => out.push_str(&format!("{cell:<w$}")),
                Align::Right => out.push_str(&format!("{cell:>w$}")),
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|(h, _)| *h).collect())];
    for row in rows {
        out.push(line((0..header.len()).map(|i| row.get(i).map_or("", String::as_str)).collect()));
    }
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn wall_time_formats_known_instants() {
        assert_eq!(wall_time(1), "1970-01-01T00:00:00.001Z");
        assert_eq!(wall_time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(wall_time(1_795_962_490_123), "2026-11-29T14:28:10.123Z");
    }

    /// Every cell starts (left-aligned) or ends (right-aligned) where its header does.
    pub fn assert_aligned(lines: &[String], header: &[(&str, Align)], rows: &[Vec<String>]) {
        let head = &lines[0];
        let mut from = 0;
        for (col, (label, align)) in header.iter().enumerate() {
            let at = from + head[from..].find(label).expect("header label");
            from = at + label.len();
            for (row, line) in rows.iter().zip(&lines[1..]) {
                let cell = &row[col];
                if cell.is_empty() {
                    continue; // an empty last cell is trimmed off
                }
                let (start, end) = match align {
                    Align::Left => (at, at + cell.len()),
                    Align::Right => (from - cell.len(), from),
                };
                assert_eq!(
                    line.get(start..end),
                    Some(cell.as_str()),
                    "column {label}:\n{head}\n{line}"
                );
                assert!(
                    start == 0 || line.as_bytes()[start - 1] == b' ',
                    "column {label}:\n{line}"
                );
            }
        }
    }

    #[test]
    fn table_columns_align_whatever_the_cells_hold() {
        let header = [
            ("ID", Align::Right),
            ("NAME", Align::Left),
            ("SEQ", Align::Right),
            ("CAPS", Align::Left),
        ];
        let rows = vec![
            vec!["1".into(), "a".into(), "-".into(), "armed".into()],
            vec![
                "250".into(),
                "a-rather-long-host-name.example.org".into(),
                "1234567".into(),
                "".into(),
            ],
        ];
        let lines = table(&header, &rows);
        assert_eq!(lines.len(), 3);
        assert_aligned(&lines, &header, &rows);
        assert_eq!(lines[1], format!("  1  a{}        -  armed", " ".repeat(34)));
    }

    #[test]
    fn ages() {
        assert_eq!(age(3_450), "3.4 s");
        assert_eq!(age(-1_000), "-1.0 s");
        assert_eq!(age(600_000), "10 min");
    }
}
