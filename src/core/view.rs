//! What one I/O cycle saw on one volume, decoded (pure: bytes in, view out).

use super::format::{self, ClusterId, Decoded, Geometry, Heartbeat, Mailbox, BLOCK_SIZE};
use super::readplan::IdSet;

/// One heartbeat slot as an observer may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Never written.
    Empty,
    /// Torn, corrupt, foreign or of another cluster, or not read in this cycle
    /// (`core::readplan`): neither progress nor death (S5).
    NoNews,
    Record(Heartbeat),
}

/// Every heartbeat and mailbox of a volume, as read in one I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeView {
    /// Index `id - 1`.
    pub slots: Vec<Slot>,
    /// Valid mailboxes of this cluster, by host id.
    pub mailboxes: Vec<Mailbox>,
    /// Whose mailbox blocks were read (`None`: every one).
    pub mailboxes_read: Option<Box<IdSet>>,
    /// Heartbeat blocks read as no news (torn, corrupt, foreign): host id and a CRC-32 of the
    /// bytes read. Not a record, but a block whose bytes changed since the last read of its
    /// volume shows that a write landed (soak seed 19829); identical bytes show that none did.
    pub unreadable: Vec<(u32, u32)>,
    /// The VM lists the reader holds for the records of this view (`InventoryReader`).
    pub inventories: Vec<std::sync::Arc<format::Inventory>>,
    /// Records of an earlier read whose buffers the next decode reuses ([`VolumeView::recycle`]).
    spare: Vec<Heartbeat>,
}

impl VolumeView {
    pub fn slot(&self, id: u32) -> Option<&Slot> {
        self.slots.get((id as usize).wrapping_sub(1))
    }
    pub fn record(&self, id: u32) -> Option<&Heartbeat> {
        match self.slot(id) {
            Some(Slot::Record(hb)) => Some(hb),
            _ => None,
        }
    }
    pub fn mailbox(&self, id: u32) -> Option<&Mailbox> {
        self.mailboxes.iter().find(|m| m.host_id == id)
    }

    /// The view of a partial read before any block is decoded: every slot no news, no
    /// mailbox read.
    pub fn unread(geo: Geometry) -> VolumeView {
        VolumeView {
            slots: vec![Slot::NoNews; geo.max_hosts as usize],
            mailboxes: Vec::new(),
            mailboxes_read: Some(Box::default()),
            unreadable: Vec::new(),
            inventories: Vec::new(),
            spare: Vec::new(),
        }
    }

    /// Makes a view the core is done with [`VolumeView::unread`] again, keeping its buffers
    /// and its records' for the next decode: the I/O thread reads every cycle and should not
    /// allocate (issue 12).
    pub fn recycle(&mut self, geo: Geometry) {
        for slot in &mut self.slots {
            if let Slot::Record(r) = std::mem::replace(slot, Slot::NoNews) {
                self.spare.push(r);
            }
        }
        self.slots.resize(geo.max_hosts as usize, Slot::NoNews);
        self.mailboxes.clear();
        match self.mailboxes_read.as_mut() {
            Some(read) => **read = IdSet::default(),
            None => self.mailboxes_read = Some(Box::default()),
        }
        self.unreadable.clear();
        self.inventories.clear();
    }

    /// Decodes `raw`, the blocks from `first` on as one request read them, into the view
    /// (block 0, the header, is the I/O thread's to check).
    pub fn decode_blocks(&mut self, first: u64, raw: &[u8], geo: Geometry, cluster: &ClusterId) {
        let max = u64::from(geo.max_hosts);
        for (i, block) in raw.chunks_exact(BLOCK_SIZE).enumerate() {
            let b = first + i as u64;
            if (1..=max).contains(&b) {
                let id = b as u32;
                if let Some(slot) = self.slots.get_mut(id as usize - 1) {
                    *slot = heartbeat_slot(block, id, cluster, self.spare.pop());
                    if *slot == Slot::NoNews {
                        self.unreadable.push((id, crc32fast::hash(block)));
                    }
                }
            } else if b > max && b <= 2 * max {
                let id = (b - max) as u32;
                if let Some(read) = self.mailboxes_read.as_mut() {
                    read.insert(id);
                }
                if let Decoded::Mailbox(m) = format::decode(block) {
                    if &m.cluster == cluster && m.host_id == id {
                        self.mailboxes.push(m);
                    }
                }
            }
        }
    }
}

fn heartbeat_slot(block: &[u8], id: u32, cluster: &ClusterId, spare: Option<Heartbeat>) -> Slot {
    match format::decode_reusing(block, spare) {
        Decoded::Empty => Slot::Empty,
        Decoded::Heartbeat(hb) if &hb.cluster == cluster && hb.host_id == id => Slot::Record(hb),
        _ => Slot::NoNews,
    }
}

/// Decodes blocks `1..=2*max_hosts` of a volume (heartbeats then mailboxes).
pub fn decode_view(raw: &[u8], geo: Geometry, cluster: &ClusterId) -> VolumeView {
    let block = |index: u64| -> &[u8] {
        let start = (index as usize - 1) * BLOCK_SIZE;
        raw.get(start..start + BLOCK_SIZE).unwrap_or(&[])
    };
    let mut view = VolumeView {
        slots: Vec::with_capacity(geo.max_hosts as usize),
        mailboxes: Vec::new(),
        mailboxes_read: None,
        unreadable: Vec::new(),
        inventories: Vec::new(),
        spare: Vec::new(),
    };
    for id in 1..=geo.max_hosts {
        let raw = block(geo.heartbeat_block(id));
        let slot = heartbeat_slot(raw, id, cluster, None);
        if slot == Slot::NoNews {
            view.unreadable.push((id, crc32fast::hash(raw)));
        }
        view.slots.push(slot);
        if let Decoded::Mailbox(m) = format::decode(block(geo.mailbox_block(id))) {
            if &m.cluster == cluster && m.host_id == id {
                view.mailboxes.push(m);
            }
        }
    }
    view
}

/// Whether record `r` offers a verdict table: generation 0 carries none, and a table whose
/// verdict pages were not read (or did not match) is not offered — part of a table would look
/// like withdrawn verdicts.
pub fn carries_table(r: &Heartbeat) -> bool {
    r.verdict_gen > 0 && r.verdicts_in_pages == 0
}

/// At most this many records' verdict pages are read per volume and cycle: the holders of the
/// newest tables (every host republishes its table, so a second copy covers a torn one).
pub const PAGE_READS: usize = 2;

/// Whose verdict pages a reader needs, newest table first: records with a table in pages
/// that is newer than every complete table of the view, at most [`PAGE_READS`].
pub fn pages_wanted(view: &VolumeView) -> Vec<u32> {
    let mut tables: Vec<&Heartbeat> = view
        .slots
        .iter()
        .filter_map(|s| match s {
            Slot::Record(r) if r.verdict_gen > 0 => Some(r),
            _ => None,
        })
        .collect();
    tables.sort_by_key(|r| std::cmp::Reverse(table_order(r)));
    tables
        .iter()
        .take_while(|r| r.verdicts_in_pages > 0)
        .take(PAGE_READS)
        .map(|r| r.host_id)
        .collect()
}

/// Completes the tables of the records named by [`pages_wanted`] from their verdict pages
/// (`pages`: host id and the raw blocks `geo.page_block(id, 0..)` as read). A page that is
/// torn, missing or of another table (the host rewrote it meanwhile) leaves that record's
/// table incomplete, so it is not offered ([`carries_table`]); nothing else is guessed.
pub fn complete_tables(
    view: &mut VolumeView,
    geo: Geometry,
    cluster: &ClusterId,
    pages: &[(u32, &[u8])],
) {
    for &(id, raw) in pages {
        let Some(Slot::Record(r)) = view.slots.get_mut((id as usize).wrapping_sub(1)) else {
            continue;
        };
        let missing = r.verdicts_in_pages as usize;
        let needed = missing.div_ceil(format::PAGE_VERDICTS);
        if missing == 0 || needed as u64 > geo.pages_per_host() {
            continue;
        }
        let mut rest = Vec::with_capacity(missing);
        for index in 0..needed {
            let block = raw.get(index * BLOCK_SIZE..(index + 1) * BLOCK_SIZE).unwrap_or(&[]);
            match format::decode(block) {
                Decoded::VerdictPage(p) if &p.cluster == cluster && page_of_table(&p, r, index) => {
                    rest.extend(p.verdicts)
                }
                _ => break,
            }
        }
        if rest.len() == missing {
            r.verdicts.extend(rest);
            r.verdicts_in_pages = 0;
        }
    }
}

/// Whether `p` is page `index` of the table record `r` carries: written by the same host for
/// the same (generation, author). Anything else is another table's page, or none.
pub fn page_of_table(p: &format::VerdictPage, r: &Heartbeat, index: usize) -> bool {
    p.host_id == r.host_id
        && p.verdict_gen == r.verdict_gen
        && p.verdict_author == r.verdict_author
        && usize::from(p.index) == index
}

/// The cluster's verdicts as written on the volume: the newest table any block carries
/// (see [`table_order`]). Returns (its author, its verdicts).
pub fn cluster_verdicts(view: &VolumeView) -> (Option<u32>, Vec<super::format::Verdict>) {
    match newest_table_record(view, None) {
        Some(r) => (Some(r.verdict_author), r.verdicts.clone()),
        None => (None, Vec::new()),
    }
}

/// The record carrying the newest verdict table (generation 0 carries none), leaving out
/// host `except` (an agent does not adopt from its own block).
pub fn newest_table_record(view: &VolumeView, except: Option<u32>) -> Option<&Heartbeat> {
    view.slots
        .iter()
        .filter_map(|s| match s {
            Slot::Record(r) if carries_table(r) && Some(r.host_id) != except => Some(r),
            _ => None,
        })
        .max_by_key(|r| table_order(r))
}

/// The verdict that applies to host `id` now: only one about its current incarnation counts
/// (a new incarnation is a rejoin).
pub fn current_verdict(view: &VolumeView, id: u32) -> Option<super::format::Verdict> {
    let (_, verdicts) = cluster_verdicts(view);
    let incarnation = view.record(id).map(|r| r.incarnation)?;
    verdicts.into_iter().find(|v| v.host_id == id && v.incarnation == incarnation)
}

/// What a reader without a daemon (`check`, `status`, `fence`, `clear`) decides from: the
/// reads of a read quorum of volumes, merged. Built by [`merge_views`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergedView {
    /// Per host (index `id - 1`): the newest valid record on any volume; `NoNews` when some
    /// volume holds a block for it but none a valid record (torn for good is no news, S5);
    /// `Empty` when every read showed it empty.
    pub slots: Vec<Slot>,
    /// The verdict table: the record carrying the newest table on any volume
    /// ([`table_order`]). A lagging volume never wins over a newer one, and the table outlives
    /// a coordinator that stepped down or whose block is torn: every host republishes it.
    pub table: Option<Heartbeat>,
    /// The VM lists read, of any record of any volume ([`MergedView::inventory`] picks).
    pub inventories: Vec<std::sync::Arc<format::Inventory>>,
}

/// Whether record `a` is newer than `b` of the same host. Sequence numbers continue across
/// agent restarts (an incarnation starts from the sequence it read), so the higher sequence
/// is the later write; an equal sequence is the same write (or a tie a reader cannot order:
/// the first volume's is kept).
pub fn newer_record(a: &Heartbeat, b: &Heartbeat) -> bool {
    a.seq > b.seq
}

/// The order of verdict tables: generation, then the lower author. Only coordinators write
/// new generations; everyone else republishes the newest one it read, unchanged. Two runs of
/// one host id can write the same (generation, author) with other contents: a new run that
/// could not read its former run's last table (on one volume of three) takes over above what
/// it saw, which may be that very generation (verdicts5's 3-volume residual). Their lineages
/// tell them apart: the later tenure (a new run's starts above every generation of its host
/// id it saw), then the author's incarnation, so every reader and every "only a newer table"
/// rule settles on the same one; a table without a lineage comes first.
pub fn table_order(r: &Heartbeat) -> TableOrder {
    order_of(r.verdict_gen, r.verdict_author, r.lineage)
}

/// See [`table_order`].
pub type TableOrder = (u32, std::cmp::Reverse<u32>, u32, u64);

/// [`table_order`] of a table known by its parts.
pub fn order_of(gen: u32, author: u32, lineage: Option<format::Lineage>) -> TableOrder {
    let l = lineage.unwrap_or_default();
    (gen, std::cmp::Reverse(author), l.first_gen, l.author_incarnation)
}

/// Merges the views of several reads (of several volumes, and retries of one volume): per
/// host the newest record, and the newest verdict table of all of them. Pure.
pub fn merge_views(views: &[VolumeView]) -> MergedView {
    let hosts = views.iter().map(|v| v.slots.len()).max().unwrap_or(0);
    let mut slots = vec![Slot::Empty; hosts];
    let mut table: Option<&Heartbeat> = None;
    for view in views {
        for (i, slot) in view.slots.iter().enumerate() {
            let merged = &mut slots[i];
            match (slot, &*merged) {
                (Slot::Record(r), Slot::Record(m)) if !newer_record(r, m) => {}
                (Slot::Record(_), _) => *merged = slot.clone(),
                (Slot::NoNews, Slot::Empty) => *merged = Slot::NoNews,
                _ => {}
            }
            if let Slot::Record(r) = slot {
                if carries_table(r) && table.is_none_or(|t| table_order(r) > table_order(t)) {
                    table = Some(r);
                }
            }
        }
    }
    let mut inventories: Vec<std::sync::Arc<format::Inventory>> = Vec::new();
    for list in views.iter().flat_map(|v| &v.inventories) {
        if !inventories.iter().any(|l| {
            (l.host_id, l.incarnation, l.gen) == (list.host_id, list.incarnation, list.gen)
        }) {
            inventories.push(std::sync::Arc::clone(list));
        }
    }
    let mut table = table.cloned();
    if let Some(t) = table.as_mut() {
        let tables = views.iter().flat_map(|v| &v.slots).filter_map(|s| match s {
            Slot::Record(r) if carries_table(r) => Some(r),
            _ => None,
        });
        take_later_fenced(&mut t.verdicts, t.verdict_gen, tables);
    }
    MergedView { slots, table, inventories }
}

/// Replaces an entry of the picked table (generation `gen`) by a `fenced` entry about the same
/// incarnation that another table of that generation stamps later
/// ([`format::Verdict::changed_gen`]): two coordinators wrote the generation concurrently, and
/// the picked one's author had not seen that verdict, or its own entry would be that one or
/// stamped above it (every change is stamped with a generation above every table its
/// coordinator took in). Soak seed 1307730: a coordinator took over from an older table (10/2,
/// `fencing`) and wrote 12/1 while the other had written 12/2 with `fenced` (stamped 11); nobody
/// ran to merge them, and readers, preferring the lower author, showed DEAD. Only entries the
/// picked table holds about that very incarnation are replaced, never added: a missing one may
/// be a withdrawal (a `clear`), which stamps without tombstones cannot order; and only from
/// its own generation: an older table may be one its own chain withdrew from since. Unknown
/// stamps (0: an older writer, a local correction) replace nothing and are never replaced.
pub fn take_later_fenced<'a>(
    picked: &mut [format::Verdict],
    gen: u32,
    tables: impl Iterator<Item = &'a Heartbeat>,
) {
    use format::VerdictKind::Fenced;
    for r in tables.filter(|r| r.verdict_gen == gen) {
        for theirs in r.verdicts.iter().filter(|v| v.kind == Fenced && v.changed_gen != 0) {
            if let Some(ours) = picked.iter_mut().find(|o| {
                o.host_id == theirs.host_id
                    && o.incarnation == theirs.incarnation
                    && o.kind != Fenced
                    && o.changed_gen != 0
                    && o.changed_gen < theirs.changed_gen
            }) {
                *ours = *theirs;
            }
        }
    }
}

impl MergedView {
    /// The VM list host `id`'s newest record names, if it was read.
    pub fn inventory(&self, id: u32) -> Option<&format::Inventory> {
        let r = self.record(id)?;
        self.inventories
            .iter()
            .find(|l| l.host_id == id && l.incarnation == r.incarnation && l.gen == r.inventory.gen)
            .map(|l| &**l)
    }

    pub fn slot(&self, id: u32) -> Option<&Slot> {
        self.slots.get((id as usize).wrapping_sub(1))
    }
    pub fn record(&self, id: u32) -> Option<&Heartbeat> {
        match self.slot(id) {
            Some(Slot::Record(hb)) => Some(hb),
            _ => None,
        }
    }
    /// Every valid record, by host id.
    pub fn records(&self) -> impl Iterator<Item = &Heartbeat> {
        self.slots.iter().filter_map(|s| match s {
            Slot::Record(r) => Some(r),
            _ => None,
        })
    }
    /// The host acting as coordinator: the coordinator-flagged record with the newest table
    /// (none while a successor has not taken over).
    pub fn coordinator(&self) -> Option<u32> {
        self.records()
            .filter(|r| r.caps & format::caps::COORDINATOR != 0)
            .max_by_key(|r| table_order(r))
            .map(|r| r.host_id)
    }
    pub fn verdicts(&self) -> &[format::Verdict] {
        self.table.as_ref().map_or(&[], |t| &t.verdicts)
    }
    /// The verdict that applies to host `id` now: one about its newest record's incarnation
    /// (another incarnation has rejoined). When no volume holds a valid record of `id` but
    /// some hold a torn one, the verdict stands: a torn block is no news (S5), and a power-off
    /// can tear a host's last write for good.
    pub fn current_verdict(&self, id: u32) -> Option<format::Verdict> {
        let verdict = self.verdicts().iter().find(|v| v.host_id == id).copied()?;
        match self.slot(id)? {
            Slot::Record(r) => (r.incarnation == verdict.incarnation).then_some(verdict),
            Slot::NoNews => Some(verdict),
            Slot::Empty => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod merge_tests {
    use super::*;
    use crate::core::format::{caps, FenceMethodKind, HostState, Verdict, VerdictKind};

    pub(crate) fn hb(id: u32, incarnation: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            cluster: [7; 16],
            host_id: id,
            incarnation,
            seq,
            wall_ms: 0,
            mono_ms: 0,
            boot_id: [1; 16],
            state: HostState::Active,
            watchdog_timeout_s: 2,
            caps: 0,
            ack_nonce: 0,
            coordinator: 0,
            verdict_gen: 0,
            verdict_author: 0,
            name: format!("host{id}"),
            verdicts: vec![],
            verdicts_in_pages: 0,
            lineage: None,
            inventory: Default::default(),
        }
    }

    fn coordinator(id: u32, seq: u64, gen: u32, verdicts: Vec<Verdict>) -> Heartbeat {
        Heartbeat {
            caps: caps::COORDINATOR,
            verdict_gen: gen,
            verdict_author: id,
            verdicts,
            verdicts_in_pages: 0,
            lineage: None,
            inventory: Default::default(),
            ..hb(id, 100 + id as u64, seq)
        }
    }

    fn fenced(id: u32, incarnation: u64) -> Verdict {
        Verdict {
            host_id: id,
            kind: VerdictKind::Fenced,
            method: FenceMethodKind::Ipmi,
            incarnation,
            wall_ms: 0,
            seq: 0,
            changed_gen: 0,
        }
    }

    fn view(slots: Vec<Slot>) -> VolumeView {
        VolumeView { slots, ..VolumeView::default() }
    }

    #[test]
    fn newest_record_per_host_across_volumes() {
        let a = view(vec![Slot::Record(hb(1, 5, 10)), Slot::NoNews, Slot::Empty]);
        let b = view(vec![Slot::Record(hb(1, 6, 12)), Slot::Record(hb(2, 9, 3)), Slot::Empty]);
        let m = merge_views(&[a.clone(), b.clone()]);
        assert_eq!(m.record(1).map(|r| (r.incarnation, r.seq)), Some((6, 12)));
        assert_eq!(m.record(2).map(|r| r.seq), Some(3));
        assert_eq!(m.slot(3), Some(&Slot::Empty));
        // Order of the volumes does not matter.
        assert_eq!(merge_views(&[b, a.clone()]).record(1).map(|r| r.seq), Some(12));
        // Torn on one read, empty on another: no news, not "never written".
        let c = view(vec![Slot::Empty, Slot::Empty, Slot::NoNews]);
        assert_eq!(merge_views(&[c, a]).slot(3), Some(&Slot::NoNews));
    }

    #[test]
    fn verdict_table_is_the_highest_generation_on_any_volume() {
        let lagging =
            view(vec![Slot::Record(coordinator(1, 50, 8, vec![])), Slot::Record(hb(2, 22, 7))]);
        let newer = view(vec![
            Slot::Record(coordinator(1, 52, 10, vec![fenced(2, 22)])),
            Slot::Record(hb(2, 22, 7)),
        ]);
        let torn = view(vec![Slot::NoNews, Slot::Record(hb(2, 22, 7))]);
        for order in [
            vec![lagging.clone(), newer.clone(), torn.clone()],
            vec![torn.clone(), lagging.clone(), newer.clone()],
            vec![newer.clone(), lagging.clone()],
        ] {
            let m = merge_views(&order);
            assert_eq!(m.table.as_ref().map(|t| t.verdict_gen), Some(10));
            assert_eq!(m.current_verdict(2).map(|v| v.kind), Some(VerdictKind::Fenced));
        }
        // The coordinator's block unreadable in one read does not lose the table.
        assert_eq!(merge_views(&[torn, newer]).coordinator(), Some(1));
        // Equal generations: the lower host id wins.
        let tie = view(vec![
            Slot::Record(coordinator(1, 5, 4, vec![])),
            Slot::Record(coordinator(2, 5, 4, vec![fenced(3, 1)])),
        ]);
        assert_eq!(merge_views(&[tie]).coordinator(), Some(1));
    }

    /// Soak seed 1307730: 12/1 (written by a coordinator that took over from 10/2) and 12/2
    /// (with the `fenced` verdict reached at 11/2) with nobody left running to merge them.
    #[test]
    fn a_later_stamped_fenced_entry_of_a_concurrent_table_wins_over_an_older_entry() {
        let stamped = |kind, changed_gen| Verdict { kind, changed_gen, ..fenced(3, 33) };
        let merged = |picked: Vec<Verdict>, other_gen: u32, other: Vec<Verdict>| {
            let v = view(vec![
                Slot::Record(coordinator(1, 5, 12, picked)),
                Slot::Record(coordinator(2, 5, other_gen, other)),
                Slot::Record(hb(3, 33, 9)),
            ]);
            merge_views(&[v]).current_verdict(3).map(|v| v.kind)
        };
        let fenced_at_11 = vec![stamped(VerdictKind::Fenced, 11)];
        assert_eq!(
            merged(vec![stamped(VerdictKind::Fencing, 10)], 12, fenced_at_11.clone()),
            Some(VerdictKind::Fenced),
            "the picked table's author never saw the verdict"
        );
        // Its author changed the entry after (re-suspected it after a withdrawal).
        assert_eq!(
            merged(vec![stamped(VerdictKind::Fencing, 12)], 12, fenced_at_11.clone()),
            Some(VerdictKind::Fencing)
        );
        // Unknown stamps (an older writer) order nothing.
        assert_eq!(
            merged(vec![stamped(VerdictKind::Fencing, 0)], 12, fenced_at_11.clone()),
            Some(VerdictKind::Fencing)
        );
        assert_eq!(
            merged(
                vec![stamped(VerdictKind::Fencing, 10)],
                12,
                vec![stamped(VerdictKind::Fenced, 0)]
            ),
            Some(VerdictKind::Fencing)
        );
        // No entry in the picked table may be a withdrawal (a `clear`): nothing is added.
        assert_eq!(merged(vec![], 12, fenced_at_11.clone()), None);
        // A table of an older generation may be one the picked table's chain withdrew from.
        assert_eq!(
            merged(vec![stamped(VerdictKind::Fencing, 10)], 11, fenced_at_11),
            Some(VerdictKind::Fencing)
        );
    }

    #[test]
    fn the_table_outlives_a_coordinator_that_stepped_down() {
        // Host 1 wrote generation 6 with a fenced verdict, then stepped down (no flag), and
        // an older coordinator block (host 3, generation 2) is still on the volume: the
        // replicas of generation 6 win, whoever carries them.
        let stepped_down = Heartbeat { caps: 0, ..coordinator(1, 60, 6, vec![fenced(2, 22)]) };
        let mirror = Heartbeat { verdict_author: 1, ..hb(4, 40, 30) };
        let mirror = Heartbeat { verdict_gen: 6, verdicts: vec![fenced(2, 22)], ..mirror };
        let old = coordinator(3, 10, 2, vec![]);
        for slots in [
            vec![Slot::Record(stepped_down.clone()), Slot::NoNews, Slot::Record(old.clone())],
            vec![Slot::NoNews, Slot::NoNews, Slot::Record(old.clone()), Slot::Record(mirror)],
        ] {
            let m = merge_views(&[view(slots)]);
            assert_eq!(m.table.as_ref().map(|t| (t.verdict_gen, t.verdict_author)), Some((6, 1)));
            assert_eq!(m.current_verdict(2).map(|v| v.kind), Some(VerdictKind::Fenced));
            // Nobody acts as coordinator but the old block's writer.
            assert_eq!(m.coordinator(), Some(3));
        }
    }

    #[test]
    fn a_verdict_applies_to_its_incarnation_and_survives_a_block_torn_for_good() {
        let table = Slot::Record(coordinator(1, 9, 3, vec![fenced(2, 22)]));
        // Fenced host's block torn on every volume: the verdict stands.
        let m = merge_views(&[view(vec![table.clone(), Slot::NoNews])]);
        assert_eq!(m.current_verdict(2).map(|v| v.kind), Some(VerdictKind::Fenced));
        // A new incarnation on any volume has rejoined: the verdict no longer applies.
        let m = merge_views(&[
            view(vec![table.clone(), Slot::Record(hb(2, 22, 7))]),
            view(vec![table.clone(), Slot::Record(hb(2, 33, 9))]),
        ]);
        assert_eq!(m.current_verdict(2), None);
        // A never-written block has no verdict.
        assert_eq!(merge_views(&[view(vec![table, Slot::Empty])]).current_verdict(2), None);
        assert_eq!(merge_views(&[]).current_verdict(2), None);
    }
}

#[cfg(test)]
mod page_tests {
    use super::*;
    use crate::core::format::{encode_heartbeat, encode_verdict_pages, FenceMethodKind};
    use crate::core::format::{Verdict, VerdictKind};

    const GEO: Geometry = Geometry { max_hosts: 255 };
    const CLUSTER: ClusterId = [7; 16];

    fn table(id: u32, gen: u32, author: u32, n: u32) -> Heartbeat {
        let verdicts = (0..n)
            .map(|i| Verdict {
                host_id: i + 2,
                kind: VerdictKind::Fenced,
                method: FenceMethodKind::Watchdog,
                incarnation: 7,
                wall_ms: 0,
                seq: 3,
                changed_gen: 0,
            })
            .collect();
        Heartbeat {
            coordinator: 1,
            verdict_gen: gen,
            verdict_author: author,
            verdicts,
            ..super::merge_tests::hb(id, 100 + u64::from(id), 9)
        }
    }

    /// Blocks 1.. of a volume holding `records` (heartbeats and their pages).
    fn volume(records: &[Heartbeat]) -> Vec<u8> {
        let mut raw = vec![0u8; (GEO.total_blocks() as usize - 1) * BLOCK_SIZE];
        let mut put = |block: u64, data: &[u8]| {
            let at = (block as usize - 1) * BLOCK_SIZE;
            raw[at..at + BLOCK_SIZE].copy_from_slice(data);
        };
        for r in records {
            put(GEO.heartbeat_block(r.host_id), &encode_heartbeat(r).unwrap());
            for (i, page) in encode_verdict_pages(r).iter().enumerate() {
                put(GEO.page_block(r.host_id, i as u64), page);
            }
        }
        raw
    }

    /// What the daemon's I/O thread does: the main read, then the wanted pages.
    fn read(raw: &[u8]) -> VolumeView {
        let main = 2 * GEO.max_hosts as usize * BLOCK_SIZE;
        let mut view = decode_view(&raw[..main], GEO, &CLUSTER);
        let len = GEO.pages_per_host() as usize * BLOCK_SIZE;
        for id in pages_wanted(&view) {
            let at = (GEO.page_block(id, 0) as usize - 1) * BLOCK_SIZE;
            complete_tables(&mut view, GEO, &CLUSTER, &[(id, &raw[at..at + len])]);
        }
        view
    }

    fn tear_page(raw: &mut [u8], id: u32, page: u64) {
        let at = (GEO.page_block(id, page) as usize - 1) * BLOCK_SIZE;
        raw[at + 100] ^= 0xff;
    }

    /// Issue 10 item 9: 254 verdicts (every other host of a 255-host volume) are read back
    /// whole; a table whose pages are torn or of another generation is never offered in part.
    #[test]
    fn a_table_in_pages_is_read_whole_or_not_at_all() {
        let newest = table(1, 5, 1, 254);
        let copy = table(2, 5, 1, 254);
        let older = table(3, 4, 1, 20);
        let raw = volume(&[newest.clone(), copy, older]);
        assert_eq!(cluster_verdicts(&read(&raw)), (Some(1), newest.verdicts.clone()));

        // The author's page torn: the copy another host republishes is read instead.
        let mut torn = raw.clone();
        tear_page(&mut torn, 1, 1);
        assert_eq!(cluster_verdicts(&read(&torn)).1.len(), 254);

        // Both copies torn: the newest complete table (older, inline) — not 122 of 254, which
        // would look like 132 withdrawn verdicts.
        tear_page(&mut torn, 2, 0);
        let view = read(&torn);
        assert_eq!(cluster_verdicts(&view).1.len(), 20);
        assert!(!carries_table(view.record(1).unwrap()));

        // Pages of a newer table the host wrote after the heartbeat was read do not complete
        // the older heartbeat's table.
        let mut mixed = volume(&[table(1, 5, 1, 254), table(3, 4, 1, 20)]);
        let rewritten = table(1, 6, 1, 254);
        for (i, page) in encode_verdict_pages(&rewritten).iter().enumerate() {
            let at = (GEO.page_block(1, i as u64) as usize - 1) * BLOCK_SIZE;
            mixed[at..at + BLOCK_SIZE].copy_from_slice(page);
        }
        assert_eq!(cluster_verdicts(&read(&mixed)).1.len(), 20);
        // A reader that does not read pages at all never sees the partial table either.
        let main = 2 * GEO.max_hosts as usize * BLOCK_SIZE;
        assert_eq!(cluster_verdicts(&decode_view(&raw[..main], GEO, &CLUSTER)).1.len(), 20);
        assert_eq!(pages_wanted(&decode_view(&raw[..main], GEO, &CLUSTER)), vec![1, 2]);
    }
}

#[cfg(test)]
mod reuse_tests {
    use super::*;
    use crate::core::format::{encode_heartbeat, encode_mailbox, Command, Mailbox, Verdict};
    use crate::core::format::{FenceMethodKind, VerdictKind};

    const GEO: Geometry = Geometry { max_hosts: 8 };
    const CLUSTER: ClusterId = [7; 16];

    /// Blocks 1..=16 with records of hosts 1 and 3 (host 3 with a table), a torn block 5 and a
    /// message in mailbox 2.
    fn blocks(name_of_1: &str) -> Vec<u8> {
        let mut raw = vec![0u8; 2 * GEO.max_hosts as usize * BLOCK_SIZE];
        let mut put = |block: u64, bytes: &[u8]| {
            let at = (block as usize - 1) * BLOCK_SIZE;
            raw[at..at + BLOCK_SIZE].copy_from_slice(bytes);
        };
        let one = Heartbeat { name: name_of_1.into(), ..super::merge_tests::hb(1, 11, 4) };
        put(GEO.heartbeat_block(1), &encode_heartbeat(&one).unwrap());
        let verdict = Verdict {
            host_id: 6,
            kind: VerdictKind::Fenced,
            method: FenceMethodKind::Ipmi,
            incarnation: 2,
            wall_ms: 0,
            seq: 1,
            changed_gen: 0,
        };
        let three = Heartbeat {
            verdict_gen: 1,
            verdict_author: 3,
            verdicts: vec![verdict],
            ..super::merge_tests::hb(3, 13, 9)
        };
        put(GEO.heartbeat_block(3), &encode_heartbeat(&three).unwrap());
        put(GEO.heartbeat_block(5), &[0xA5; BLOCK_SIZE]);
        let m = Mailbox {
            cluster: CLUSTER,
            host_id: 2,
            nonce: 5,
            command: Command::Test,
            sender: 1,
            wall_ms: 1,
            target_incarnation: 0,
            sender_name: "op".into(),
            seen_verdict_gen: None,
        };
        put(GEO.mailbox_block(2), &encode_mailbox(&m));
        raw
    }

    fn read(view: &mut VolumeView, raw: &[u8]) {
        view.decode_blocks(1, raw, GEO, &CLUSTER);
    }

    /// A recycled view decodes exactly what a fresh one does: nothing of the earlier read
    /// (records, names, tables, mailboxes, torn blocks, the mailboxes read) survives.
    #[test]
    fn a_recycled_view_decodes_like_a_fresh_one() {
        let mut fresh = VolumeView::unread(GEO);
        read(&mut fresh, &blocks("kvm01"));
        let mut reused = VolumeView::unread(GEO);
        read(&mut reused, &blocks("a-much-longer-name-than-the-next-read-has"));
        reused.recycle(GEO);
        assert_eq!(reused.slots, VolumeView::unread(GEO).slots, "recycle leaves slots read");
        assert_eq!(reused.mailboxes_read, Some(Box::default()));
        read(&mut reused, &blocks("kvm01"));
        assert_eq!(reused.slots, fresh.slots);
        assert_eq!(reused.mailboxes, fresh.mailboxes);
        assert_eq!(reused.mailboxes_read, fresh.mailboxes_read);
        assert_eq!(reused.unreadable, fresh.unreadable);
        assert_eq!(reused.record(1).map(|r| r.name.as_str()), Some("kvm01"));
        assert_eq!(reused.record(3).map(|r| r.verdicts.len()), Some(1));
        // A partial read of a recycled view: what is not read is no news, not the old record.
        reused.recycle(GEO);
        let raw = blocks("kvm01");
        reused.decode_blocks(3, &raw[2 * BLOCK_SIZE..3 * BLOCK_SIZE], GEO, &CLUSTER);
        assert_eq!(reused.slot(1), Some(&Slot::NoNews));
        assert!(reused.record(3).is_some() && reused.mailboxes.is_empty());
    }
}
