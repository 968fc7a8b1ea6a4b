//! What one I/O cycle saw on one volume, decoded (pure: bytes in, view out).

use super::format::{self, ClusterId, Decoded, Geometry, Heartbeat, Mailbox, BLOCK_SIZE};

/// One heartbeat slot as an observer may use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Never written.
    Empty,
    /// Torn, corrupt, foreign or of another cluster: neither progress nor death (S5).
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
}

/// Decodes blocks `1..=2*max_hosts` of a volume (heartbeats then mailboxes).
pub fn decode_view(raw: &[u8], geo: Geometry, cluster: &ClusterId) -> VolumeView {
    let block = |index: u64| -> &[u8] {
        let start = (index as usize - 1) * BLOCK_SIZE;
        raw.get(start..start + BLOCK_SIZE).unwrap_or(&[])
    };
    let mut view =
        VolumeView { slots: Vec::with_capacity(geo.max_hosts as usize), mailboxes: Vec::new() };
    for id in 1..=geo.max_hosts {
        let slot = match format::decode(block(geo.heartbeat_block(id))) {
            Decoded::Empty => Slot::Empty,
            Decoded::Heartbeat(hb) if &hb.cluster == cluster && hb.host_id == id => {
                Slot::Record(hb)
            }
            _ => Slot::NoNews,
        };
        view.slots.push(slot);
        if let Decoded::Mailbox(m) = format::decode(block(geo.mailbox_block(id))) {
            if &m.cluster == cluster && m.host_id == id {
                view.mailboxes.push(m);
            }
        }
    }
    view
}

/// The cluster's verdicts as written on the volume: the table of the coordinator block with
/// the highest generation (ties: lowest id). Returns (that coordinator, its verdicts).
pub fn cluster_verdicts(view: &VolumeView) -> (Option<u32>, Vec<super::format::Verdict>) {
    match newest_coordinator_record(view, None) {
        Some(r) => (Some(r.host_id), r.verdicts.clone()),
        None => (None, Vec::new()),
    }
}

/// The coordinator-flagged record with the highest verdict generation (ties: lowest id),
/// leaving out host `except` (an agent does not inherit from its own block).
pub fn newest_coordinator_record(view: &VolumeView, except: Option<u32>) -> Option<&Heartbeat> {
    view.slots
        .iter()
        .filter_map(|s| match s {
            Slot::Record(r)
                if r.caps & super::format::caps::COORDINATOR != 0 && Some(r.host_id) != except =>
            {
                Some(r)
            }
            _ => None,
        })
        .max_by_key(|r| (r.verdict_gen, std::cmp::Reverse(r.host_id)))
}

/// The verdict that applies to host `id` now: only one about its current incarnation counts
/// (a new incarnation is a rejoin).
pub fn current_verdict(view: &VolumeView, id: u32) -> Option<super::format::Verdict> {
    let (_, verdicts) = cluster_verdicts(view);
    let incarnation = view.record(id).map(|r| r.incarnation)?;
    verdicts.into_iter().find(|v| v.host_id == id && v.incarnation == incarnation)
}
