//! Simulated heartbeat volumes: real 4096-byte blocks with a short history per block (a read of
//! many blocks is not atomic: each block is taken at its own instant within the read), and fault
//! windows that turn an I/O into a stall, an EIO, a slow I/O or a torn write.

use super::{Rng, MS};
use hbfence::core::format::{Block, BLOCK_SIZE};
use std::collections::VecDeque;
use std::rc::Rc;

pub struct Volume {
    /// Index = block number (0 = header, 1..=max_hosts heartbeats, then mailboxes).
    blocks: Vec<VecDeque<(u64, Rc<Block>)>>,
    /// Versions older than this (µs) are dropped, except the newest of them.
    retain: u64,
}

impl Volume {
    pub fn new(header: Block, max_hosts: u32, retain: u64) -> Volume {
        let zero: Rc<Block> = Rc::new([0u8; BLOCK_SIZE]);
        let n = 1 + 2 * max_hosts as usize;
        let blocks = (0..n)
            .map(|i| {
                let mut d = VecDeque::new();
                d.push_back((0, if i == 0 { Rc::new(header) } else { Rc::clone(&zero) }));
                d
            })
            .collect();
        Volume { blocks, retain }
    }

    pub fn current(&self, b: usize) -> &Block {
        &self.blocks[b].back().expect("every block has a version").1
    }

    pub fn write(&mut self, t: u64, b: usize, data: Rc<Block>) {
        let h = &mut self.blocks[b];
        h.push_back((t, data));
        let horizon = t.saturating_sub(self.retain);
        while h.len() > 1 && h[1].0 <= horizon {
            h.pop_front();
        }
    }

    /// The content of block `b` at true time `t`.
    pub fn at(&self, b: usize, t: u64) -> &Block {
        let h = &self.blocks[b];
        for (tt, d) in h.iter().rev() {
            if *tt <= t {
                return d;
            }
        }
        &h.front().expect("every block has a version").1
    }

    /// What a read of blocks `1..=2*max_hosts` returns when the device reads each block at its
    /// own instant in `[lo, hi]`.
    pub fn read(&self, rng: &mut Rng, lo: u64, hi: u64, out: &mut Vec<u8>) {
        out.clear();
        for b in 1..self.blocks.len() {
            let t = rng.range(lo, hi);
            out.extend_from_slice(self.at(b, t));
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WinKind {
    /// I/O hangs until the window ends (a write may land during it, late, or never).
    Stall,
    /// I/O fails at once with EIO (a write may still have reached the disk, whole or torn).
    Eio,
    /// Extra latency (µs), below or above io_timeout.
    Slow(u64),
    /// Writes land torn (first 512 bytes new, rest old) half of the time.
    Torn,
}

#[derive(Clone, Copy, Debug)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub kind: WinKind,
}

/// How one write or read of one I/O cycle goes.
#[derive(Clone, Copy, Debug)]
pub struct OpPlan {
    /// True time the system call returns.
    pub end: u64,
    pub ok: bool,
    /// For a write: when it reaches the disk, and whether torn.
    pub land: Option<(u64, bool)>,
    /// For a read: no block can be read before this (the end of a stall).
    pub data_from: u64,
}

/// Plans an operation starting at `t0` with base latency `base` against the fault windows that
/// apply (the link's and the volume's). A write never lands later than `land_cap` (the brief's
/// assumption: io_timeout bounds in-flight I/O).
pub fn plan_op(
    rng: &mut Rng,
    windows: &[&[Window]],
    t0: u64,
    base: u64,
    write: bool,
    land_cap: u64,
) -> OpPlan {
    let mut all: Vec<Window> = windows
        .iter()
        .flat_map(|w| w.iter())
        .filter(|w| w.end > t0 && w.start < t0 + 30 * super::SEC)
        .copied()
        .collect();
    all.sort_by_key(|w| (w.start, w.end));
    let mut end = t0 + base;
    let mut land = if write { Some((t0 + base * rng.range(30, 100) / 100, false)) } else { None };
    let mut ok = true;
    let mut data_from = t0;
    let mut torn_per_mille = 0;
    for w in all {
        if w.start >= end || w.end <= t0 {
            continue;
        }
        let s = w.start.max(t0);
        match w.kind {
            WinKind::Slow(extra) => {
                end += extra;
                if let Some((lt, torn)) = land {
                    if lt >= s {
                        land = Some((lt + extra * rng.range(0, 100) / 100, torn));
                    }
                }
            }
            WinKind::Torn => torn_per_mille = 500,
            WinKind::Stall => {
                end = end.max(w.end + rng.range(MS / 10, base.max(MS / 10)));
                data_from = data_from.max(w.end);
                ok = rng.chance(700);
                if let Some((lt, _)) = land {
                    if lt >= s {
                        // Reached the disk during the stall, just after it, or never; a write
                        // that returns success did reach the disk (no silent loss), and no
                        // write lands later than io_timeout after its start.
                        let last = land_cap.min(end);
                        let r = rng.below(100);
                        land = if last <= s {
                            None
                        } else if r < 50 {
                            Some((rng.range(s, last.min(w.end.max(s + 1))), false))
                        } else if r < 80 && w.end < last {
                            Some((rng.range(w.end, last), false))
                        } else if ok {
                            Some((rng.range(s, last), false))
                        } else {
                            None
                        };
                        if land.is_none() && ok {
                            // Success after a stall longer than io_timeout: impossible without
                            // the data on disk within io_timeout, so it is an error.
                            ok = false;
                        }
                    }
                }
            }
            WinKind::Eio => {
                end = s + rng.range(MS / 10, 5 * MS);
                ok = false;
                if let Some((lt, _)) = land {
                    if lt >= s {
                        let r = rng.below(100);
                        land = if r < 20 {
                            Some((s, true))
                        } else if r < 30 {
                            Some((s, false))
                        } else {
                            None
                        };
                    }
                }
                break;
            }
        }
    }
    if let Some((lt, torn)) = land {
        let lt = lt.min(land_cap).min(end);
        land = Some((lt, torn || rng.below(1000) < torn_per_mille));
    }
    OpPlan { end, ok, land, data_from: data_from.min(end) }
}
