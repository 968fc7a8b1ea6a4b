//! Which blocks an I/O cycle reads (pure): the header, the own mailbox and the heartbeats of
//! the hosts that exist every cycle, plus a rotating window of the other heartbeat slots so a
//! host joining with any id is seen within [`JOIN_CYCLES`] cycles; the coordinator also reads
//! the mailboxes of the peers it has business with (operator `clear` / `confirm-off` about a
//! suspect or fenced host are addressed to it: `Agent::peer_mailboxes`). With an explicit membership (format 3 header) the members take the place of the hosts
//! that exist and there is no scan: nobody else may join. A slot not read is no news (S5): the
//! core neither counts it as progress nor as death.

use super::format::{Geometry, Heartbeat, BLOCK_SIZE};
use super::view::Slot;

/// Host ids 0..2048 (max_hosts is at most 2000): a fixed-size set, so planning allocates
/// nothing.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct IdSet {
    words: [u64; 32],
}

impl std::fmt::Debug for IdSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl IdSet {
    pub fn insert(&mut self, id: u32) {
        if let Some(w) = self.words.get_mut(id as usize / 64) {
            *w |= 1 << (id % 64);
        }
    }
    pub fn contains(&self, id: u32) -> bool {
        self.words.get(id as usize / 64).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    pub fn union_with(&mut self, other: &IdSet) {
        for (a, b) in self.words.iter_mut().zip(other.words.iter()) {
            *a |= b;
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.words.len() as u32 * 64).filter(|&id| self.contains(id))
    }
}

/// A host with an id nobody knows yet is read within this many cycles: every cycle reads
/// `ceil(unknown slots / JOIN_CYCLES)` of the slots not known to exist, in rotation.
pub const JOIN_CYCLES: u32 = 32;

/// Two wanted runs of blocks closer than this are read as one request (the gap included):
/// a request costs about as much as 20 blocks of transfer on a block device (BENCHMARKS.md
/// §1: 4000 one-block reads 265 ms, one 4000-block read 12.8 ms), a few gap blocks cost less.
pub const MERGE_GAP: u64 = 3;

/// At most this many blocks per read request: the I/O buffer (locked in memory under
/// mlockall) stays at 256 KiB whatever the volume's size.
pub const CHUNK_BLOCKS: u64 = 64;

/// What one cycle reads.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// (first block, number of blocks), ascending, none longer than [`CHUNK_BLOCKS`].
    pub runs: Vec<(u64, u64)>,
    /// Hosts whose heartbeat block is read.
    pub heartbeats: IdSet,
    /// Hosts whose mailbox block is read.
    pub mailboxes: IdSet,
    /// Every heartbeat and mailbox block is read.
    pub full: bool,
}

impl Plan {
    pub fn blocks(&self) -> u64 {
        self.runs.iter().map(|r| r.1).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.blocks() * BLOCK_SIZE as u64
    }
}

/// The state behind the plans of one volume: which hosts exist, where the scan is.
#[derive(Clone, Debug)]
pub struct ReadPlanner {
    geo: Geometry,
    own: u32,
    /// Hosts known to exist (their slot was ever not empty, they are configured, or a record
    /// names them): read every cycle.
    known: IdSet,
    /// The next slot the rotating scan looks at.
    cursor: u32,
    /// Read everything every cycle (the behaviour before issue 12; a benchmark baseline).
    read_all: bool,
    /// The next plan reads everything (the first cycle: it finds the hosts that exist).
    full_next: bool,
    /// The explicit membership (None: open, any id may join).
    members: Option<IdSet>,
    plan: Plan,
}

impl ReadPlanner {
    /// `configured`: the peers of the configuration (read from the first cycle on, so a
    /// configured peer is never missed).
    pub fn new(geo: Geometry, own: u32, configured: &[u32], read_all: bool) -> ReadPlanner {
        let mut known = IdSet::default();
        for &id in configured.iter().chain([own].iter()) {
            if geo.contains_host(id) {
                known.insert(id);
            }
        }
        ReadPlanner {
            geo,
            own,
            known,
            cursor: 1,
            read_all,
            full_next: true,
            members: None,
            plan: Plan::default(),
        }
    }

    /// The membership the next plans follow: `Some`: only these hosts (and this one) are read,
    /// with no scan and no full first read (the members republish the verdict table, and
    /// nobody else may write); `None`: open.
    pub fn set_members(&mut self, members: Option<IdSet>) {
        self.members = members;
    }

    /// The plan [`ReadPlanner::next`] made last.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    pub fn known(&self) -> &IdSet {
        &self.known
    }

    /// The blocks of the next cycle. `peer_mailboxes`: the peers' mailboxes to read besides
    /// the own one (the coordinator's business, `Agent::peer_mailboxes`).
    pub fn next(&mut self, peer_mailboxes: &IdSet) -> &Plan {
        let max = self.geo.max_hosts;
        let plan = &mut self.plan;
        plan.runs.clear();
        plan.heartbeats = IdSet::default();
        plan.mailboxes = IdSet::default();
        // With a list the first cycle reads the members only; a later switch to open
        // membership starts with the full read that finds the hosts that exist.
        plan.full =
            self.read_all || (self.members.is_none() && std::mem::take(&mut self.full_next));
        if plan.full {
            for id in 1..=max {
                plan.heartbeats.insert(id);
                plan.mailboxes.insert(id);
            }
            push_block_range(&mut plan.runs, 0, 1 + 2 * u64::from(max));
            return &self.plan;
        }
        let mut scanned = IdSet::default();
        if let Some(members) = self.members {
            plan.heartbeats = members;
            plan.heartbeats.insert(self.own);
            plan.mailboxes = *peer_mailboxes;
            plan.mailboxes.insert(self.own);
            self.plan_runs();
            return &self.plan;
        }
        let unknown = max - (self.known.len() as u32).min(max);
        let mut scan = unknown.div_ceil(JOIN_CYCLES);
        let mut id = self.cursor;
        let mut looked = 0;
        while scan > 0 && looked < max {
            if id > max {
                id = 1;
            }
            if !self.known.contains(id) {
                scanned.insert(id);
                scan -= 1;
            }
            id += 1;
            looked += 1;
        }
        self.cursor = if id > max { 1 } else { id };
        plan.heartbeats = self.known;
        plan.heartbeats.union_with(&scanned);
        plan.mailboxes = *peer_mailboxes;
        plan.mailboxes.insert(self.own);
        self.plan_runs();
        &self.plan
    }

    /// The runs that read block 0 and the planned heartbeats and mailboxes.
    fn plan_runs(&mut self) {
        let max = self.geo.max_hosts;
        let plan = &mut self.plan;
        let mut wanted = std::iter::once(0)
            .chain(
                (1..=max)
                    .filter(|&i| plan.heartbeats.contains(i))
                    .map(|i| self.geo.heartbeat_block(i)),
            )
            .chain(
                (1..=max)
                    .filter(|&i| plan.mailboxes.contains(i))
                    .map(|i| self.geo.mailbox_block(i)),
            );
        let mut run = wanted.next().map(|b| (b, b + 1));
        for b in wanted {
            match &mut run {
                Some((_, end)) if b <= *end + MERGE_GAP => *end = b + 1,
                _ => {
                    if let Some((s, e)) = run {
                        push_block_range(&mut plan.runs, s, e);
                    }
                    run = Some((b, b + 1));
                }
            }
        }
        if let Some((s, e)) = run {
            push_block_range(&mut plan.runs, s, e);
        }
        // Blocks of a merged gap are read too: they count as read.
        for &(first, n) in &plan.runs {
            for b in first..first + n {
                if (1..=u64::from(max)).contains(&b) {
                    plan.heartbeats.insert(b as u32);
                } else if b > u64::from(max) && b <= 2 * u64::from(max) {
                    plan.mailboxes.insert((b - u64::from(max)) as u32);
                }
            }
        }
    }

    /// Learns from a read: a slot that is not empty is a host that exists (a torn block too:
    /// someone writes it), and so is every host a record names as coordinator or as author
    /// of its verdict table (a host that learnt of a newcomer tells the others this way).
    pub fn learn(&mut self, slots: &[Slot], read: &IdSet) {
        for (i, slot) in slots.iter().enumerate() {
            let id = i as u32 + 1;
            if !read.contains(id) {
                continue;
            }
            match slot {
                Slot::Empty => {}
                Slot::NoNews => self.known.insert(id),
                Slot::Record(r) => {
                    self.known.insert(id);
                    self.learn_named(r);
                }
            }
        }
    }

    fn learn_named(&mut self, r: &Heartbeat) {
        for id in [r.coordinator, r.verdict_author] {
            if id != 0 && self.geo.contains_host(id) {
                self.known.insert(id);
            }
        }
    }
}

/// Appends blocks `start..end` as runs of at most [`CHUNK_BLOCKS`].
fn push_block_range(runs: &mut Vec<(u64, u64)>, start: u64, end: u64) {
    let mut s = start;
    while s < end {
        let n = CHUNK_BLOCKS.min(end - s);
        runs.push((s, n));
        s += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::view::merge_tests::hb;

    const GEO: Geometry = Geometry { max_hosts: 255 };
    const NONE: IdSet = IdSet { words: [0; 32] };

    fn ids(list: &[u32]) -> IdSet {
        let mut s = IdSet::default();
        list.iter().for_each(|&id| s.insert(id));
        s
    }

    fn slots_with(ids: &[u32]) -> Vec<Slot> {
        (1..=GEO.max_hosts)
            .map(|id| if ids.contains(&id) { Slot::Record(hb(id, 9, 1)) } else { Slot::Empty })
            .collect()
    }

    fn all_read() -> IdSet {
        let mut s = IdSet::default();
        (1..=GEO.max_hosts).for_each(|id| s.insert(id));
        s
    }

    #[test]
    fn the_first_cycle_reads_everything_then_only_what_exists() {
        let mut p = ReadPlanner::new(GEO, 1, &[2, 3], false);
        let first = p.next(&NONE).clone();
        assert!(first.full);
        assert_eq!(first.blocks(), 1 + 2 * 255);
        p.learn(&slots_with(&[1, 2, 3]), &first.heartbeats);
        let plan = p.next(&NONE).clone();
        // Header + heartbeats 1..=3 in one request, the scan window (8 unknown slots merged
        // with it), the own mailbox.
        assert!(!plan.full);
        assert_eq!(plan.blocks(), 1 + 3 + 8 + 1, "{plan:?}");
        assert!(plan.bytes() <= 4096 * (3 + 2 + u64::from(252u32.div_ceil(JOIN_CYCLES))));
        assert!(plan.mailboxes.contains(1) && !plan.mailboxes.contains(2));
        // The coordinator reads the mailboxes of the peers it has business with too.
        let coord = p.next(&ids(&[3])).clone();
        assert!(coord.mailboxes.contains(1) && coord.mailboxes.contains(3));
        // Mailbox 2 lies in the gap merged into the request: read, one block more.
        assert_eq!(coord.blocks(), 1 + 3 + 8 + 3);
        assert_eq!(p.next(&ids(&[250])).blocks(), 1 + 3 + 8 + 2);
    }

    #[test]
    fn a_host_joining_with_any_id_is_read_within_join_cycles() {
        for joiner in [4, 128, 250, 255] {
            let mut p = ReadPlanner::new(GEO, 1, &[2, 3], false);
            let first = p.next(&NONE).clone();
            p.learn(&slots_with(&[1, 2, 3]), &first.heartbeats);
            // Wherever the cursor stands, the joiner's slot comes within JOIN_CYCLES cycles.
            for _ in 0..17 {
                p.next(&NONE);
            }
            let mut cycles = 0;
            loop {
                cycles += 1;
                assert!(cycles <= JOIN_CYCLES, "host {joiner} not read within {JOIN_CYCLES}");
                let plan = p.next(&NONE).clone();
                if plan.heartbeats.contains(joiner) {
                    p.learn(&slots_with(&[1, 2, 3, joiner]), &plan.heartbeats);
                    break;
                }
            }
            // From then on it is read every cycle.
            for _ in 0..40 {
                assert!(p.next(&NONE).heartbeats.contains(joiner));
            }
        }
    }

    #[test]
    fn configured_peers_and_named_hosts_are_read_every_cycle() {
        let mut p = ReadPlanner::new(GEO, 5, &[200], false);
        let first = p.next(&NONE).clone();
        let mut slots = slots_with(&[5]);
        // Host 5's record names host 77 as its coordinator: read from now on.
        if let Slot::Record(r) = &mut slots[4] {
            r.coordinator = 77;
        }
        p.learn(&slots, &first.heartbeats);
        for _ in 0..40 {
            let plan = p.next(&NONE);
            assert!(plan.heartbeats.contains(200) && plan.heartbeats.contains(77));
            assert!(plan.heartbeats.contains(5) && plan.mailboxes.contains(5));
            assert!(plan.runs.iter().all(|r| r.1 <= CHUNK_BLOCKS));
        }
        // Slots not read teach nothing: a torn (no news) slot outside the read stays unknown.
        let mut p = ReadPlanner::new(GEO, 1, &[], false);
        let mut read = IdSet::default();
        read.insert(1);
        let mut slots = slots_with(&[1]);
        slots[9] = Slot::NoNews;
        p.learn(&slots, &read);
        assert!(!p.known().contains(10));
        p.learn(&slots, &all_read());
        assert!(p.known().contains(10), "a torn slot is a host that exists");
    }

    #[test]
    fn the_baseline_knob_reads_everything_every_cycle() {
        let mut p = ReadPlanner::new(GEO, 1, &[], true);
        for _ in 0..3 {
            assert_eq!(p.next(&NONE).blocks(), 1 + 2 * 255);
        }
    }

    #[test]
    fn an_explicit_membership_reads_the_members_and_nothing_else() {
        let mut members = IdSet::default();
        [1, 2, 3].iter().for_each(|&id| members.insert(id));
        let mut p = ReadPlanner::new(GEO, 2, &[200], false);
        p.set_members(Some(members));
        // From the first cycle on: header, heartbeats 1..=3 (one request), the own mailbox.
        for _ in 0..40 {
            let plan = p.next(&NONE).clone();
            assert!(!plan.full);
            assert_eq!(plan.runs, vec![(0, 4), (GEO.mailbox_block(2), 1)]);
            assert_eq!(plan.bytes(), 4096 * (3 + 2));
            assert!(!plan.heartbeats.contains(200), "a configured non-member is not read");
            p.learn(&slots_with(&[1, 2, 3, 77]), &all_read());
        }
        // A coordinator without business reads what every host reads; with a suspect peer,
        // that peer's mailbox too.
        assert_eq!(p.next(&NONE).bytes(), 4096 * (3 + 2));
        let coord = p.next(&ids(&[3])).clone();
        assert!(coord.mailboxes.contains(3) && !coord.mailboxes.contains(1));
        assert_eq!(coord.blocks(), 4 + 2);
        // A member far away is one more request; the own id is read even if not listed.
        members.insert(250);
        p.set_members(Some(members));
        assert_eq!(p.next(&NONE).blocks(), 3 + 2 + 1);
        let mut p = ReadPlanner::new(GEO, 9, &[], false);
        p.set_members(Some(members));
        let plan = p.next(&NONE);
        assert!(plan.heartbeats.contains(9) && plan.mailboxes.contains(9));
        // Back to open: the full read that finds the hosts that exist, then the scan.
        p.set_members(None);
        assert!(p.next(&NONE).full);
        assert!(!p.next(&NONE).full);
    }

    #[test]
    fn a_large_cluster_reads_few_requests() {
        let ids: Vec<u32> = (1..=250).collect();
        let mut p = ReadPlanner::new(GEO, 7, &[], false);
        let first = p.next(&NONE).clone();
        p.learn(&slots_with(&ids), &first.heartbeats);
        let plan = p.next(&NONE).clone();
        // Header and 250 heartbeats, one scanned slot (251), the own mailbox: 4 requests of
        // at most 64 blocks and one of 1.
        assert_eq!(plan.blocks(), 1 + 250 + 1 + 1, "{plan:?}");
        assert_eq!(plan.runs.len(), 5);
    }
}
