//! The cluster's timing parameters and the relations between them that keep fencing safe.
//!
//! All values are milliseconds on the local monotonic clock of whichever host uses them (S2).

use std::fmt;

/// Timing parameters, stored in the volume header at `init` and identical for all hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// One heartbeat write (and peer read) per interval.
    pub interval_ms: u64,
    /// An I/O slower than this counts as failed.
    pub io_timeout_ms: u64,
    /// A host's own lease lasts this long after the start of its last successful write.
    pub lease_timeout_ms: u64,
    /// Hardware watchdog timeout (whole seconds, WDIOC_SETTIMEOUT takes seconds).
    pub watchdog_timeout_ms: u64,
    /// No progress this long: the coordinator starts BMC fencing.
    pub suspect_after_ms: u64,
    /// Safety margin added to the watchdog bound (scheduling, clock-rate differences).
    pub margin_ms: u64,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            interval_ms: 5_000,
            io_timeout_ms: 10_000,
            lease_timeout_ms: 30_000,
            watchdog_timeout_ms: 10_000,
            suspect_after_ms: 15_000,
            margin_ms: 5_000,
        }
    }
}

/// A timing relation that `init` refuses to break, with the rule in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimingError {
    pub rule: &'static str,
    pub detail: String,
    /// The parameters the rule relates (field names without `_ms`: `interval`, `io_timeout`,
    /// ...), the one that broke it first: what a caller names when it says what to change.
    pub params: Vec<&'static str>,
}

impl fmt::Display for TimingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unsafe timing: rule \"{}\" is broken ({})", self.rule, self.detail)
    }
}

impl std::error::Error for TimingError {}

/// Upper bound for any single parameter: one hour keeps every derived sum far from overflow.
pub const MAX_PARAM_MS: u64 = 3_600_000;

impl Timing {
    /// When a peer that advertised an armed watchdog is provably dead (S1 (b)):
    /// its lease has expired, any write it had in flight has timed out, its watchdog has fired.
    pub fn dead_after_ms(&self) -> u64 {
        self.lease_timeout_ms + self.io_timeout_ms + self.watchdog_timeout_ms + self.margin_ms
    }

    pub fn watchdog_timeout_secs(&self) -> u32 {
        (self.watchdog_timeout_ms / 1000) as u32
    }

    /// Checks every relation the safety argument depends on; the error names the rule.
    pub fn validate(&self) -> Result<(), TimingError> {
        let s = |ms: u64| format_secs(ms);
        let over = [
            ("interval", self.interval_ms),
            ("io_timeout", self.io_timeout_ms),
            ("lease_timeout", self.lease_timeout_ms),
            ("watchdog_timeout", self.watchdog_timeout_ms),
            ("suspect_after", self.suspect_after_ms),
            ("margin", self.margin_ms),
        ]
        .into_iter()
        .find(|&(_, ms)| ms > MAX_PARAM_MS);
        let checks: [(bool, &'static str, String, Vec<&'static str>); 10] = [
            (
                self.interval_ms >= 100,
                "interval >= 0.1 s",
                format!("interval is {}", s(self.interval_ms)),
                vec!["interval"],
            ),
            (
                over.is_none(),
                "every parameter <= 3600 s",
                over.map_or(String::new(), |(name, ms)| {
                    format!("{name} is {}, more than one hour", s(ms))
                }),
                over.map_or(vec![], |(name, _)| vec![name]),
            ),
            (
                self.io_timeout_ms >= self.interval_ms,
                "io_timeout >= interval",
                format!("io_timeout {} < interval {}", s(self.io_timeout_ms), s(self.interval_ms)),
                vec!["io_timeout", "interval"],
            ),
            (
                // A healthy host renews every interval (verified within io_timeout) and pets
                // only while its lease holds for one more watchdog period; one spare interval
                // lets it survive one failed cycle.
                self.lease_timeout_ms
                    >= 2 * self.interval_ms + self.io_timeout_ms + self.watchdog_timeout_ms,
                "lease_timeout >= 2*interval + io_timeout + watchdog_timeout",
                format!(
                    "lease_timeout {} < 2*{} + {} + {}",
                    s(self.lease_timeout_ms),
                    s(self.interval_ms),
                    s(self.io_timeout_ms),
                    s(self.watchdog_timeout_ms)
                ),
                vec!["lease_timeout", "interval", "io_timeout", "watchdog_timeout"],
            ),
            (
                // One interval for the write, one for the observer's read, one for jitter
                // (a read that just misses a landing write, a torn read racing a write).
                self.suspect_after_ms >= 3 * self.interval_ms,
                "suspect_after >= 3*interval",
                format!("suspect_after {} < 3*{}", s(self.suspect_after_ms), s(self.interval_ms)),
                vec!["suspect_after", "interval"],
            ),
            (
                self.watchdog_timeout_ms >= 2_000,
                "watchdog_timeout >= 2 s",
                format!("watchdog_timeout is {}", s(self.watchdog_timeout_ms)),
                vec!["watchdog_timeout"],
            ),
            (
                self.watchdog_timeout_ms % 1000 == 0,
                "watchdog_timeout is a whole number of seconds",
                format!("watchdog_timeout is {}", s(self.watchdog_timeout_ms)),
                vec!["watchdog_timeout"],
            ),
            (
                self.watchdog_timeout_ms <= 255_000,
                "watchdog_timeout <= 255 s",
                format!("watchdog_timeout is {}", s(self.watchdog_timeout_ms)),
                vec!["watchdog_timeout"],
            ),
            (
                // The agent pets at least once a second; the watchdog must survive two missed pets.
                self.margin_ms >= 1_000,
                "margin >= 1 s",
                format!("margin is {}", s(self.margin_ms)),
                vec!["margin"],
            ),
            (
                self.suspect_after_ms < self.dead_after_ms(),
                "suspect_after < dead_after",
                format!(
                    "suspect_after {} >= dead_after {}",
                    s(self.suspect_after_ms),
                    s(self.dead_after_ms())
                ),
                vec!["suspect_after", "lease_timeout", "io_timeout", "watchdog_timeout", "margin"],
            ),
        ];
        for (ok, rule, detail, params) in checks {
            if !ok {
                return Err(TimingError { rule, detail, params });
            }
        }
        Ok(())
    }

    /// The relation outage survival needs on top of `validate` (docs/design.md, "Outage
    /// survival"). A write renews the lease once read back, half an interval after it: just
    /// before that, a healthy host's lease has `lease - 1.5*interval - latency` left, and it
    /// must stay above a permit's threshold (`grant_below_ms`: watchdog + 1.5*interval) unless a
    /// cycle was half an interval late, or no judge could ever prove that it grants no permit
    /// (simulation seed 1200221 of the one-read cycle). Only survival needs it, so headers
    /// without survival that `validate` accepted before keep working.
    pub fn validate_outage_survival(&self) -> Result<(), TimingError> {
        if 2 * self.lease_timeout_ms >= 7 * self.interval_ms + 2 * self.watchdog_timeout_ms {
            return Ok(());
        }
        Err(TimingError {
            rule: OUTAGE_SURVIVAL_RULE,
            detail: format!(
                "lease_timeout {} < 3.5*{} + {}",
                format_secs(self.lease_timeout_ms),
                format_secs(self.interval_ms),
                format_secs(self.watchdog_timeout_ms)
            ),
            params: vec!["lease_timeout", "interval", "watchdog_timeout"],
        })
    }

    /// The smallest lease_timeout (whole seconds) outage survival accepts with this interval
    /// and watchdog: what a message tells the operator to set.
    pub fn outage_survival_min_lease_ms(&self) -> u64 {
        (7 * self.interval_ms + 2 * self.watchdog_timeout_ms).div_ceil(2).div_ceil(1000) * 1000
    }
}

/// Outage survival's timing rule, as messages name it.
pub const OUTAGE_SURVIVAL_RULE: &str =
    "lease_timeout >= 3.5*interval + watchdog_timeout (outage survival)";

/// "1.5 s", "30 s": for messages.
pub fn format_secs(ms: u64) -> String {
    if ms % 1000 == 0 {
        format!("{} s", ms / 1000)
    } else {
        let frac = format!("{:03}", ms % 1000);
        format!("{}.{} s", ms / 1000, frac.trim_end_matches('0'))
    }
}

/// Parses "5", "0.5", "1.25" (seconds) into milliseconds. Millisecond precision at most.
pub fn parse_secs(text: &str) -> Result<u64, String> {
    let t = text.trim().trim_end_matches('s').trim();
    let (whole, frac) = match t.split_once('.') {
        Some((w, f)) => (w, f),
        None => (t, ""),
    };
    let bad = || format!("'{text}' is not a number of seconds (examples: 5, 0.5, 1.25)");
    if t.starts_with('-') {
        return Err(format!("'{text}': a duration cannot be negative"));
    }
    if whole.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    if !whole.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if frac.len() > 3 {
        return Err(format!("'{text}': at most millisecond precision (3 decimals)"));
    }
    let whole: u64 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad())? };
    let mut frac_ms: u64 = if frac.is_empty() { 0 } else { frac.parse().map_err(|_| bad())? };
    for _ in frac.len()..3 {
        frac_ms *= 10;
    }
    whole
        .checked_mul(1000)
        .and_then(|v| v.checked_add(frac_ms))
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_dead_after_is_55s() {
        let t = Timing::default();
        t.validate().unwrap();
        assert_eq!(t.dead_after_ms(), 55_000);
    }

    #[test]
    fn lease_rule_is_named() {
        let t = Timing { lease_timeout_ms: 29_999, ..Timing::default() };
        let e = t.validate().unwrap_err();
        assert_eq!(e.rule, "lease_timeout >= 2*interval + io_timeout + watchdog_timeout");
        let t = Timing { lease_timeout_ms: 30_000, ..Timing::default() };
        t.validate().unwrap();
    }

    /// Issue 12 (one read per cycle, half an interval after the write): with io_timeout =
    /// interval the first rule allows a lease that a healthy host's renewals, confirmed half
    /// an interval later, leave under the permit threshold before each read-back (simulation
    /// seed 1200221 of that change: no judge could prove it granted no permit, and a dead
    /// host was never declared fenced by the watchdog bound).
    #[test]
    fn a_lease_that_dips_under_the_permit_threshold_before_each_read_back_is_refused_for_survival()
    {
        let t = Timing {
            interval_ms: 5_000,
            io_timeout_ms: 5_000,
            lease_timeout_ms: 25_000,
            ..Timing::default()
        };
        // Accepted without survival (a header older agents wrote keeps working)…
        t.validate().unwrap();
        // …but not for survival.
        let e = t.validate_outage_survival().unwrap_err();
        assert_eq!(e.rule, OUTAGE_SURVIVAL_RULE);
        assert_eq!(t.outage_survival_min_lease_ms(), 28_000);
        assert_eq!(e.params, ["lease_timeout", "interval", "watchdog_timeout"]);
        // Left just before a read-back with no latency at all: any latency puts it under.
        let just_before_read_back = t.lease_timeout_ms - 3 * t.interval_ms / 2;
        assert!(just_before_read_back <= crate::core::agent::grant_below_ms(&t));
        Timing { lease_timeout_ms: 27_500, ..t }.validate_outage_survival().unwrap();
        Timing::default().validate_outage_survival().unwrap();
    }

    #[test]
    fn the_parameter_over_one_hour_is_named() {
        let t = Timing { lease_timeout_ms: 4_000_000, ..Timing::default() };
        let e = t.validate().unwrap_err();
        assert_eq!(e.rule, "every parameter <= 3600 s");
        assert_eq!(e.detail, "lease_timeout is 4000 s, more than one hour");
        assert_eq!(e.params, ["lease_timeout"]);
    }

    #[test]
    fn suspect_and_watchdog_rules() {
        let t = Timing { suspect_after_ms: 14_999, ..Timing::default() };
        assert_eq!(t.validate().unwrap_err().rule, "suspect_after >= 3*interval");
        let t = Timing { watchdog_timeout_ms: 1_000, ..Timing::default() };
        assert_eq!(t.validate().unwrap_err().rule, "watchdog_timeout >= 2 s");
        let t = Timing { watchdog_timeout_ms: 2_500, ..Timing::default() };
        assert_eq!(t.validate().unwrap_err().rule, "watchdog_timeout is a whole number of seconds");
    }

    #[test]
    fn parse_secs_accepts_decimals_and_rejects_junk() {
        assert_eq!(parse_secs("5").unwrap(), 5000);
        assert_eq!(parse_secs("0.5").unwrap(), 500);
        assert_eq!(parse_secs("1.25").unwrap(), 1250);
        assert_eq!(parse_secs("2s").unwrap(), 2000);
        assert!(parse_secs("").is_err());
        assert!(parse_secs("-1").is_err());
        assert!(parse_secs("1.2345").is_err());
        assert!(parse_secs("abc").is_err());
        assert!(parse_secs("99999999999999999999").is_err());
    }

    #[test]
    fn format_secs_is_readable() {
        assert_eq!(format_secs(5000), "5 s");
        assert_eq!(format_secs(1500), "1.5 s");
        assert_eq!(format_secs(1250), "1.25 s");
    }
}
