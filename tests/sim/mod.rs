//! Deterministic discrete-event simulation of an hbfence cluster (see `tests/simulation.rs`).
//!
//! `world` runs the real `hbfence::core::agent::Agent` of every simulated host against simulated
//! clocks, volumes, watchdogs and BMCs and checks the safety invariants at every step; `storage`
//! holds the simulated volumes and their fault windows. Everything here is driven by one seeded
//! PRNG and one priority queue: no threads, no wall clock, no real I/O.

pub mod net;
pub mod storage;
pub mod world;

/// True simulated time is kept in microseconds.
pub const MS: u64 = 1_000;
pub const SEC: u64 = 1_000_000;

/// `12.345s`: true time for traces.
pub fn fmt_t(t: u64) -> String {
    format!("{}.{:03}s", t / SEC, (t / MS) % 1000)
}

/// splitmix64: small, fast, good enough for fault schedules, and fully deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 if n is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.below(hi - lo + 1)
        }
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// Uniform in `-mag..=mag`.
    pub fn signed(&mut self, mag: i64) -> i64 {
        self.range(0, 2 * mag as u64) as i64 - mag
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }

    /// Index chosen with the given weights.
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

/// A host's monotonic clock during one boot: starts at `origin_local_us` when true time is
/// `origin_true` and runs `ppm` parts per million fast (or slow, if negative).
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub origin_true: u64,
    pub origin_local_us: u64,
    pub ppm: i64,
}

impl Clock {
    pub fn local_us(&self, t: u64) -> u64 {
        let d = i128::from(t.saturating_sub(self.origin_true));
        (i128::from(self.origin_local_us) + d + d * i128::from(self.ppm) / 1_000_000) as u64
    }

    pub fn local_ms(&self, t: u64) -> u64 {
        self.local_us(t) / 1000
    }

    /// The earliest true time at which this clock shows at least `ms` milliseconds.
    pub fn true_at(&self, ms: u64) -> u64 {
        let target = i128::from(ms) * 1000 - i128::from(self.origin_local_us);
        if target <= 0 {
            return self.origin_true;
        }
        let mut d = (target * 1_000_000 / (1_000_000 + i128::from(self.ppm))) as u64;
        while self.local_us(self.origin_true + d) < ms * 1000 {
            d += 1;
        }
        while d > 0 && self.local_us(self.origin_true + d - 1) >= ms * 1000 {
            d -= 1;
        }
        self.origin_true + d
    }
}

/// FNV-1a over formatted text: a cheap digest of the decision stream (S2 comparison).
pub struct Fnv(pub u64);

impl Fnv {
    pub fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Default for Fnv {
    fn default() -> Self {
        Fnv::new()
    }
}

impl std::fmt::Write for Fnv {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for b in s.bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_inverse_is_exact() {
        let mut rng = Rng::new(7);
        for _ in 0..2000 {
            let c = Clock {
                origin_true: rng.range(0, 100 * SEC),
                origin_local_us: rng.range(0, 1_000_000 * SEC),
                ppm: rng.signed(1000),
            };
            let ms = c.local_ms(c.origin_true) + rng.range(0, 200_000);
            let t = c.true_at(ms);
            assert!(c.local_ms(t) >= ms);
            assert!(t == c.origin_true || c.local_ms(t - 1) < ms);
        }
    }
}
