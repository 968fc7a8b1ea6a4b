//! The peer channel between simulated agents (issue 13): datagrams with delay, loss,
//! duplication and reordering, and partitions of any subset of hosts, in windows of true
//! time. Authentication is the real code's (tests/peer_channel.rs); what is modelled here is
//! what an attacker-free network does to authentic datagrams, and the asker's replay book
//! (an answer counts once, only for a challenge it sent within 3 periods).

use super::{Rng, MS};
use hbfence::core::agent::{Claim, Membership};
use hbfence::core::format::BootId;

#[derive(Clone, Debug)]
pub enum NetFault {
    /// Hosts with `true` and hosts with `false` cannot reach each other.
    Partition(Vec<bool>),
    /// Each datagram is lost with this probability (per mille; 1000: blackout).
    Loss(u64),
    /// Each datagram takes this much longer (µs, uniform in lo..=hi): reordering, answers
    /// near or past the age the asker accepts.
    Delay(u64, u64),
    /// Each datagram arrives twice with this probability (per mille).
    Dup(u64),
    /// Like `Delay`, only for datagrams from or to the hosts marked `true` (one host's
    /// congested link: its round trips are long, everyone else's are not).
    DelayFor(Vec<bool>, u64, u64),
}

#[derive(Clone, Debug)]
pub struct NetWin {
    pub start: u64,
    pub end: u64,
    pub fault: NetFault,
}

#[derive(Clone, Debug)]
pub enum NetMsg {
    Challenge {
        from: u32,
        nonce: u64,
    },
    Answer {
        from: u32,
        nonce: u64,
        claim: Claim,
        epoch: u32,
        /// As the wire carries it (3 bytes).
        no_permit_ms: u64,
        boot_id: BootId,
        inc: u64,
    },
}

pub struct Net {
    pub rng: Rng,
    /// `[network] interval_ms` of every agent.
    pub period_ms: u64,
    pub membership: Membership,
    /// Base one-way latency range (µs) and loss (per mille) outside fault windows.
    pub base_delay: (u64, u64),
    pub base_loss: u64,
    pub wins: Vec<NetWin>,
    pub next_nonce: u64,
    pub sent: u64,
    pub lost: u64,
    pub duplicated: u64,
}

impl Net {
    pub fn new(seed: u64, period_ms: u64, membership: Membership) -> Net {
        let mut rng = Rng::new(seed ^ 0x0005_eed0_fc4a_77e1);
        let base_loss = if rng.chance(300) { rng.range(1, 50) } else { 0 };
        let hi = rng.range(100, 3 * MS);
        Net {
            rng,
            period_ms,
            membership,
            base_delay: (50, hi),
            base_loss,
            wins: Vec::new(),
            next_nonce: 1,
            sent: 0,
            lost: 0,
            duplicated: 0,
        }
    }

    /// The arrival delays (µs) of one datagram from host index `a` to `b` sent at `t`: none
    /// if lost or cut off, two if duplicated.
    pub fn fate(&mut self, t: u64, a: usize, b: usize) -> Vec<u64> {
        self.sent += 1;
        let mut loss = self.base_loss;
        let mut extra = (0, 0);
        let mut dup = 0;
        for w in self.wins.iter().filter(|w| w.start <= t && t < w.end) {
            match &w.fault {
                NetFault::Partition(side) => {
                    if side.get(a) != side.get(b) {
                        self.lost += 1;
                        return Vec::new();
                    }
                }
                NetFault::Loss(pm) => loss = loss.max(*pm),
                NetFault::Delay(lo, hi) => extra = extra.max((*lo, *hi)),
                NetFault::DelayFor(hosts, lo, hi) => {
                    if hosts.get(a).copied().unwrap_or(false)
                        || hosts.get(b).copied().unwrap_or(false)
                    {
                        extra = extra.max((*lo, *hi));
                    }
                }
                NetFault::Dup(pm) => dup = dup.max(*pm),
            }
        }
        if self.rng.chance(loss) {
            self.lost += 1;
            return Vec::new();
        }
        let (lo, hi) = self.base_delay;
        let mut out = vec![self.rng.range(lo, hi) + self.rng.range(extra.0, extra.1)];
        if dup > 0 && self.rng.chance(dup) {
            out.push(self.rng.range(lo, hi) + self.rng.range(extra.0, extra.1));
            self.duplicated += 1;
        }
        out
    }
}
